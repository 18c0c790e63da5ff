//! Streaks: consecutive local days with the daily goal met, computed from the day history
//! on read, so that the result depends only on the days (not on the order events arrived
//! in, nor on how often it was computed).
//!
//! The rules, walking the learner's calendar days (civil dates, so a 23- or 25-hour DST day
//! is one day like any other):
//! - a day **meets** the goal with at least one completed lesson (goal 0) or at least the
//!   goal's XP; each met day adds one to the streak;
//! - every 7th day of a streak earns a **freeze**, up to [`MAX_FREEZES`] held;
//! - a past day that misses the goal while a streak runs spends a freeze if one is held
//!   (the day is **frozen**: the streak survives without growing), else ends the streak;
//! - today (and any later day, after a move west) never breaks it: it is **open** until met.

use std::collections::BTreeMap;

use jiff::civil::Date;

/// Freezes a learner can hold.
pub const MAX_FREEZES: i32 = 2;
/// Streak days per freeze earned.
pub const DAYS_PER_FREEZE: i32 = 7;

/// What one local day holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub xp: i64,
    pub lessons_completed: i64,
    pub seconds: i64,
}

/// How a day counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Frozen,
    Missed,
    Open,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Frozen => "frozen",
            Status::Missed => "missed",
            Status::Open => "open",
        }
    }
}

/// The streak as of today, and how each day from `report_from` on counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub current: i32,
    pub longest: i32,
    pub freezes: i32,
    pub today_met: bool,
    /// Every day from `report_from` to today.
    pub statuses: BTreeMap<Date, Status>,
}

/// Whether `totals` meet a daily goal of `goal_xp` (0: one completed lesson).
pub fn meets(totals: &Totals, goal_xp: i64) -> bool {
    if goal_xp <= 0 {
        totals.lessons_completed > 0
    } else {
        totals.xp >= goal_xp
    }
}

/// Walks `days` (every day with activity) up to `today`, reporting statuses from
/// `report_from`.
pub fn walk(days: &BTreeMap<Date, Totals>, goal_xp: i64, today: Date, report_from: Date) -> Walk {
    let met = |date: &Date| days.get(date).is_some_and(|t| meets(t, goal_xp));
    let mut walk = Walk {
        current: 0,
        longest: 0,
        freezes: 0,
        today_met: met(&today),
        statuses: BTreeMap::new(),
    };
    let first_met = days.keys().find(|date| met(date)).copied();
    let last = days.keys().next_back().copied().unwrap_or(today).max(today);
    let start = first_met.unwrap_or(today).min(report_from);
    let mut streak = 0;
    let mut date = start;
    while date <= last {
        let status = if met(&date) {
            streak += 1;
            walk.longest = walk.longest.max(streak);
            if streak % DAYS_PER_FREEZE == 0 && walk.freezes < MAX_FREEZES {
                walk.freezes += 1;
            }
            Status::Met
        } else if date >= today {
            Status::Open
        } else if streak > 0 && walk.freezes > 0 {
            walk.freezes -= 1;
            Status::Frozen
        } else {
            streak = 0;
            Status::Missed
        };
        if date >= report_from && date <= today {
            walk.statuses.insert(date, status);
        }
        if date == today {
            walk.current = streak;
        }
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    // Days after today (a move west) that met the goal carry the streak on.
    if last > today {
        walk.current = streak;
    }
    walk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        text.parse().unwrap()
    }

    fn history(entries: &[(&str, i64, i64)]) -> BTreeMap<Date, Totals> {
        entries
            .iter()
            .map(|(date, xp, lessons)| {
                (
                    day(date),
                    Totals {
                        xp: *xp,
                        lessons_completed: *lessons,
                        seconds: 0,
                    },
                )
            })
            .collect()
    }

    fn run(days: &[&str], today: &str) -> Walk {
        let entries: Vec<(&str, i64, i64)> = days.iter().map(|d| (*d, 10, 1)).collect();
        walk(&history(&entries), 0, day(today), day(today))
    }

    #[test]
    fn consecutive_days_make_a_streak_and_today_does_not_break_it() {
        let w = run(&["2026-12-01", "2026-12-02", "2026-12-03"], "2026-12-04");
        assert_eq!((w.current, w.longest, w.today_met), (3, 3, false));
        assert_eq!(w.statuses[&day("2026-12-04")], Status::Open);
        let w = run(&["2026-12-01", "2026-12-02", "2026-12-03"], "2026-12-03");
        assert_eq!((w.current, w.today_met), (3, true));
        // A missed day without a freeze ends it; the longest is kept.
        let w = run(&["2026-12-01", "2026-12-02", "2026-12-04"], "2026-12-04");
        assert_eq!((w.current, w.longest), (1, 2));
        // Yesterday missed: nothing runs today until a lesson is done.
        let w = run(&["2026-12-01", "2026-12-02"], "2026-12-04");
        assert_eq!((w.current, w.longest), (0, 2));
        // No activity at all.
        let w = run(&[], "2026-12-04");
        assert_eq!((w.current, w.longest, w.freezes), (0, 0, 0));
    }

    #[test]
    fn seven_days_earn_a_freeze_that_a_missed_day_spends() {
        let week: Vec<String> = (1..=7).map(|d| format!("2026-12-{d:02}")).collect();
        let mut days: Vec<&str> = week.iter().map(String::as_str).collect();
        let w = run(&days, "2026-12-07");
        assert_eq!((w.current, w.freezes), (7, 1));
        // The 8th is missed: the freeze keeps the streak (without adding to it).
        days.push("2026-12-09");
        let w = run(&days, "2026-12-09");
        assert_eq!((w.current, w.longest, w.freezes), (8, 8, 0));
        let w = walk(
            &history(&days.iter().map(|d| (*d, 10, 1)).collect::<Vec<_>>()),
            0,
            day("2026-12-09"),
            day("2026-12-07"),
        );
        assert_eq!(w.statuses[&day("2026-12-08")], Status::Frozen);
        // The next miss, with no freeze left, ends it.
        days.push("2026-12-11");
        let w = run(&days, "2026-12-11");
        assert_eq!((w.current, w.longest), (1, 8));
    }

    #[test]
    fn freezes_are_capped_and_not_spent_without_a_streak() {
        let month: Vec<String> = (1..=28).map(|d| format!("2026-02-{d:02}")).collect();
        let days: Vec<&str> = month.iter().map(String::as_str).collect();
        assert_eq!(run(&days, "2026-02-28").freezes, MAX_FREEZES);
        // Two misses in a row spend both and keep the streak.
        let mut later = days.clone();
        later.push("2026-03-03");
        let w = run(&later, "2026-03-03");
        assert_eq!((w.current, w.freezes), (29, 0));
    }

    #[test]
    fn a_goal_in_xp_replaces_the_one_lesson_rule() {
        let days = history(&[("2026-12-01", 30, 3), ("2026-12-02", 10, 1)]);
        let w = walk(&days, 20, day("2026-12-02"), day("2026-12-01"));
        assert_eq!((w.current, w.today_met), (1, false));
        assert_eq!(w.statuses[&day("2026-12-02")], Status::Open);
        let w = walk(&days, 0, day("2026-12-02"), day("2026-12-01"));
        assert_eq!(w.current, 2);
    }

    #[test]
    fn a_move_west_does_not_lose_tomorrows_day() {
        // Completed on the 5th in Tokyo; now in New York it is still the 4th.
        let w = run(&["2026-12-03", "2026-12-04", "2026-12-05"], "2026-12-04");
        assert_eq!(w.current, 3);
    }
}
