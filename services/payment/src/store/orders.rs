//! Order rows and the provider events already applied.

use duovarsity_common::Error;
use duovarsity_common::db::now_millis;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::state::OrderState;

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: String,
    pub learner_id: String,
    pub course_id: String,
    pub instructor_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub instructor_share_bps: u32,
    pub provider: String,
    pub provider_order_id: Option<String>,
    pub state: OrderState,
    pub payment_id: Option<String>,
    pub captured_minor: i64,
    pub refunded_minor: i64,
}

const COLUMNS: &str = "id, learner_id, course_id, instructor_id, amount_minor, currency, \
     instructor_share_bps, provider, provider_order_id, state, payment_id, captured_minor, \
     refunded_minor";

fn from_row(row: &AnyRow) -> Result<OrderRow, Error> {
    let state: String = row.try_get("state")?;
    let share: i32 = row.try_get("instructor_share_bps")?;
    Ok(OrderRow {
        id: row.try_get("id")?,
        learner_id: row.try_get("learner_id")?,
        course_id: row.try_get("course_id")?,
        instructor_id: row.try_get("instructor_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        instructor_share_bps: u32::try_from(share)
            .map_err(|_| Error::internal("a stored order", &format!("share {share}")))?,
        provider: row.try_get("provider")?,
        provider_order_id: row.try_get("provider_order_id")?,
        state: state
            .parse()
            .map_err(|error| Error::internal("a stored order", &error))?,
        payment_id: row.try_get("payment_id")?,
        captured_minor: row.try_get("captured_minor")?,
        refunded_minor: row.try_get("refunded_minor")?,
    })
}

pub async fn insert(tx: &mut Transaction<'_, Any>, order: &OrderRow) -> Result<(), Error> {
    let now = now_millis();
    sqlx::query(&format!(
        "INSERT INTO payment_orders ({COLUMNS}, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)"
    ))
    .bind(&order.id)
    .bind(&order.learner_id)
    .bind(&order.course_id)
    .bind(&order.instructor_id)
    .bind(order.amount_minor)
    .bind(&order.currency)
    .bind(i32::try_from(order.instructor_share_bps).unwrap_or(i32::MAX))
    .bind(&order.provider)
    .bind(&order.provider_order_id)
    .bind(order.state.as_str())
    .bind(&order.payment_id)
    .bind(order.captured_minor)
    .bind(order.refunded_minor)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn by_provider_order(
    tx: &mut Transaction<'_, Any>,
    provider: &str,
    provider_order_id: &str,
) -> Result<Option<OrderRow>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE provider = $1 AND provider_order_id = $2"
    ))
    .bind(provider)
    .bind(provider_order_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes `next` over `order` only if the stored state is still `order.state` (compare
/// and set): says whether it did.
pub async fn advance(
    tx: &mut Transaction<'_, Any>,
    order: &OrderRow,
    next: &OrderRow,
) -> Result<bool, Error> {
    let changed = sqlx::query(
        "UPDATE payment_orders SET state = $1, payment_id = $2, captured_minor = $3, \
         refunded_minor = $4, updated_at = $5 WHERE id = $6 AND state = $7",
    )
    .bind(next.state.as_str())
    .bind(&next.payment_id)
    .bind(next.captured_minor)
    .bind(next.refunded_minor)
    .bind(now_millis())
    .bind(&order.id)
    .bind(order.state.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Records a provider event as applied; false if it already was.
pub async fn remember_event(
    tx: &mut Transaction<'_, Any>,
    provider: &str,
    event_id: &str,
) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO payment_provider_events (provider, event_id, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(provider)
    .bind(event_id)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
