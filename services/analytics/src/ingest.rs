//! The consumer's handler: a batch of events becomes one set of [`Changes`] (states read
//! once, aggregates added up in memory), written in the consumer's transaction; once it is
//! committed, the leaderboards' sorted sets get the batch's XP.
//!
//! What each event does:
//! - `user.registered`, `user.profile_updated`: the learner's display name and time zone
//!   (a new account counts on the platform's day);
//! - `course.published`: the course's title and instructor (whose dashboard it is);
//! - `enrollment.created` (active) and `enrollment.activated`: an enrollment, once;
//!   `enrollment.completed`: a completion and, the first time, the course bonus;
//!   `enrollment.revoked`: the enrollment ends (XP earned stays);
//! - `progress.lesson_progressed`: a lesson started, learning time, an active day;
//!   `progress.lesson_completed`: the lesson's XP, the first time;
//! - `payment.captured`, `payment.refunded`: revenue of the course's day;
//! - `ai.usage`: AI requests and spend of the day, and a hint request of its lesson.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::events::consumer::batch::BatchHandler;
use duovarsity_proto::events::Envelope;
use sqlx::{Any, Transaction};

use crate::facts::{Fact, moment};
use crate::leaderboards::{GLOBAL, Increment, Leaderboards};
use crate::store::changes::{Changes, EnrollmentRow, LearnerRow, LessonRow, Profile};
use crate::store::ingest as store;
use crate::xp::{self, COURSE_XP, LESSON_XP};

/// The batch being applied: states as loaded and changed, and the changes to write.
struct Batch {
    learners: HashMap<String, LearnerRow>,
    lessons: HashMap<(String, String), LessonRow>,
    enrollments: HashMap<(String, String), EnrollmentRow>,
    touched_lessons: BTreeSet<(String, String)>,
    touched_enrollments: BTreeSet<(String, String)>,
    changes: Changes,
    increments: Vec<Increment>,
}

impl Batch {
    /// The learner's row, made (UTC, shown) when it has none yet.
    fn learner(&mut self, id: &str) -> LearnerRow {
        if let Some(row) = self.learners.get(id) {
            return row.clone();
        }
        self.changes.new_learners.insert(id.to_string());
        let row = LearnerRow {
            time_zone: "UTC".into(),
            hidden: false,
        };
        self.learners.insert(id.to_string(), row.clone());
        row
    }

    /// `amount` XP to `learner` at `at`: their local day, and this week's global and course
    /// leaderboards.
    fn award(&mut self, learner: &str, course: &str, at: i64, amount: i64, lessons: i64) {
        let row = self.learner(learner);
        let day = xp::local_day(at, &xp::time_zone(&row.time_zone)).to_string();
        let entry = self
            .changes
            .learner_days
            .entry((learner.to_string(), day))
            .or_default();
        entry.xp += amount;
        entry.lessons_completed += lessons;
        let week = xp::week_of(at);
        for scope in [GLOBAL, course] {
            let key = (week.clone(), scope.to_string(), learner.to_string());
            *self.changes.weekly.entry(key).or_default() += amount;
            if !row.hidden {
                self.increments.push(Increment {
                    week: week.clone(),
                    scope: scope.to_string(),
                    learner: learner.to_string(),
                    xp: amount,
                });
            }
        }
    }

    /// The enrollment's state, marked to be written.
    fn enrollment(&mut self, course: &str, learner: &str) -> &mut EnrollmentRow {
        let key = (course.to_string(), learner.to_string());
        self.touched_enrollments.insert(key.clone());
        self.enrollments.entry(key).or_default()
    }

