//! The scenarios of a learner's day, weighted as goose users:
//!
//! - anonymous browsing: the catalog, course pages and free lessons, by Zipf popularity;
//! - a learner session: sign in once, enroll in a popular free course, keep a WebSocket
//!   open, read lessons, record progress forward, look at the profile and the inbox, and
//!   now and then ask the AI tutor for a hint;
//! - a purchase: enroll in a paid course, check out, pay in the Razorpay sandbox, and wait
//!   for the webhook to capture the order;
//! - instructor authoring (rare): a draft course with a section, a lesson and its text.
//!
//! Each goose user signs in as its own load-test learner (`learner-<user index>`), so a
//! session's socket hears only its own changes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use goose::goose::GooseResponse;
use goose::prelude::*;
use serde_json::{Value, json};

use crate::catalog::Course;
use crate::live::Socket;
use crate::plan::plan;

/// The email of load-test learner `i`, as `duovarsity seed --learners N` creates them.
pub fn learner_email(i: usize) -> String {
    format!("learner-{i}@load.duovarsity.test")
}

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
            .set_wait_time(min, max)?,
        scenario!("LearnerSession")
            .set_weight(35)?
            .register_transaction(transaction!(start_session).set_on_start())
            .register_transaction(transaction!(read_lesson).set_weight(6)?)
            .register_transaction(transaction!(record_progress).set_weight(3)?)
            .register_transaction(transaction!(my_profile).set_weight(2)?)
            .register_transaction(transaction!(unread_count).set_weight(1)?)
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
    ])
}

/// What a signed-in user keeps between transactions.
#[derive(Clone)]
struct Session {
    token: String,
    /// The enrolled course's lessons, worked through in order.
    lessons: Vec<String>,
    next: usize,
    percent: i64,
    socket: Option<Socket>,
    bought: usize,
}

/// Sends a request named after its route, and puts it on the timeline.
async fn send(
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    build: impl FnOnce(reqwest13::RequestBuilder) -> reqwest13::RequestBuilder,
) -> Result<GooseResponse, Box<TransactionError>> {
    let builder = build(user.get_request_builder(&method, path)?);
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let response = user.request(request).await?;
    plan().timeline.record(
        response.request.elapsed,
        response.request.response_time,
        response.request.success,
    );
    Ok(response)
}

/// A signed-in request with a JSON body (or none).
async fn call(
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    body: Option<Value>,
) -> Result<GooseResponse, Box<TransactionError>> {
    let token = user
        .get_session_data::<Session>()
        .map(|s| s.token.clone())
        .unwrap_or_default();
    send(user, method, path, name, |builder| {
        let builder = builder.bearer_auth(token);
        match body {
            Some(body) => builder.json(&body),
            None => builder,
        }
    })
    .await
}

/// The JSON of a successful answer, or the transaction fails with what came back.
async fn json_of(response: GooseResponse) -> Result<Value, Box<TransactionError>> {
    let answer = response.response?;
    let status = answer.status();
    let body = answer.text().await?;
    if !status.is_success() {
        return Err(format!("{status}: {body}").into());
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}").into())
}

/// This user's gateway.
fn gateway(user: &GooseUser) -> &'static str {
    let hosts = &plan().hosts;
    &hosts[user.weighted_users_index % hosts.len()]
}

async fn pick_gateway(user: &mut GooseUser) -> TransactionResult {
    user.set_base_url(gateway(user))
}

async fn sign_in(user: &mut GooseUser, email: &str, password: &str) -> TransactionResult {
    pick_gateway(user).await?;
    let body = json!({"email": email, "password": password});
    let response = send(
        user,
        GooseMethod::Post,
        "/v1/auth/login",
        "POST /v1/auth/login",
        |b| b.json(&body),
    )
    .await?;
    let tokens = json_of(response).await?;
    let token = tokens["accessToken"]
        .as_str()
        .ok_or("no accessToken in the login answer")?
        .to_string();
    user.set_session_data(Session {
        token,
        lessons: Vec::new(),
        next: 0,
        percent: 0,
        socket: None,
        bought: 0,
    });
    Ok(())
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
    let path = format!("/v1/courses/{}/enrollments", course.id);
    let mut response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/enrollments",
        Some(json!({})),
    )
    .await?;
    // Enrolled in an earlier run: that is where the learner continues.
    if response.request.status_code == 409 {
        user.set_success(&mut response.request)?;
    }
    let ws_base = gateway(user)
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let socket = user
        .get_session_data::<Session>()
        .map(|s| Socket::open(&ws_base, &s.token, &plan.live));
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

async fn sign_in_buyer(user: &mut GooseUser) -> TransactionResult {
    let email = learner_email(user.weighted_users_index);
    sign_in(user, &email, &plan().learner_password).await
}

