//! What the consumer reads before applying a batch, and the batch's changes written back:
//! states (lessons, enrollments) as absolute rows, aggregates as additions, so that
//! consumers of different topics can add to the same day at once.
//!
//! Tables are written in one order (the order of [`write`]), and each statement's rows in
//! key order, so two batches that touch the same rows lock them in the same order.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Any, Row, Transaction};

use super::changes::{Changes, EnrollmentRow, LearnerRow, LessonRow, Profile};
use super::{Val, insert_rows, select_in};

pub async fn learners(
    tx: &mut Transaction<'_, Any>,
    ids: &[String],
) -> Result<HashMap<String, LearnerRow>, sqlx::Error> {
    let keys: Vec<Vec<String>> = ids.iter().map(|id| vec![id.clone()]).collect();
    let rows = select_in(
        tx,
        "SELECT learner_id, time_zone, leaderboard_hidden FROM analytics_learners \
         WHERE learner_id IN (",
        &[],
        &keys,
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("learner_id")?,
                LearnerRow {
                    time_zone: row.try_get("time_zone")?,
                    hidden: row.try_get::<i64, _>("leaderboard_hidden")? != 0,
                },
            ))
        })
        .collect()
}

/// The states of (learner, lesson) pairs that have one.
pub async fn lessons(
    tx: &mut Transaction<'_, Any>,
    pairs: &[(String, String)],
) -> Result<HashMap<(String, String), LessonRow>, sqlx::Error> {
    let keys: Vec<Vec<String>> = pairs
        .iter()
        .map(|(a, b)| vec![a.clone(), b.clone()])
        .collect();
    let rows = select_in(
        tx,
        "SELECT learner_id, lesson_id, course_id, started_at, completed_at, position_seconds, \
         last_at FROM analytics_lessons WHERE (learner_id, lesson_id) IN (",
        &[],
        &keys,
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("learner_id")?, row.try_get("lesson_id")?),
                LessonRow {
                    course_id: row.try_get("course_id")?,
                    started_at: row.try_get("started_at")?,
                    completed_at: row.try_get("completed_at")?,
                    position_seconds: row.try_get("position_seconds")?,
                    last_at: row.try_get("last_at")?,
                },
            ))
        })
        .collect()
}

/// The enrollments of (course, learner) pairs that have one.
pub async fn enrollments(
    tx: &mut Transaction<'_, Any>,
    pairs: &[(String, String)],
) -> Result<HashMap<(String, String), EnrollmentRow>, sqlx::Error> {
    let keys: Vec<Vec<String>> = pairs
        .iter()
        .map(|(a, b)| vec![a.clone(), b.clone()])
        .collect();
    let rows = select_in(
        tx,
        "SELECT course_id, learner_id, enrolled_at, completed_at, revoked_at \
         FROM analytics_enrollments WHERE (course_id, learner_id) IN (",
        &[],
        &keys,
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("course_id")?, row.try_get("learner_id")?),
                EnrollmentRow {
                    enrolled_at: row.try_get("enrolled_at")?,
                    completed_at: row.try_get("completed_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                },
            ))
        })
        .collect()
}

const LEARNER_HEAD: &str = "INSERT INTO analytics_learners (learner_id, display_name, time_zone, \
     registered_at, leaderboard_hidden, daily_goal_xp)";

