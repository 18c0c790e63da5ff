//! Budget counters in the database (PostgreSQL without Redis): one row per scope and day,
//! moved by conditional updates in one transaction, so a reservation takes both counters
//! or neither.

use duovarsity_common::Error;
use duovarsity_common::db::Database;

/// Adds `amount` to (scope, day) if the result stays within `limit`: whether it did.
async fn add_within(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    scope: &str,
    day: i64,
    amount: i64,
    limit: i64,
) -> Result<bool, Error> {
    sqlx::query(
        "INSERT INTO ai_budget_spend (scope, day, spent_nano) VALUES ($1, $2, 0) \
         ON CONFLICT (scope, day) DO NOTHING",
    )
    .bind(scope)
    .bind(day)
    .execute(&mut **tx)
    .await?;
    let changed = sqlx::query(
        "UPDATE ai_budget_spend SET spent_nano = spent_nano + $1 \
         WHERE scope = $2 AND day = $3 AND spent_nano + $1 <= $4",
    )
    .bind(amount)
    .bind(scope)
    .bind(day)
    .bind(limit)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Adds `amount` to each of `scopes` for `day` if every one stays within its limit, in
/// one transaction: `None` when it did, or the index of the first scope that refused (and
/// nothing was added).
pub async fn reserve(
    db: &Database,
    scopes: [(&str, i64); 2],
    day: i64,
    amount: i64,
) -> Result<Option<usize>, Error> {
    let mut tx = db.writer().begin().await?;
    for (index, (scope, limit)) in scopes.into_iter().enumerate() {
        if !add_within(&mut tx, scope, day, amount, limit).await? {
            return Ok(Some(index));
        }
    }
    tx.commit().await?;
    Ok(None)
}

/// Moves each of `scopes` for `day` by `delta`.
pub async fn adjust(db: &Database, scopes: [&str; 2], day: i64, delta: i64) -> Result<(), Error> {
    let mut tx = db.writer().begin().await?;
    for scope in scopes {
        sqlx::query(
            "UPDATE ai_budget_spend SET spent_nano = spent_nano + $1 WHERE scope = $2 AND day = $3",
        )
        .bind(delta)
        .bind(scope)
        .bind(day)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What `scope` has spent on `day`.
pub async fn spent(db: &Database, scope: &str, day: i64) -> Result<i64, Error> {
    let spent: Option<i64> =
        sqlx::query_scalar("SELECT spent_nano FROM ai_budget_spend WHERE scope = $1 AND day = $2")
            .bind(scope)
            .bind(day)
            .fetch_optional(db.writer())
            .await?;
    Ok(spent.unwrap_or(0))
}