/// The next paid course this buyer has not bought: enroll (pending payment), check out
/// with an Idempotency-Key, pay on the sandbox's page, and wait for the capture.
async fn buy_course(user: &mut GooseUser) -> TransactionResult {
    let bought = user.get_session_data::<Session>().map_or(0, |s| s.bought);
    let Some(course) = plan().catalog.paid().nth(bought) else {
        return my_orders(user).await;
    };
    if let Some(session) = user.get_session_data_mut::<Session>() {
        session.bought += 1;
    }
    let path = format!("/v1/courses/{}/enrollments", course.id);
    let mut enrolled = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/enrollments",
        Some(json!({})),
    )
    .await?;
    if enrolled.request.status_code == 409 {
        // Enrolled (or bought) in an earlier run.
        user.set_success(&mut enrolled.request)?;
        return Ok(());
    }
    let key = format!("load-{}-{}", user.weighted_users_index, course.id);
    let token = user
        .get_session_data::<Session>()
        .map(|s| s.token.clone())
        .unwrap_or_default();
    let path = format!("/v1/courses/{}/checkout", course.id);
    let response = send(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/checkout",
        |b| {
            b.bearer_auth(token)
                .header("idempotency-key", key)
                .json(&json!({}))
        },
    )
    .await?;
    let order = json_of(response).await?;
    let order_id = order["id"].as_str().ok_or("no order id")?.to_string();
    if order["state"] == "ORDER_STATE_CAPTURED" {
        return Ok(()); // paid in an earlier run: the Idempotency-Key gave back its order
    }
    let page = order["payWith"]["razorpay"]["checkoutUrl"]
        .as_str()
        .ok_or("no sandbox checkout page (is the payment provider the sandbox?)")?;
    let pay = format!("{page}/pay");
    send(
        user,
        GooseMethod::Post,
        &pay,
        "POST /sandbox/checkout/{id}/pay",
        |b| b.header("accept", "application/json"),
    )
    .await?;
    // The sandbox's webhook captures the order; the learner's page polls for it.
    let path = format!("/v1/orders/{order_id}");
    for _ in 0..50 {
        let response = call(user, GooseMethod::Get, &path, "GET /v1/orders/{id}", None).await?;
        if let Ok(order) = json_of(response).await
            && order["state"] == "ORDER_STATE_CAPTURED"
        {
            plan().tally.purchases.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    plan()
        .tally
        .purchases_not_captured
        .fetch_add(1, Ordering::Relaxed);
    Err(format!("order {order_id} not captured within 5 s").into())
}

async fn my_orders(user: &mut GooseUser) -> TransactionResult {
    call(
        user,
        GooseMethod::Get,
        "/v1/me/orders",
        "GET /v1/me/orders",
        None,
    )
    .await?;
    Ok(())
}

async fn sign_in_instructor(user: &mut GooseUser) -> TransactionResult {
    let (email, password) = &plan().instructor;
    sign_in(user, email, password).await
}

/// A draft course with one section, one lesson and its text; left unpublished, so the
/// catalog the other scenarios read stays as it was.
async fn author_course(user: &mut GooseUser) -> TransactionResult {
    let slug = format!("load-{}", uuid::Uuid::now_v7().simple());
    let course = json!({"slug": slug, "title": "A load-test draft", "summary": "Written by the load test.", "level": "LEVEL_BEGINNER", "language": "en"});
    let response = call(
        user,
        GooseMethod::Post,
        "/v1/courses",
        "POST /v1/courses",
        Some(course),
    )
    .await?;
    let course_id = json_of(response).await?["id"]
        .as_str()
        .ok_or("no course id")?
        .to_string();
    let path = format!("/v1/courses/{course_id}/sections");
    let response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/sections",
        Some(json!({"title": "Getting started"})),
    )
    .await?;
    let section_id = json_of(response).await?["id"]
        .as_str()
        .ok_or("no section id")?
        .to_string();
    let path = format!("/v1/sections/{section_id}/lessons");
    let lesson = json!({"title": "First steps", "kind": "LESSON_KIND_TEXT", "estimatedMinutes": 10, "required": true});
    let response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/sections/{id}/lessons",
        Some(lesson),
    )
    .await?;
    let lesson_id = json_of(response).await?["id"]
        .as_str()
        .ok_or("no lesson id")?
        .to_string();
    let path = format!("/v1/lessons/{lesson_id}/draft");
    let draft = json!({"markdown": "# First steps\n\nA lesson written under load.\n"});
    call(
        user,
        GooseMethod::Put,
        &path,
        "PUT /v1/lessons/{id}/draft",
        Some(draft),
    )
    .await?;
    Ok(())
}
