//! The one place where payment rows become protobuf.

use duovarsity_common::Error;
use duovarsity_common::time::timestamp_from_millis;
use duovarsity_proto::course::Money;
use duovarsity_proto::payment::payment_instructions::Provider as Instructions;
use duovarsity_proto::payment::{
    Order, OrderState as ProtoState, PaymentInstructions, RazorpayCheckout, Receipt, ReceiptKind,
    StripeCheckout,
};

use crate::providers::Providers;
use crate::state::OrderState;
use crate::store::ledger::ReceiptRow;
use crate::store::orders::OrderRow;

pub fn money(currency: &str, amount_minor: i64) -> Money {
    Money {
        currency: currency.to_string(),
        amount_minor,
    }
}

fn state(state: OrderState) -> ProtoState {
    match state {
        OrderState::Created => ProtoState::Created,
        OrderState::Failed => ProtoState::Failed,
        OrderState::Authorized => ProtoState::Authorized,
        OrderState::Captured => ProtoState::Captured,
        OrderState::PartiallyRefunded => ProtoState::PartiallyRefunded,
        OrderState::Refunded => ProtoState::Refunded,
        OrderState::Expired => ProtoState::Expired,
    }
}

/// How to pay the order, while it can be paid.
fn instructions(order: &OrderRow, providers: &Providers) -> Option<PaymentInstructions> {
    let payable = matches!(order.state, OrderState::Created | OrderState::Failed);
    let provider_order_id = order.provider_order_id.clone().filter(|_| payable)?;
    let provider = match order.provider.as_str() {
        "razorpay" => {
            let keys = providers.razorpay.as_ref()?;
            Instructions::Razorpay(RazorpayCheckout {
                key_id: keys.key_id.clone(),
                checkout_url: keys
                    .checkout_page
                    .as_ref()
                    .map(|page| format!("{page}{provider_order_id}"))
                    .unwrap_or_default(),
                order_id: provider_order_id,
            })
        }
        "stripe" => Instructions::Stripe(StripeCheckout {
            payment_intent_id: provider_order_id,
            client_secret: order.client_secret.clone().unwrap_or_default(),
        }),
        _ => return None,
    };
    Some(PaymentInstructions {
        provider: Some(provider),
    })
}

/// The order as its learner sees it; `refund_window_ms` after capture it may be refunded.
pub fn order_to_proto(order: &OrderRow, providers: &Providers, refund_window_ms: i64) -> Order {
    Order {
        id: order.id.clone(),
        course_id: order.course_id.clone(),
        learner_id: order.learner_id.clone(),
        amount: Some(money(&order.currency, order.amount_minor)),
        state: state(order.state) as i32,
        provider: order.provider.clone(),
        provider_order_id: order.provider_order_id.clone().unwrap_or_default(),
        pay_with: instructions(order, providers),
        captured_minor: order.captured_minor,
        refunded_minor: order.refunded_minor,
        created_at: Some(timestamp_from_millis(order.created_at)),
        updated_at: Some(timestamp_from_millis(order.updated_at)),
        captured_at: order.captured_at.map(timestamp_from_millis),
        refundable_until: order
            .captured_at
            .map(|at| timestamp_from_millis(at.saturating_add(refund_window_ms))),
    }
}

pub fn receipt_to_proto(row: &ReceiptRow) -> Result<Receipt, Error> {
    let kind = match row.kind.as_str() {
        "capture" => ReceiptKind::Payment,
        "refund" => ReceiptKind::Refund,
        other => {
            return Err(Error::internal(
                "a stored ledger transaction",
                &format!("kind {other:?}"),
            ));
        }
    };
    Ok(Receipt {
        id: row.id.clone(),
        kind: kind as i32,
        order_id: row.order_id.clone(),
        course_id: row.course_id.clone(),
        amount: Some(money(&row.currency, row.amount)),
        provider: row.provider.clone(),
        at: Some(timestamp_from_millis(row.at)),
    })
}