    fn apply(&mut self, fact: Fact, at: i64) {
        let day = xp::utc_day(at).to_string();
        match fact {
            Fact::Profile {
                learner,
                name,
                zone,
                registered,
            } => {
                self.learner(&learner);
                self.changes.new_learners.remove(&learner);
                if let Some(row) = self.learners.get_mut(&learner) {
                    row.time_zone = zone.clone();
                }
                let registered_at = registered.then_some(at);
                self.changes.profiles.insert(
                    learner,
                    Profile {
                        display_name: name,
                        time_zone: zone,
                        registered_at,
                    },
                );
                if registered {
                    self.changes.platform.entry(day).or_default().new_accounts += 1;
                }
            }
            Fact::Course {
                course,
                title,
                instructor,
            } => {
                self.changes.courses.insert(course, (title, instructor));
            }
            Fact::Enrolled { course, learner } => {
                self.learner(&learner);
                let row = self.enrollment(&course, &learner);
                if row.enrolled_at.is_some() && row.revoked_at.is_none() {
                    return;
                }
                row.enrolled_at = Some(at);
                row.revoked_at = None;
                self.changes
                    .course_days
                    .entry((course, day.clone()))
                    .or_default()
                    .enrollments += 1;
                self.changes.platform.entry(day).or_default().enrollments += 1;
            }
            Fact::Completed { course, learner } => {
                let row = self.enrollment(&course, &learner);
                if row.completed_at.is_some() {
                    return;
                }
                row.completed_at = Some(at);
                if row.enrolled_at.is_none() {
                    row.enrolled_at = Some(at);
                }
                self.changes
                    .course_days
                    .entry((course.clone(), day.clone()))
                    .or_default()
                    .completions += 1;
                self.changes.platform.entry(day).or_default().completions += 1;
                self.award(&learner, &course, at, COURSE_XP, 0);
            }
            Fact::Revoked { course, learner } => {
                self.enrollment(&course, &learner).revoked_at = Some(at);
            }
            Fact::Progressed {
                learner,
                course,
                lesson,
                title,
                position,
            } => {
                let zone = xp::time_zone(&self.learner(&learner).time_zone);
                let key = (learner.clone(), lesson.clone());
                let previous = self
                    .lessons
                    .get(&key)
                    .map(|row| (row.position_seconds, row.last_at));
                let seconds = xp::learning_seconds(previous, position, at);
                let row = self.lesson(&key, &course, at);
                // A report older than the latest (redelivered late) moves nothing back.
                if at >= row.last_at {
                    row.position_seconds = position;
                    row.last_at = at;
                }
                self.learning_day(&learner, &course, &lesson, &title, at, &zone, seconds);
            }
            Fact::LessonDone {
                learner,
                course,
                lesson,
                title,
            } => {
                let zone = xp::time_zone(&self.learner(&learner).time_zone);
                let key = (learner.clone(), lesson.clone());
                let row = self.lesson(&key, &course, at);
                row.last_at = row.last_at.max(at);
                let first = row.completed_at.is_none();
                if first {
                    row.completed_at = Some(at);
                }
                self.learning_day(&learner, &course, &lesson, &title, at, &zone, 0);
                if first {
                    self.award(&learner, &course, at, LESSON_XP, 1);
                }
            }
            Fact::Paid {
                course,
                currency,
                captured,
                refunded,
            } => {
                let entry = self
                    .changes
                    .revenue
                    .entry((course, day, currency))
                    .or_default();
                entry.0 += captured;
                entry.1 += refunded;
            }
            Fact::Ai {
                course,
                lesson,
                hint,
                cost,
            } => {
                let platform = self.changes.platform.entry(day.clone()).or_default();
                platform.ai_requests += 1;
                platform.ai_cost_nano_usd += cost;
                if hint && !course.is_empty() && !lesson.is_empty() {
                    self.changes
                        .course_lessons
                        .entry((course.clone(), lesson))
                        .or_default()
                        .1 += 1;
                    self.changes
                        .course_days
                        .entry((course, day))
                        .or_default()
                        .ai_hint_requests += 1;
                }
            }
        }
    }

