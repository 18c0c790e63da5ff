//! The XP rules, in one table, and where a moment falls: the learner's local day (streaks,
//! daily XP), the UTC day (dashboards) and the ISO week of the UTC day (leaderboards).
//!
//! Rules are server-side and deterministic: XP comes only from the events below, each at
//! most once per learner and thing (a lesson, a course), so a replayed or repeated event
//! earns nothing.

use duovarsity_common::events::Event as _;
use duovarsity_proto::events::{EnrollmentCompleted, LessonCompleted};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};

/// XP for the first completion of a lesson.
pub const LESSON_XP: i64 = 10;
/// XP for the first completion of a course, on top of its lessons.
pub const COURSE_XP: i64 = 50;

/// One rule of the XP table.
pub struct Rule {
    pub event: &'static str,
    pub xp: i64,
    pub when: &'static str,
}

/// Every way to earn XP (README, "Learning analytics", prints this table).
pub const RULES: &[Rule] = &[
    Rule {
        event: LessonCompleted::TYPE,
        xp: LESSON_XP,
        when: "the first completion of a lesson; completing it again earns nothing",
    },
    Rule {
        event: EnrollmentCompleted::TYPE,
        xp: COURSE_XP,
        when: "the first completion of a course (a completion bonus)",
    },
];

/// The most learning time one progress report can add: a learner who skips ahead, or
/// reports after a long pause, is not credited for the gap.
pub const MAX_CREDIT_SECONDS: i64 = 600;

/// The learner's time zone; an unknown name (or none yet) is UTC.
pub fn time_zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

fn timestamp(at_ms: i64) -> Timestamp {
    Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The local date of `at_ms` in `zone`.
pub fn local_day(at_ms: i64, zone: &TimeZone) -> Date {
    timestamp(at_ms).to_zoned(zone.clone()).date()
}

/// The UTC date of `at_ms`.
pub fn utc_day(at_ms: i64) -> Date {
    local_day(at_ms, &TimeZone::UTC)
}

/// The ISO week of `date`, as `2026-W49`.
pub fn iso_week(date: Date) -> String {
    let week = date.iso_week_date();
    format!("{:04}-W{:02}", week.year(), week.week())
}

/// The leaderboard week of `at_ms`: the ISO week of its UTC date.
pub fn week_of(at_ms: i64) -> String {
    iso_week(utc_day(at_ms))
}

/// The week before `week` (for a valid week; `week` itself otherwise).
pub fn previous_week(week: &str) -> String {
    week_start(week)
        .and_then(|monday| monday.checked_sub(7.days()).ok())
        .map_or_else(|| week.to_string(), iso_week)
}

/// The Monday of an ISO week written `YYYY-Www`.
pub fn week_start(week: &str) -> Option<Date> {
    let (year, number) = week.split_once("-W")?;
    let weekday = jiff::civil::Weekday::Monday;
    jiff::civil::ISOWeekDate::new(year.parse().ok()?, number.parse().ok()?, weekday)
        .ok()
        .map(|iso| iso.date())
}

/// Seconds of learning a progress report adds: how far the position moved forward, but
/// no more than the time since the previous report, nor [`MAX_CREDIT_SECONDS`].
/// `previous` is the lesson's last (position, moment), if it was reported before.
pub fn learning_seconds(previous: Option<(i64, i64)>, position: i64, at_ms: i64) -> i64 {
    let (from, elapsed) = match previous {
        Some((last_position, last_at)) => (last_position, (at_ms - last_at).max(0) / 1000),
        None => (0, MAX_CREDIT_SECONDS),
    };
    (position - from).clamp(0, elapsed.min(MAX_CREDIT_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn a_moment_falls_on_the_learners_own_day_across_dst() {
        let new_york = time_zone("America/New_York");
        // 23:30 local on the day clocks spring forward (2026-03-08, UTC-4 after 02:00).
        assert_eq!(
            local_day(at("2026-03-09T03:30:00Z"), &new_york).to_string(),
            "2026-03-08"
        );
        // 00:30 local the next day.
        assert_eq!(
            local_day(at("2026-03-09T04:30:00Z"), &new_york).to_string(),
            "2026-03-09"
        );
        // 01:30 happens twice on 2026-11-01 (fall back); both are that day.
        for instant in ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"] {
            assert_eq!(local_day(at(instant), &new_york).to_string(), "2026-11-01");
        }
        // 23:30 local after falling back (UTC-5).
        assert_eq!(
            local_day(at("2026-11-02T04:30:00Z"), &new_york).to_string(),
            "2026-11-01"
        );
        // Auckland is a day ahead of UTC in the morning there.
        let auckland = time_zone("Pacific/Auckland");
        assert_eq!(
            local_day(at("2026-06-30T20:00:00Z"), &auckland).to_string(),
            "2026-07-01"
        );
        assert_eq!(
            utc_day(at("2026-06-30T20:00:00Z")).to_string(),
            "2026-06-30"
        );
        // A name that is not a zone is UTC.
        assert_eq!(
            local_day(at("2026-06-30T23:00:00Z"), &time_zone("Mars/Olympus")).to_string(),
            "2026-06-30"
        );
    }

    #[test]
    fn weeks_are_iso_weeks_of_the_utc_day() {
        // 2026-12-31 is a Thursday of week 53; 2027-01-01 is in it too.
        assert_eq!(week_of(at("2026-12-31T12:00:00Z")), "2026-W53");
        assert_eq!(week_of(at("2027-01-01T12:00:00Z")), "2026-W53");
        assert_eq!(week_of(at("2027-01-04T00:00:00Z")), "2027-W01");
        // Sunday 23:59 UTC is still the old week, whatever the learner's zone.
        assert_eq!(week_of(at("2026-12-06T23:59:59Z")), "2026-W49");
        assert_eq!(week_of(at("2026-12-07T00:00:00Z")), "2026-W50");
        assert_eq!(previous_week("2027-W01"), "2026-W53");
        assert_eq!(previous_week("2026-W50"), "2026-W49");
        assert_eq!(week_start("2026-W50").unwrap().to_string(), "2026-12-07");
        assert_eq!(week_start("2026-W54"), None);
    }

    #[test]
    fn learning_time_is_forward_movement_no_faster_than_the_clock() {
        // First report: up to ten minutes of what it says.
        assert_eq!(learning_seconds(None, 120, 0), 120);
        assert_eq!(learning_seconds(None, 5_000, 0), MAX_CREDIT_SECONDS);
        // 300 s watched in 60 s of wall time: 60 s.
        assert_eq!(learning_seconds(Some((100, 0)), 400, 60_000), 60);
        // Moving back, or the same position again, adds nothing.
        assert_eq!(learning_seconds(Some((400, 0)), 100, 60_000), 0);
        assert_eq!(learning_seconds(Some((400, 0)), 400, 60_000), 0);
        // A report out of order (earlier than the last) adds nothing.
        assert_eq!(learning_seconds(Some((100, 60_000)), 200, 0), 0);
    }

    #[test]
    fn the_rules_table_names_catalog_events() {
        for rule in RULES {
            assert!(
                duovarsity_common::events::catalog::ALL
                    .iter()
                    .any(|(event, _)| *event == rule.event)
            );
            assert!(rule.xp > 0);
        }
    }
}
