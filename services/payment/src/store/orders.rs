//! Order rows and the provider events already applied.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::time::now_millis;
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
    /// None while the provider's order is being created.
    pub provider_order_id: Option<String>,
    pub client_secret: Option<String>,
    pub state: OrderState,
    pub payment_id: Option<String>,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub captured_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, learner_id, course_id, instructor_id, amount_minor, currency, \
     instructor_share_bps, provider, provider_order_id, client_secret, state, payment_id, \
     captured_minor, refunded_minor, captured_at, created_at, updated_at";

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
        client_secret: row.try_get("client_secret")?,
        state: state
            .parse()
            .map_err(|error| Error::internal("a stored order", &error))?,
        payment_id: row.try_get("payment_id")?,
        captured_minor: row.try_get("captured_minor")?,
        refunded_minor: row.try_get("refunded_minor")?,
        captured_at: row.try_get("captured_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn share(order: &OrderRow) -> i32 {
    i32::try_from(order.instructor_share_bps).unwrap_or(i32::MAX)
}

/// Inserts `order` unless the learner already has an open order for the course (the
/// partial unique index decides, atomically across replicas): says whether it did.
pub async fn insert(tx: &mut Transaction<'_, Any>, order: &OrderRow) -> Result<bool, Error> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO payment_orders ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(&order.id)
    .bind(&order.learner_id)
    .bind(&order.course_id)
    .bind(&order.instructor_id)
    .bind(order.amount_minor)
    .bind(&order.currency)
    .bind(share(order))
    .bind(&order.provider)
    .bind(&order.provider_order_id)
    .bind(&order.client_secret)
    .bind(order.state.as_str())
    .bind(&order.payment_id)
    .bind(order.captured_minor)
    .bind(order.refunded_minor)
    .bind(order.captured_at)
    .bind(order.created_at)
    .bind(order.updated_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Records the provider's order of an order that had none yet.
pub async fn attach_provider_order(
    db: &Database,
    id: &str,
    provider_order_id: &str,
    client_secret: Option<&str>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE payment_orders SET provider_order_id = $1, client_secret = $2, updated_at = $3 \
         WHERE id = $4 AND provider_order_id IS NULL",
    )
    .bind(provider_order_id)
    .bind(client_secret)
    .bind(now_millis())
    .bind(id)
    .execute(db.writer())
    .await?;
    Ok(())
}

/// Deletes orders whose provider order was never created (the provider refused or was
/// down, or the process died in between), made before `before`: nobody can pay them.
pub async fn delete_unstarted(db: &Database, id: Option<&str>, before: i64) -> Result<u64, Error> {
    let deleted = sqlx::query(
        "DELETE FROM payment_orders WHERE provider_order_id IS NULL AND created_at < $1 \
         AND ($2 IS NULL OR id = $2)",
    )
    .bind(before)
    .bind(id)
    .execute(db.writer())
    .await?
    .rows_affected();
    Ok(deleted)
}

pub async fn by_id(db: &Database, id: &str) -> Result<Option<OrderRow>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db.writer())
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The learner's open order for a course, if any.
pub async fn open_for(
    db: &Database,
    learner_id: &str,
    course_id: &str,
) -> Result<Option<OrderRow>, Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE learner_id = $1 AND course_id = $2 \
         AND state IN ('created', 'failed', 'authorized')"
    ))
    .bind(learner_id)
    .bind(course_id)
    .fetch_optional(db.writer())
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// A learner's orders, newest first, after the id `after` (a page token).
pub async fn of_learner(
    db: &Database,
    learner_id: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<OrderRow>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE learner_id = $1 \
         AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(learner_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Open orders with a provider order, unchanged since `before`, oldest first: what the
/// reconciliation job asks the provider about.
pub async fn unsettled(db: &Database, before: i64, limit: u32) -> Result<Vec<OrderRow>, Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE state IN ('created', 'failed', 'authorized') \
         AND provider_order_id IS NOT NULL AND updated_at < $1 ORDER BY updated_at LIMIT $2"
    ))
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(db.writer())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Orders per state.
pub async fn count_by_state(db: &Database) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM payment_orders GROUP BY state")
        .fetch_all(db.reader())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
        .collect()
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
         refunded_minor = $4, captured_at = $5, updated_at = $6 WHERE id = $7 AND state = $8 \
         AND refunded_minor = $9",
    )
    .bind(next.state.as_str())
    .bind(&next.payment_id)
    .bind(next.captured_minor)
    .bind(next.refunded_minor)
    .bind(next.captured_at)
    .bind(now_millis())
    .bind(&order.id)
    .bind(order.state.as_str())
    .bind(order.refunded_minor)
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