    /// The learner's state in a lesson (started now when new), marked to be written.
    fn lesson(&mut self, key: &(String, String), course: &str, at: i64) -> &mut LessonRow {
        self.touched_lessons.insert(key.clone());
        self.lessons
            .entry(key.clone())
            .or_insert_with(|| LessonRow {
                course_id: course.to_string(),
                started_at: at,
                completed_at: None,
                position_seconds: 0,
                last_at: at,
            })
    }

    /// A learning moment: the lesson's title, the learner's day (time) and the active days.
    #[allow(clippy::too_many_arguments)]
    fn learning_day(
        &mut self,
        learner: &str,
        course: &str,
        lesson: &str,
        title: &str,
        at: i64,
        zone: &jiff::tz::TimeZone,
        seconds: i64,
    ) {
        let local = xp::local_day(at, zone).to_string();
        self.changes
            .learner_days
            .entry((learner.to_string(), local))
            .or_default()
            .seconds += seconds;
        let lesson_title = self
            .changes
            .course_lessons
            .entry((course.to_string(), lesson.to_string()))
            .or_default();
        if !title.is_empty() {
            lesson_title.0 = title.to_string();
        }
        let day = xp::utc_day(at).to_string();
        self.changes
            .course_active
            .insert((course.to_string(), day.clone(), learner.to_string()));
        self.changes.active_days.insert((day, learner.to_string()));
    }

    /// The changes, with the final state of every lesson and enrollment touched.
    fn into_changes(mut self) -> (Changes, Vec<Increment>) {
        for key in std::mem::take(&mut self.touched_lessons) {
            let row = self.lessons[&key].clone();
            self.changes.lessons.insert(key, row);
        }
        for key in std::mem::take(&mut self.touched_enrollments) {
            let row = self.enrollments[&key].clone();
            self.changes.enrollments.insert(key, row);
        }
        (self.changes, self.increments)
    }
}

/// The consumer's handler: applies batches, then feeds the leaderboards.
pub struct Ingest {
    pub leaderboards: Leaderboards,
}

#[async_trait]
impl BatchHandler for Ingest {
    type Applied = Vec<Increment>;

    async fn handle_batch(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelopes: &[Envelope],
    ) -> Result<Vec<Increment>, Error> {
        let mut facts = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            if let Some(fact) = Fact::of(envelope)? {
                facts.push((fact, moment(envelope)));
            }
        }
        let mut learners: Vec<String> = facts
            .iter()
            .filter_map(|(fact, _)| fact.learner().map(str::to_string))
            .collect();
        learners.sort();
        learners.dedup();
        let mut lessons: Vec<(String, String)> = facts
            .iter()
            .filter_map(|(fact, _)| match fact {
                Fact::Progressed {
                    learner, lesson, ..
                }
                | Fact::LessonDone {
                    learner, lesson, ..
                } => Some((learner.clone(), lesson.clone())),
                _ => None,
            })
            .collect();
        lessons.sort();
        lessons.dedup();
        let mut enrollments: Vec<(String, String)> = facts
            .iter()
            .filter_map(|(fact, _)| match fact {
                Fact::Enrolled { course, learner }
                | Fact::Completed { course, learner }
                | Fact::Revoked { course, learner } => Some((course.clone(), learner.clone())),
                _ => None,
            })
            .collect();
        enrollments.sort();
        enrollments.dedup();
        let mut batch = Batch {
            learners: store::learners(tx, &learners).await?,
            lessons: store::lessons(tx, &lessons).await?,
            enrollments: store::enrollments(tx, &enrollments).await?,
            touched_lessons: BTreeSet::new(),
            touched_enrollments: BTreeSet::new(),
            changes: Changes::default(),
            increments: Vec::new(),
        };
        for (fact, at) in facts {
            batch.apply(fact, at);
        }
        let (changes, increments) = batch.into_changes();
        store::write(tx, changes).await?;
        Ok(increments)
    }

    async fn committed(&self, increments: Vec<Increment>) {
        self.leaderboards.add(increments).await;
    }
}
