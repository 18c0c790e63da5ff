//! The purchase scenario: enroll in a paid course, check out, pay in the Razorpay
//! sandbox, and wait for the webhook to capture the order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use goose::prelude::*;
use serde_json::json;

use crate::plan::plan;

use crate::plan::learner_email;
use crate::requests::*;

pub(crate) async fn sign_in_buyer(user: &mut GooseUser) -> TransactionResult {
    let email = learner_email(user.weighted_users_index);
    sign_in(user, &email, &plan().learner_password).await
}

/// The next paid course this buyer has not bought: enroll (pending payment), check out
/// with an Idempotency-Key, pay on the sandbox's page, and wait for the capture.
pub(crate) async fn buy_course(user: &mut GooseUser) -> TransactionResult {
    let bought = user.get_session_data::<Session>().map_or(0, |s| s.bought);
    let Some(course) = plan().catalog.paid().nth(bought) else {
        return my_orders(user).await;
    };
    if let Some(session) = user.get_session_data_mut::<Session>() {
        session.bought += 1;
    }
    if !enroll(user, &course.id).await? {
        // Enrolled (or bought) in an earlier run.
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

pub(crate) async fn my_orders(user: &mut GooseUser) -> TransactionResult {
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
