//! Ledger rows: transactions and their postings. Balances are sums of postings, so they
//! can never disagree with the history.

use duovarsity_common::Error;
use duovarsity_common::db::{Database, now_millis};
use sqlx::{Any, Row, Transaction as SqlTransaction};

use crate::ledger::Transaction;

/// Writes `transaction` as the `kind` (`capture`, `refund`, …) of `reference` (an order,
/// a refund), in the caller's database transaction. Returns false, writing nothing, if
/// that kind of that reference is already recorded: applying an event twice posts once.
pub async fn record(
    tx: &mut SqlTransaction<'_, Any>,
    kind: &str,
    reference: &str,
    transaction: &Transaction,
) -> Result<bool, Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let inserted = sqlx::query(
        "INSERT INTO payment_ledger_transactions (id, kind, reference, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, reference) DO NOTHING",
    )
    .bind(&id)
    .bind(kind)
    .bind(reference)
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