/// Writes every change of a batch, table by table in a fixed order.
pub async fn write(tx: &mut Transaction<'_, Any>, changes: Changes) -> Result<(), sqlx::Error> {
    let Changes {
        new_learners,
        profiles,
        lessons,
        enrollments,
        courses,
        course_lessons,
        learner_days,
        weekly,
        course_days,
        course_active,
        active_days,
        revenue,
        platform,
    } = changes;
    // Learners first: a profile overwrites what the user events say (never preferences).
    let mut learners: BTreeMap<String, Option<Profile>> =
        new_learners.into_iter().map(|id| (id, None)).collect();
    learners.extend(profiles.into_iter().map(|(id, p)| (id, Some(p))));
    let (stated, defaults): (Vec<_>, Vec<_>) = learners.into_iter().partition(|(_, p)| p.is_some());
    let learner_rows = |list: Vec<(String, Option<Profile>)>| -> Vec<Vec<Val>> {
        list.into_iter()
            .map(|(id, profile)| {
                let p = profile.unwrap_or(Profile {
                    display_name: String::new(),
                    time_zone: "UTC".into(),
                    registered_at: None,
                });
                let (hidden, goal) = (Val::Int(0), Val::Int(0));
                vec![
                    id.into(),
                    p.display_name.into(),
                    p.time_zone.into(),
                    p.registered_at.into(),
                    hidden,
                    goal,
                ]
            })
            .collect()
    };
    // (statement head, conflict clause, rows), in the one order every batch writes in.
    let statements: Vec<(&str, &str, Vec<Vec<Val>>)> = vec![
        (
            LEARNER_HEAD,
            "ON CONFLICT (learner_id) DO UPDATE SET display_name = excluded.display_name, \
             time_zone = excluded.time_zone, \
             registered_at = COALESCE(analytics_learners.registered_at, excluded.registered_at)",
            learner_rows(stated),
        ),
        (
            LEARNER_HEAD,
            "ON CONFLICT (learner_id) DO NOTHING",
            learner_rows(defaults),
        ),
        (
            "INSERT INTO analytics_lessons (learner_id, lesson_id, course_id, started_at, \
             completed_at, position_seconds, last_at)",
            "ON CONFLICT (learner_id, lesson_id) DO UPDATE SET started_at = excluded.started_at, \
             completed_at = excluded.completed_at, position_seconds = excluded.position_seconds, \
             last_at = excluded.last_at",
            lessons
                .into_iter()
                .map(|((learner, lesson), row)| {
                    vec![
                        learner.into(),
                        lesson.into(),
                        row.course_id.into(),
                        row.started_at.into(),
                        row.completed_at.into(),
                        row.position_seconds.into(),
                        row.last_at.into(),
                    ]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_enrollments (course_id, learner_id, enrolled_at, completed_at, \
             revoked_at)",
            "ON CONFLICT (course_id, learner_id) DO UPDATE SET enrolled_at = excluded.enrolled_at, \
             completed_at = excluded.completed_at, revoked_at = excluded.revoked_at",
            enrollments
                .into_iter()
                .map(|((course, learner), row)| {
                    vec![
                        course.into(),
                        learner.into(),
                        row.enrolled_at.into(),
                        row.completed_at.into(),
                        row.revoked_at.into(),
                    ]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_courses (course_id, title, instructor_id)",
            "ON CONFLICT (course_id) DO UPDATE SET title = excluded.title, \
             instructor_id = excluded.instructor_id",
            courses
                .into_iter()
                .map(|(course, (title, instructor))| {
                    vec![course.into(), title.into(), instructor.into()]
                })
                .collect(),
        ),
        (
            // A title only replaces one when it is known (an AI request does not name it).
            "INSERT INTO analytics_course_lessons (course_id, lesson_id, title, ai_hint_requests)",
            "ON CONFLICT (course_id, lesson_id) DO UPDATE SET \
             title = CASE WHEN excluded.title = '' THEN analytics_course_lessons.title ELSE excluded.title END, \
             ai_hint_requests = analytics_course_lessons.ai_hint_requests + excluded.ai_hint_requests",
            course_lessons
                .into_iter()
                .map(|((course, lesson), (title, hints))| {
                    vec![course.into(), lesson.into(), title.into(), hints.into()]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_learner_days (learner_id, day, xp, lessons_completed, seconds)",
            "ON CONFLICT (learner_id, day) DO UPDATE SET xp = analytics_learner_days.xp + excluded.xp, \
             lessons_completed = analytics_learner_days.lessons_completed + excluded.lessons_completed, \
             seconds = analytics_learner_days.seconds + excluded.seconds",
            learner_days
                .into_iter()
                .map(|((learner, day), d)| {
                    vec![
                        learner.into(),
                        day.into(),
                        d.xp.into(),
                        d.lessons_completed.into(),
                        d.seconds.into(),
                    ]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_weekly_xp (week, scope, learner_id, xp)",
            "ON CONFLICT (week, scope, learner_id) DO UPDATE SET xp = analytics_weekly_xp.xp + excluded.xp",
            weekly
                .into_iter()
                .map(|((week, scope, learner), xp)| {
                    vec![week.into(), scope.into(), learner.into(), xp.into()]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_course_days (course_id, day, enrollments, completions, ai_hint_requests)",
            "ON CONFLICT (course_id, day) DO UPDATE SET \
             enrollments = analytics_course_days.enrollments + excluded.enrollments, \
             completions = analytics_course_days.completions + excluded.completions, \
             ai_hint_requests = analytics_course_days.ai_hint_requests + excluded.ai_hint_requests",
            course_days
                .into_iter()
                .map(|((course, day), d)| {
                    vec![
                        course.into(),
                        day.into(),
                        d.enrollments.into(),
                        d.completions.into(),
                        d.ai_hint_requests.into(),
                    ]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_course_active (course_id, day, learner_id)",
            "ON CONFLICT (course_id, day, learner_id) DO NOTHING",
            course_active
                .into_iter()
                .map(|(course, day, learner)| vec![course.into(), day.into(), learner.into()])
                .collect(),
        ),
        (
            "INSERT INTO analytics_active_days (day, learner_id)",
            "ON CONFLICT (day, learner_id) DO NOTHING",
            active_days
                .into_iter()
                .map(|(day, learner)| vec![day.into(), learner.into()])
                .collect(),
        ),
        (
            "INSERT INTO analytics_revenue_days (course_id, day, currency, captured_minor, refunded_minor)",
            "ON CONFLICT (course_id, day, currency) DO UPDATE SET \
             captured_minor = analytics_revenue_days.captured_minor + excluded.captured_minor, \
             refunded_minor = analytics_revenue_days.refunded_minor + excluded.refunded_minor",
            revenue
                .into_iter()
                .map(|((course, day, currency), (captured, refunded))| {
                    vec![
                        course.into(),
                        day.into(),
                        currency.into(),
                        captured.into(),
                        refunded.into(),
                    ]
                })
                .collect(),
        ),
        (
            "INSERT INTO analytics_platform_days (day, new_accounts, enrollments, completions, \
             ai_requests, ai_cost_nano_usd)",
            "ON CONFLICT (day) DO UPDATE SET \
             new_accounts = analytics_platform_days.new_accounts + excluded.new_accounts, \
             enrollments = analytics_platform_days.enrollments + excluded.enrollments, \
             completions = analytics_platform_days.completions + excluded.completions, \
             ai_requests = analytics_platform_days.ai_requests + excluded.ai_requests, \
             ai_cost_nano_usd = analytics_platform_days.ai_cost_nano_usd + excluded.ai_cost_nano_usd",
            platform
                .into_iter()
                .map(|(day, d)| {
                    vec![
                        day.into(),
                        d.new_accounts.into(),
                        d.enrollments.into(),
                        d.completions.into(),
                        d.ai_requests.into(),
                        d.ai_cost_nano_usd.into(),
                    ]
                })
                .collect(),
        ),
    ];
    for (head, tail, rows) in statements {
        insert_rows(tx, head, tail, rows).await?;
    }
    Ok(())
}
