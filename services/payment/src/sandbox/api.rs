//! The sandbox's Razorpay API, in Razorpay's wire format and basic auth: orders, their
//! payments, refunds.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;

pub(super) async fn create_order(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    axum::Json(order): axum::Json<NewOrder>,
) -> Response {
    if !sandbox.authorized(&headers) {
        return refusal(StatusCode::UNAUTHORIZED, "Authentication failed");
    }
    if order.amount < 100 {
        return refusal(
            StatusCode::BAD_REQUEST,
            "The amount must be atleast INR 1.00",
        );
    }
    if order.currency.len() != 3 || !order.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return refusal(StatusCode::BAD_REQUEST, "The currency provided is invalid");
    }
    let id = new_id("order");
    let created_at = unix_now();
    let body = json!({
        "id": id,
        "entity": "order",
        "amount": order.amount,
        "amount_paid": 0,
        "amount_due": order.amount,
        "currency": order.currency,
        "receipt": order.receipt,
        "status": "created",
        "attempts": 0,
        "created_at": created_at,
    });
    sandbox.books().orders.insert(
        id,
        SandboxOrder {
            amount: order.amount,
            currency: order.currency,
            receipt: order.receipt,
            created_at,
            payments: Vec::new(),
        },
    );
    axum::Json(body).into_response()
}

pub(super) async fn order_payments(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    if !sandbox.authorized(&headers) {
        return refusal(StatusCode::UNAUTHORIZED, "Authentication failed");
    }
    let books = sandbox.books();
    let Some(order) = books.orders.get(&order_id) else {
        return refusal(StatusCode::BAD_REQUEST, "The id provided does not exist");
    };
    let items: Vec<Value> = order
        .payments
        .iter()
        .filter_map(|id| books.payments.get(id))
        .map(SandboxPayment::entity)
        .collect();
    axum::Json(json!({"entity": "collection", "count": items.len(), "items": items}))
        .into_response()
}

pub(super) async fn refund(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
    axum::Json(request): axum::Json<NewRefund>,
) -> Response {
    if !sandbox.authorized(&headers) {
        return refusal(StatusCode::UNAUTHORIZED, "Authentication failed");
    }
    let (payment, refund) = {
        let mut books = sandbox.books();
        let Some(payment) = books.payments.get_mut(&payment_id) else {
            return refusal(StatusCode::BAD_REQUEST, "The id provided does not exist");
        };
        if payment.status != "captured" && payment.status != "refunded" {
            return refusal(StatusCode::BAD_REQUEST, "The payment has not been captured");
        }
        let left = payment.amount - payment.refunded;
        let amount = request.amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return refusal(
                StatusCode::BAD_REQUEST,
                "The refund amount provided is greater than amount captured",
            );
        }
        payment.refunded += amount;
        if payment.refunded == payment.amount {
            payment.status = "refunded";
        }
        let refund = json!({
            "id": new_id("rfnd"),
            "entity": "refund",
            "amount": amount,
            "currency": payment.currency,
            "payment_id": payment.id,
            "status": "processed",
            "created_at": unix_now(),
        });
        (payment.clone(), refund)
    };
    sandbox.announce(
        "refund.processed",
        json!({"refund": {"entity": refund}, "payment": {"entity": payment.entity()}}),
    );
    axum::Json(refund).into_response()
}
