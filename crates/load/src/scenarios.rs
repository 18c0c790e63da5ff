//! The scenarios of a learner's day, weighted as goose users:
//!
//! - anonymous browsing: the catalog, course pages with their related courses and free
//!   lessons, by Zipf popularity, and searching while typing a title;
//! - a learner session: sign in once, enroll in a popular free course, keep a WebSocket
//!   open, read lessons, record progress forward, look at the profile, the inbox, their XP
//!   and streak, the week's leaderboard and their recommendations, search while typing,
//!   and now and then ask the AI tutor for a hint;
//! - a purchase: enroll in a paid course, check out, pay in the Razorpay sandbox, and wait
//!   for the webhook to capture the order;
//! - instructor authoring (rare): a draft course with a section, a lesson and its text.
//!
//! Each goose user signs in as its own load-test learner (`learner-<user index>`), so a
//! session's socket hears only its own changes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use goose::prelude::*;
use serde_json::json;

use crate::authoring::*;
use crate::buying::*;
use crate::catalog::Course;
use crate::live::Socket;
use crate::plan::{learner_email, plan};
use crate::requests::*;

/// The scenarios; each user pauses between 0.5 and 1.5 times `pace` between
/// transactions, so `users / pace` requests per second arrive whatever the latency (as long
/// as it stays below the pause; longer answers are backfilled by goose's
/// coordinated-omission mitigation).
pub fn scenarios(pace: Duration) -> Result<Vec<Scenario>, GooseError> {
    let (min, max) = (pace / 2, pace * 3 / 2);
    Ok(vec![
        scenario!("AnonymousBrowsing")
            .set_weight(60)?
            .register_transaction(transaction!(pick_gateway).set_on_start())
            .register_transaction(transaction!(browse_catalog).set_weight(1)?)
            .register_transaction(transaction!(browse_course).set_weight(4)?)
            .register_transaction(transaction!(browse_lesson).set_weight(2)?)
            .register_transaction(transaction!(browse_related).set_weight(1)?)
            .register_transaction(transaction!(search_while_typing).set_weight(1)?)
            .set_wait_time(min, max)?,
        scenario!("LearnerSession")
            .set_weight(35)?
            .register_transaction(transaction!(start_session).set_on_start())
            .register_transaction(transaction!(read_lesson).set_weight(6)?)
            .register_transaction(transaction!(record_progress).set_weight(3)?)
            .register_transaction(transaction!(my_profile).set_weight(2)?)
            .register_transaction(transaction!(unread_count).set_weight(1)?)
            .register_transaction(transaction!(my_activity).set_weight(1)?)
            .register_transaction(transaction!(leaderboard).set_weight(1)?)
            .register_transaction(transaction!(recommendations).set_weight(1)?)
            .register_transaction(transaction!(search_while_typing).set_weight(1)?)
            .register_transaction(transaction!(ask_hint).set_weight(1)?)
            .set_wait_time(min, max)?,
        scenario!("Purchase")
            .set_weight(4)?
            .register_transaction(transaction!(sign_in_buyer).set_on_start())
            .register_transaction(transaction!(buy_course).set_weight(1)?)
            .register_transaction(transaction!(my_orders).set_weight(3)?)
            .set_wait_time(min, max)?,
        scenario!("InstructorAuthoring")
            .set_weight(1)?
            .register_transaction(transaction!(sign_in_instructor).set_on_start())
            .register_transaction(transaction!(author_course))
            // Authoring is rare and slow: a few drafts a minute per instructor.
            .set_wait_time(min * 10, max * 10)?,
        scenario!("InstructorAnnouncing")
            .set_weight(1)?
            .register_transaction(transaction!(sign_in_instructor).set_on_start())
            .register_transaction(transaction!(announce))
            // A course takes DUOVARSITY_ANNOUNCEMENTS_PER_HOUR (30) an hour.
            .set_wait_time(min * 60, max * 60)?,
    ])
}

async fn browse_catalog(user: &mut GooseUser) -> TransactionResult {
    send(
        user,
        GooseMethod::Get,
        "/v1/courses?pageSize=20",
        "GET /v1/courses",
        |b| b,
    )
    .await?;
    Ok(())
}

