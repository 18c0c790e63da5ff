//! The one place leaderboard places become protobuf: ids stay inside, display names go out.

use std::collections::HashMap;
use std::sync::Arc;

use duovarsity_proto::analytics::{Leaderboard, LeaderboardEntry};

use crate::leaderboards::{Board, Place};

fn entry(place: &Place, names: &HashMap<String, Arc<str>>, me: &str) -> LeaderboardEntry {
    LeaderboardEntry {
        rank: place.rank,
        display_name: names
            .get(&place.learner)
            .map(|name| name.to_string())
            .unwrap_or_default(),
        xp: place.xp,
        you: place.learner == me,
    }
}

pub fn leaderboard(
    scope: &str,
    week: &str,
    board: &Board,
    names: &HashMap<String, Arc<str>>,
    me: &str,
) -> Leaderboard {
    Leaderboard {
        scope: scope.to_string(),
        week: week.to_string(),
        entries: board.top.iter().map(|p| entry(p, names, me)).collect(),
        me: board.me.as_ref().map(|p| entry(p, names, me)),
        neighbours: board
            .neighbours
            .iter()
            .map(|p| entry(p, names, me))
            .collect(),
        learners: board.learners,
    }
}
