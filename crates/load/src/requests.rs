//! What every scenario's transactions share: the session a signed-in user keeps, requests
//! named after their route and put on the timeline, and signing in.

use goose::goose::GooseResponse;
use goose::prelude::*;
use serde_json::{Value, json};

use crate::live::Socket;
use crate::plan::plan;

/// What a signed-in user keeps between transactions.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) token: String,
    /// The enrolled course's lessons, worked through in order.
    pub(crate) lessons: Vec<String>,
    pub(crate) next: usize,
    pub(crate) percent: i64,
    pub(crate) socket: Option<Socket>,
    pub(crate) bought: usize,
}

/// Sends a request named after its route, and puts it on the timeline.
pub(crate) async fn send(
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
pub(crate) async fn call(
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
pub(crate) async fn json_of(response: GooseResponse) -> Result<Value, Box<TransactionError>> {
    let answer = response.response?;
    let status = answer.status();
    let body = answer.text().await?;
    if !status.is_success() {
        return Err(format!("{status}: {body}").into());
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}").into())
}

/// This user's gateway.
pub(crate) fn gateway(user: &GooseUser) -> &'static str {
    let hosts = &plan().hosts;
    &hosts[user.weighted_users_index % hosts.len()]
}

pub(crate) async fn pick_gateway(user: &mut GooseUser) -> TransactionResult {
    user.set_base_url(gateway(user))
}

pub(crate) async fn sign_in(
    user: &mut GooseUser,
    email: &str,
    password: &str,
) -> TransactionResult {
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

/// Enrolls the signed-in user in `course_id`; a 409 (enrolled, or bought, in an earlier
/// run) counts as success. Says whether the enrollment is new.
pub(crate) async fn enroll(
    user: &mut GooseUser,
    course_id: &str,
) -> Result<bool, Box<TransactionError>> {
    let path = format!("/v1/courses/{course_id}/enrollments");
    let mut response = call(
        user,
        GooseMethod::Post,
        &path,
        "POST /v1/courses/{id}/enrollments",
        Some(json!({})),
    )
    .await?;
    if response.request.status_code == 409 {
        user.set_success(&mut response.request)?;
        return Ok(false);
    }
    Ok(true)
}