async fn browse_course(user: &mut GooseUser) -> TransactionResult {
    let path = format!("/v1/courses/{}", plan().catalog.popular().slug);
    send(user, GooseMethod::Get, &path, "GET /v1/courses/{id}", |b| b).await?;
    Ok(())
}

async fn browse_lesson(user: &mut GooseUser) -> TransactionResult {
    let course = plan().catalog.popular_free();
    let lesson = &course.lessons[rand::random::<usize>() % course.lessons.len()];
    let path = format!("/v1/lessons/{lesson}/content");
    send(
        user,
        GooseMethod::Get,
        &path,
        "GET /v1/lessons/{id}/content",
        |b| b,
    )
    .await?;
    Ok(())
}

async fn start_session(user: &mut GooseUser) -> TransactionResult {
    let plan = plan();
    let email = learner_email(user.weighted_users_index);
    sign_in(user, &email, &plan.learner_password).await?;
    let course: &Course = plan.catalog.popular_free();
    // Enrolled in an earlier run: that is where the learner continues.
    enroll(user, &course.id).await?;
    let ws_base = gateway(user)
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let socket = user.get_session_data::<Session>().map(|s| {
        Socket::open(
            &ws_base,
            &s.token,
            format!("course:{}", course.id),
            &plan.live,
        )
    });
    let session = user.get_session_data_mut::<Session>().ok_or("signed in")?;
    session.lessons = course.lessons.clone();
    session.socket = socket;
    Ok(())
}

fn current_lesson(user: &GooseUser) -> Option<String> {
    let session = user.get_session_data::<Session>()?;
    session
        .lessons
        .get(session.next.min(session.lessons.len().saturating_sub(1)))
        .cloned()
}

async fn read_lesson(user: &mut GooseUser) -> TransactionResult {
    let Some(lesson) = current_lesson(user) else {
        return Ok(());
    };
    let path = format!("/v1/lessons/{lesson}/content");
    call(
        user,
        GooseMethod::Get,
        &path,
        "GET /v1/lessons/{id}/content",
        None,
    )
    .await?;
    Ok(())
}

