//! Ledger rows: transactions and their postings. Balances are sums of postings, so they
//! can never disagree with the history.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::time::now_millis;
use sqlx::{Any, Row, Transaction as SqlTransaction};

use crate::ledger::Transaction;

/// What a ledger transaction is: its `kind` (`capture`, `refund`), the `reference` that
/// makes it unique (the order for a capture, the provider's refund id for a refund), the
/// order it belongs to and its gross amount.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub kind: &'a str,
    pub reference: &'a str,
    pub order_id: &'a str,
    pub amount: i64,
}

/// Writes `transaction` as the `kind` (`capture`, `refund`, …) of `reference` (an order,
/// a refund), in the caller's database transaction. Returns false, writing nothing, if
/// that kind of that reference is already recorded: applying an event twice posts once.
pub async fn record(
    tx: &mut SqlTransaction<'_, Any>,
    entry: &Entry<'_>,
    transaction: &Transaction,
) -> Result<bool, Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let inserted = sqlx::query(
        "INSERT INTO payment_ledger_transactions \
         (id, kind, reference, order_id, amount, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kind, reference) DO NOTHING",
    )
    .bind(&id)
    .bind(entry.kind)
    .bind(entry.reference)
    .bind(entry.order_id)
    .bind(entry.amount)
    .bind(transaction.currency())
    .bind(now_millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    for posting in transaction.postings() {
        sqlx::query(
            "INSERT INTO payment_ledger_postings (transaction_id, account, amount, currency) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(posting.account.to_string())
        .bind(posting.amount)
        .bind(transaction.currency())
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

/// The balance of every account (by its stored name) in `currency`.
pub async fn balances(
    db: &Database,
    currency: &str,
) -> Result<std::collections::BTreeMap<String, i64>, Error> {
    let rows = sqlx::query(
        "SELECT account, CAST(SUM(amount) AS BIGINT) AS balance FROM payment_ledger_postings \
         WHERE currency = $1 GROUP BY account",
    )
    .bind(currency)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("account")?, row.try_get("balance")?)))
        .collect()
}

/// The currencies whose postings do not sum to zero, with their sums: empty, or the
/// ledger is broken.
pub async fn imbalance(db: &Database) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT currency, CAST(SUM(amount) AS BIGINT) AS total FROM payment_ledger_postings \
         GROUP BY currency",
    )
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("currency")?, row.try_get("total")?)))
        .filter(|total: &Result<(String, i64), Error>| !matches!(total, Ok((_, 0))))
        .collect()
}

/// What `instructor` has earned per course (net of refunds), in `currency`: positive
/// amounts the platform owes.
pub async fn instructor_earnings(
    db: &Database,
    instructor: &str,
    currency: &str,
) -> Result<Vec<(String, i64)>, Error> {
    let prefix = format!("instructor_payable:{instructor}:");
    let rows = sqlx::query(
        "SELECT account, CAST(SUM(amount) AS BIGINT) AS balance FROM payment_ledger_postings \
         WHERE currency = $1 AND account LIKE $2 GROUP BY account ORDER BY account",
    )
    .bind(currency)
    .bind(format!("{prefix}%"))
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| {
            let account: String = row.try_get("account")?;
            let balance: i64 = row.try_get("balance")?;
            let course = account
                .strip_prefix(&prefix)
                .unwrap_or_default()
                .to_string();
            Ok((course, -balance))
        })
        .collect()
}

/// The balance of every account in every currency, by account.
pub async fn all_balances(db: &Database) -> Result<Vec<(String, String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT account, currency, CAST(SUM(amount) AS BIGINT) AS balance \
         FROM payment_ledger_postings GROUP BY account, currency ORDER BY account, currency",
    )
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("account")?,
                row.try_get("currency")?,
                row.try_get("balance")?,
            ))
        })
        .collect()
}

/// What a course has earned its instructor, per currency (net of refunds).
pub async fn course_earnings(db: &Database, course_id: &str) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT currency, CAST(SUM(amount) AS BIGINT) AS balance FROM payment_ledger_postings \
         WHERE account LIKE $1 GROUP BY currency ORDER BY currency",
    )
    .bind(format!("instructor_payable:%:{course_id}"))
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| {
            let balance: i64 = row.try_get("balance")?;
            Ok((row.try_get("currency")?, -balance))
        })
        .collect()
}

/// One payment or refund of a learner, read from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    pub id: String,
    pub kind: String,
    pub order_id: String,
    pub course_id: String,
    pub amount: i64,
    pub currency: String,
    pub provider: String,
    pub at: i64,
}

/// A learner's payments and refunds, newest first, after the id `after`.
pub async fn receipts(
    db: &Database,
    learner_id: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<ReceiptRow>, Error> {
    let rows = sqlx::query(
        "SELECT t.id, t.kind, t.order_id, o.course_id, t.amount, t.currency, o.provider, \
         t.created_at FROM payment_ledger_transactions t \
         JOIN payment_orders o ON o.id = t.order_id \
         WHERE o.learner_id = $1 AND ($2 IS NULL OR t.id < $2) ORDER BY t.id DESC LIMIT $3",
    )
    .bind(learner_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReceiptRow {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                order_id: row.try_get("order_id")?,
                course_id: row.try_get("course_id")?,
                amount: row.try_get("amount")?,
                currency: row.try_get("currency")?,
                provider: row.try_get("provider")?,
                at: row.try_get("created_at")?,
            })
        })
        .collect()
}
