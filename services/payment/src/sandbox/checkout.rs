//! The sandbox's hosted checkout page: a person pays or fails an order in a browser (or
//! with curl), and gets what Razorpay Checkout hands a client.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use crate::signature::sign;

use super::*;

/// The answer of a checkout page: HTML for a browser, JSON for `Accept: application/json`.
pub(super) fn page_or_json(
    headers: &HeaderMap,
    title: &str,
    html: String,
    value: Value,
) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        axum::Json(value).into_response()
    } else {
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}}\
             code{{background:#eee;padding:0 .2em}}button{{font-size:1.1em;margin-right:1em}}</style>\
             </head><body><p><strong>Razorpay sandbox</strong> (test mode: no money moves)</p>{html}</body></html>"
        ))
        .into_response()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) async fn checkout_page(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    let books = sandbox.books();
    let Some(order) = books.orders.get(&order_id) else {
        return (StatusCode::NOT_FOUND, Html("No such order in the sandbox.")).into_response();
    };
    let paid = order
        .payments
        .iter()
        .any(|id| books.payments.get(id).is_some_and(|p| p.status != "failed"));
    let amount = format!(
        "{}.{:02} {}",
        order.amount / 100,
        order.amount % 100,
        order.currency
    );
    let id = escape(&order_id);
    let html = if paid {
        format!("<h1>Order {id}</h1><p>This order is paid.</p>")
    } else {
        format!(
            "<h1>Pay {amount}</h1><p>Order <code>{id}</code> (receipt <code>{}</code>), \
             created at {}.</p>\
             <form method=\"post\" action=\"{CHECKOUT_PAGE}{id}/pay\" style=\"display:inline\">\
             <button>Pay {amount}</button></form>\
             <form method=\"post\" action=\"{CHECKOUT_PAGE}{id}/fail\" style=\"display:inline\">\
             <button>Fail the payment</button></form>",
            escape(&order.receipt),
            order.created_at
        )
    };
    page_or_json(
        &headers,
        "Sandbox checkout",
        html,
        json!({"order_id": order_id, "amount": order.amount, "currency": order.currency, "paid": paid}),
    )
}

pub(super) async fn pay(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    let payment = match sandbox.attempt(&order_id, true) {
        Ok(payment) => payment,
        Err((status, description)) => return refusal(status, description),
    };
    // What Razorpay Checkout hands the client: the signature binds the order and payment.
    let signature = sign(
        sandbox.inner.key_secret.expose().as_bytes(),
        format!("{order_id}|{}", payment.id).as_bytes(),
    );
    let html = format!(
        "<h1>Paid</h1><p>The payment went through; the platform hears of it by webhook and \
         unlocks the course in a moment.</p><ul>\
         <li>razorpay_payment_id: <code>{}</code></li>\
         <li>razorpay_order_id: <code>{}</code></li>\
         <li>razorpay_signature: <code>{signature}</code></li></ul>",
        escape(&payment.id),
        escape(&order_id)
    );
    page_or_json(
        &headers,
        "Paid",
        html,
        json!({
            "razorpay_payment_id": payment.id,
            "razorpay_order_id": order_id,
            "razorpay_signature": signature,
        }),
    )
}

pub(super) async fn fail(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    let payment = match sandbox.attempt(&order_id, false) {
        Ok(payment) => payment,
        Err((status, description)) => return refusal(status, description),
    };
    let html = format!(
        "<h1>Payment failed</h1><p>Payment <code>{}</code> failed. The order stays open: \
         <a href=\"{CHECKOUT_PAGE}{}\">try again</a>.</p>",
        escape(&payment.id),
        escape(&order_id)
    );
    page_or_json(
        &headers,
        "Payment failed",
        html,
        json!({"error": {"code": "BAD_REQUEST_ERROR", "description": "Payment failed", "metadata": {"payment_id": payment.id, "order_id": order_id}}}),
    )
}
