//! The leaderboard API: which board a caller may read, and the board with display names.
//! The global board is every learner's; a course's board is for its enrolled learners, its
//! instructor and admins (a board names who takes a course).

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::time::now_millis;
use duovarsity_proto::analytics::Leaderboard;

use crate::Analytics;
use crate::convert::leaderboard;
use crate::leaderboards::GLOBAL;
use crate::store::{dashboards, learners};
use crate::xp;

/// Entries when the request does not say.
const DEFAULT_LIMIT: i32 = 50;

/// The board's week: the one asked for (a valid ISO week), or the current one.
fn week(asked: &str) -> Result<String, Error> {
    if asked.is_empty() {
        return Ok(xp::week_of(now_millis()));
    }
    xp::week_start(asked)
        .map(xp::iso_week)
        .filter(|week| week == asked)
        .ok_or_else(|| Error::invalid("week", format!("{asked:?} is not an ISO week (YYYY-Www)")))
}

impl Analytics {
    pub async fn global_board(
        &self,
        claims: &Claims,
        asked_week: &str,
        limit: i32,
    ) -> Result<Leaderboard, Error> {
        self.board(claims, GLOBAL, asked_week, limit).await
    }

    pub async fn course_board(
        &self,
        claims: &Claims,
        course_id: &str,
        asked_week: &str,
        limit: i32,
    ) -> Result<Leaderboard, Error> {
        // The course id is a UUID (a field rule of the request).
        if !claims.is_admin() {
            let instructs = dashboards::course(&self.db, course_id)
                .await?
                .is_some_and(|(_, instructor)| instructor == claims.sub);
            if !instructs && !learners::enrolled(&self.db, course_id, &claims.sub).await? {
                return Err(Error::permission_denied(
                    "NOT_ENROLLED",
                    "a course's leaderboard is for its learners, its instructor and admins",
                ));
            }
        }
        self.board(claims, course_id, asked_week, limit).await
    }

    async fn board(
        &self,
        claims: &Claims,
        scope: &str,
        asked_week: &str,
        limit: i32,
    ) -> Result<Leaderboard, Error> {
        // 0 to 100 is a field rule of the request; 0 means the default.
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        let week = week(asked_week)?;
        let board = self
            .leaderboards
            .read(&week, scope, i64::from(limit), &claims.sub)
            .await?;
        let mut ids: Vec<&str> = board.top.iter().map(|p| p.learner.as_str()).collect();
        ids.extend(board.neighbours.iter().map(|p| p.learner.as_str()));
        ids.push(&claims.sub);
        let names = self.names.of(&ids).await?;
        Ok(leaderboard(scope, &week, &board, &names, &claims.sub))
    }
}
