//! A learner's own analytics: today's XP, the streak, the 30-day calendar and the week's
//! total; their preferences; and the export of everything held about them. Every function
//! takes the caller's id from the verified token, never from the request.

use std::collections::BTreeMap;

use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use duovarsity_proto::analytics::{
    Activity, ActivityExport, CourseDayRecord, Day, EnrollmentRecord, LessonRecord, Preferences,
    Streak, UpdateMyPreferencesRequest, WeekXp,
};
use jiff::ToSpan as _;
use jiff::civil::Date;

use crate::Analytics;
use crate::leaderboards::GLOBAL;
use crate::store::learners::{self as store, Learner};
use crate::streak::{self, Status, Totals};
use crate::xp;

/// Days in the activity calendar.
const CALENDAR_DAYS: i64 = 30;

fn default_learner() -> Learner {
    Learner {
        display_name: String::new(),
        time_zone: "UTC".into(),
        hidden: false,
        daily_goal_xp: 0,
    }
}

fn day_of(date: Date, totals: Totals, status: Status) -> Day {
    Day {
        date: date.to_string(),
        xp: totals.xp,
        lessons_completed: totals.lessons_completed,
        minutes: totals.seconds / 60,
        status: status.name().to_string(),
    }
}

fn preferences(learner: &Learner) -> Preferences {
    Preferences {
        leaderboard_hidden: learner.hidden,
        daily_goal_xp: i32::try_from(learner.daily_goal_xp).unwrap_or(0),
    }
}

impl Analytics {
    async fn history(&self, id: &str) -> Result<BTreeMap<Date, Totals>, Error> {
        store::days(&self.db, id)
            .await?
            .into_iter()
            .map(|(day, xp, lessons_completed, seconds)| {
                let date: Date = day
                    .parse()
                    .map_err(|e| Error::internal("a stored day", &e))?;
                Ok((
                    date,
                    Totals {
                        xp,
                        lessons_completed,
                        seconds,
                    },
                ))
            })
            .collect()
    }

    pub async fn activity(&self, id: &str) -> Result<Activity, Error> {
        let learner = store::learner(&self.db, id)
            .await?
            .unwrap_or_else(default_learner);
        let now = now_millis();
        let today = xp::local_day(now, &xp::time_zone(&learner.time_zone));
        let from = today
            .checked_sub((CALENDAR_DAYS - 1).days())
            .map_err(|e| Error::internal("the calendar's first day", &e))?;
        let days = self.history(id).await?;
        let walk = streak::walk(&days, learner.daily_goal_xp, today, from);
        let calendar = walk
            .statuses
            .iter()
            .map(|(date, status)| {
                day_of(*date, days.get(date).copied().unwrap_or_default(), *status)
            })
            .collect();
        let week = xp::week_of(now);
        let week_xp = store::weekly_entry(&self.db, &week, GLOBAL, id)
            .await?
            .unwrap_or(0);
        Ok(Activity {
            time_zone: learner.time_zone.clone(),
            today: today.to_string(),
            today_xp: days.get(&today).map_or(0, |t| t.xp),
            daily_goal_xp: i32::try_from(learner.daily_goal_xp).unwrap_or(0),
            streak: Some(Streak {
                current: walk.current,
                longest: walk.longest,
                freezes: walk.freezes,
                today_met: walk.today_met,
            }),
            calendar,
            week,
            week_xp,
            total_xp: days.values().map(|t| t.xp).sum(),
        })
    }

    pub async fn preferences(&self, id: &str) -> Result<Preferences, Error> {
        let learner = store::learner(&self.db, id)
            .await?
            .unwrap_or_else(default_learner);
        Ok(preferences(&learner))
    }

    pub async fn update_preferences(
        &self,
        id: &str,
        request: UpdateMyPreferencesRequest,
    ) -> Result<Preferences, Error> {
        // The goal's range (0 to 500) is a field rule, checked before this runs.
        let learner = self
            .leaderboards
            .set_preferences(
                id,
                request.leaderboard_hidden,
                request.daily_goal_xp.map(i64::from),
            )
            .await?;
        Ok(preferences(&learner))
    }

    /// Everything this service holds about the caller.
    pub async fn export(&self, id: &str) -> Result<ActivityExport, Error> {
        let learner = store::learner(&self.db, id)
            .await?
            .unwrap_or_else(default_learner);
        let days = self.history(id).await?;
        let today = xp::local_day(now_millis(), &xp::time_zone(&learner.time_zone));
        let first = days.keys().next().copied().unwrap_or(today);
        let walk = streak::walk(&days, learner.daily_goal_xp, today, first);
        Ok(ActivityExport {
            user_id: id.to_string(),
            display_name: learner.display_name.clone(),
            time_zone: learner.time_zone.clone(),
            preferences: Some(preferences(&learner)),
            days: days
                .iter()
                .map(|(date, totals)| {
                    day_of(
                        *date,
                        *totals,
                        walk.statuses.get(date).copied().unwrap_or(Status::Open),
                    )
                })
                .collect(),
            lessons: store::lessons(&self.db, id)
                .await?
                .into_iter()
                .map(
                    |(
                        course_id,
                        lesson_id,
                        started_at,
                        completed_at,
                        position_seconds,
                        last_at,
                    )| LessonRecord {
                        course_id,
                        lesson_id,
                        started_at,
                        completed_at: completed_at.unwrap_or(0),
                        position_seconds,
                        last_at,
                    },
                )
                .collect(),
            enrollments: store::enrollments(&self.db, id)
                .await?
                .into_iter()
                .map(|(course_id, row)| EnrollmentRecord {
                    course_id,
                    enrolled_at: row.enrolled_at.unwrap_or(0),
                    completed_at: row.completed_at.unwrap_or(0),
                    revoked_at: row.revoked_at.unwrap_or(0),
                })
                .collect(),
            weeks: store::weeks(&self.db, id)
                .await?
                .into_iter()
                .map(|(week, scope, xp)| WeekXp { week, scope, xp })
                .collect(),
            active_days: store::active_days(&self.db, id)
                .await?
                .into_iter()
                .map(|(course_id, date)| CourseDayRecord { course_id, date })
                .collect(),
        })
    }
}
