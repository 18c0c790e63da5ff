//! The analytics service's SQL over sqlx `Any`, and nothing else: batch loads and writes for
//! the consumer ([`ingest`]), reads for activity and leaderboards ([`learners`]) and for
//! dashboards ([`dashboards`]).

pub mod changes;
pub mod dashboards;
pub mod ingest;
pub mod learners;

use duovarsity_common::db::Migrations;
use duovarsity_common::events::consumer::batch::placeholders;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

/// Events this service has applied (the idempotent consumer's table).
pub const PROCESSED_TABLE: &str = "analytics_processed_events";

/// The service's schema (version range 7000).
pub fn migrations() -> Migrations {
    Migrations::portable(sqlx::migrate!("./migrations")).with_applied_events(PROCESSED_TABLE, 7002)
}

/// Each row decoded as `T` (the reads' one shape).
pub fn each<T>(
    rows: &[AnyRow],
    decode: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, duovarsity_common::Error> {
    Ok(rows
        .iter()
        .map(decode)
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Rows per multi-row statement (well under every backend's parameter limit).
const CHUNK: usize = 200;

/// A value of a multi-row statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Text(String),
    Int(i64),
    /// An absent integer (NULL).
    None,
}

impl From<&str> for Val {
    fn from(text: &str) -> Self {
        Val::Text(text.to_string())
    }
}

impl From<String> for Val {
    fn from(text: String) -> Self {
        Val::Text(text)
    }
}

impl From<i64> for Val {
    fn from(value: i64) -> Self {
        Val::Int(value)
    }
}

impl From<Option<i64>> for Val {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Val::None, Val::Int)
    }
}

type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

fn bind(query: Query<'_>, value: Val) -> Query<'_> {
    match value {
        Val::Text(text) => query.bind(text),
        Val::Int(number) => query.bind(number),
        Val::None => query.bind(None::<i64>),
    }
}

/// `head VALUES (...), (...) tail` for every row, in chunks. Rows must all have the width
/// of the column list in `head`, and (for upserts) distinct keys.
pub async fn insert_rows(
    tx: &mut Transaction<'_, Any>,
    head: &str,
    tail: &str,
    rows: Vec<Vec<Val>>,
) -> Result<(), sqlx::Error> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(());
    };
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Val>> = rows.by_ref().take(CHUNK).collect();
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(i * width + 1, width)))
            .collect();
        let sql = format!("{head} VALUES {} {tail}", tuples.join(", "));
        let mut query = sqlx::query(&sql);
        for value in chunk.into_iter().flatten() {
            query = bind(query, value);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The rows of `sql` (which ends in `IN (` and is closed here) for each chunk of `keys`,
/// after the `fixed` leading parameters. A key of one value is `$n`, a longer one a row
/// value `($n, $n+1)` (the prefix then names the columns as a row: `(a, b) IN (`).
pub async fn select_in(
    tx: &mut Transaction<'_, Any>,
    sql: &str,
    fixed: &[Val],
    keys: &[Vec<String>],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut rows = Vec::new();
    let width = keys.first().map_or(1, Vec::len);
    for chunk in keys.chunks(CHUNK) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| {
                let list = placeholders(fixed.len() + i * width + 1, width);
                if width == 1 {
                    list
                } else {
                    format!("({list})")
                }
            })
            .collect();
        let statement = format!("{sql}{})", tuples.join(", "));
        let mut query = sqlx::query(&statement);
        for value in fixed {
            query = bind(query, value.clone());
        }
        for value in chunk.iter().flatten() {
            query = query.bind(value.clone());
        }
        rows.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(rows)
}

/// The rows of `sql` (which ends in `IN (` and is closed here) for each chunk of `ids`,
/// read outside a transaction.
pub async fn read_in(
    db: &duovarsity_common::db::Database,
    sql: &str,
    ids: &[String],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let statement = format!("{sql}{})", placeholders(1, chunk.len()));
        let mut query = sqlx::query(&statement);
        for id in chunk {
            query = query.bind(id);
        }
        rows.extend(query.fetch_all(db.reader()).await?);
    }
    Ok(rows)
}