/// Moves the learner forward in 25 % steps through the course's lessons; each change is
/// a frame the session's socket should hear.
async fn record_progress(user: &mut GooseUser) -> TransactionResult {
    let (lesson, percent, socket) = {
        let Some(session) = user.get_session_data::<Session>() else {
            return Ok(());
        };
        let Some(lesson) = session.lessons.get(session.next) else {
            return Ok(()); // the whole course is done
        };
        (lesson.clone(), session.percent + 25, session.socket.clone())
    };
    let watched = socket.as_ref().is_some_and(|socket| socket.expect(&lesson));
    let path = format!("/v1/lessons/{lesson}/progress");
    let response = call(
        user,
        GooseMethod::Put,
        &path,
        "PUT /v1/lessons/{id}/progress",
        Some(json!({"percent": percent})),
    )
    .await?;
    if !response.request.success {
        if let Some(socket) = socket {
            socket.cancel(&lesson);
        }
        return Ok(());
    }
    let plan = plan();
    plan.tally.progress_writes.fetch_add(1, Ordering::Relaxed);
    if watched {
        plan.live.expected.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(session) = user.get_session_data_mut::<Session>() {
        if percent >= 100 {
            session.next += 1;
            session.percent = 0;
        } else {
            session.percent = percent;
        }
    }
    Ok(())
}

async fn my_profile(user: &mut GooseUser) -> TransactionResult {
    call(
        user,
        GooseMethod::Get,
        "/v1/users/me",
        "GET /v1/users/me",
        None,
    )
    .await?;
    Ok(())
}

async fn unread_count(user: &mut GooseUser) -> TransactionResult {
    let path = "/v1/notifications:unreadCount";
    call(
        user,
        GooseMethod::Get,
        path,
        "GET /v1/notifications:unreadCount",
        None,
    )
    .await?;
    Ok(())
}

/// Today's XP, the streak and the 30-day calendar.
async fn my_activity(user: &mut GooseUser) -> TransactionResult {
    call(
        user,
        GooseMethod::Get,
        "/v1/me/activity",
        "GET /v1/me/activity",
        None,
    )
    .await?;
    Ok(())
}

/// The week's global board: the top 50 and the learner's own rank.
async fn leaderboard(user: &mut GooseUser) -> TransactionResult {
    call(
        user,
        GooseMethod::Get,
        "/v1/leaderboards/global?limit=50",
        "GET /v1/leaderboards/global",
        None,
    )
    .await?;
    Ok(())
}

/// What to learn next: continue, ready for, because you took, popular.
async fn recommendations(user: &mut GooseUser) -> TransactionResult {
    call(
        user,
        GooseMethod::Get,
        "/v1/me/recommendations",
        "GET /v1/me/recommendations",
        None,
    )
    .await?;
    Ok(())
}

/// A course page's "learners also took" (public, cached at the edge).
async fn browse_related(user: &mut GooseUser) -> TransactionResult {
    let path = format!("/v1/courses/{}/related", plan().catalog.popular().id);
    send(
        user,
        GooseMethod::Get,
        &path,
        "GET /v1/courses/{id}/related",
        |b| b,
    )
    .await?;
    Ok(())
}

/// What a search box sends while a popular title is typed: the first words of it at
/// three moments (a third, two thirds, all of it), one time in five with two letters
/// of a long word swapped.
pub(crate) fn typed(title: &str, typo: bool, moments: usize) -> Vec<String> {
    let mut words: Vec<String> = title
        .split_whitespace()
        .take(2)
        .map(|w| w.to_lowercase())
        .collect();
    if typo && let Some(word) = words.iter_mut().find(|w| w.is_ascii() && w.len() >= 5) {
        // Swap two letters in the middle of the word.
        let mut letters: Vec<char> = word.chars().collect();
        letters.swap(1, 2);
        *word = letters.into_iter().collect();
    }
    let text = words.join(" ");
    let chars: Vec<char> = text.chars().collect();
    (1..=moments)
        .map(|m| {
            chars[..(chars.len() * m).div_ceil(moments).max(2).min(chars.len())]
                .iter()
                .collect()
        })
        .collect()
}

async fn search_while_typing(user: &mut GooseUser) -> TransactionResult {
    let title = plan().catalog.popular().title.clone();
    for query in typed(&title, rand::random::<u8>().is_multiple_of(5), 3) {
        let path = format!("/v1/search?q={}", query.replace(' ', "%20"));
        send(user, GooseMethod::Get, &path, "GET /v1/search", |b| b).await?;
    }
    Ok(())
}

/// A hint on the current lesson, at one of three levels: learners on the same lesson
/// share the answer, so this is where the AI cache earns its keep.
async fn ask_hint(user: &mut GooseUser) -> TransactionResult {
    let Some(lesson) = current_lesson(user) else {
        return Ok(());
    };
    let level = 1 + rand::random::<u32>() % 3;
    let body = json!({
        "model": "hint",
        // No words of the learner's own: the answer is built from the lesson and shared.
        "messages": [],
        "task": {"kind": "hint", "lesson_id": lesson, "hint_level": level},
    });
    let response = call(
        user,
        GooseMethod::Post,
        "/v1/ai/chat/completions",
        "POST /v1/ai/chat/completions",
        Some(body),
    )
    .await?;
    if let Ok(answer) = &response.response
        && answer.status().is_success()
    {
        let tally = &plan().tally;
        tally.hints.fetch_add(1, Ordering::Relaxed);
        let hit = answer
            .headers()
            .get("x-duovarsity-cache")
            .is_some_and(|v| v == "hit");
        if hit {
            tally.hint_cache_hits.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::typed;

    #[test]
    fn a_title_is_typed_in_three_moments_and_a_typo_swaps_letters_of_a_long_word() {
        assert_eq!(
            typed("Rust Fundamentals", false, 3),
            ["rust f", "rust fundame", "rust fundamentals"]
        );
        assert_eq!(
            typed("Rust Fundamentals", true, 3).last().unwrap(),
            "rust fnudamentals"
        );
        // Short titles still send at least two letters.
        assert_eq!(typed("Go", false, 3), ["go", "go", "go"]);
    }
}
