//! Admission in front of a connection pool: a bounded queue of requests waiting for a
//! connection. A request that finds the queue full is refused at once (503 `OVERLOADED`
//! with `Retry-After`, see [`crate::Error::Overloaded`]) instead of waiting out the pool's
//! acquire timeout; overload then costs the caller microseconds and the database nothing.
//!
//! The queue is sized from the pool: as many waiters as its connections can serve within
//! its acquire timeout at [`QUERY_BUDGET`] a query (at least [`MIN_WAITERS`]), so a
//! waiter that is let in is served before it would time out, and the rest are refused
//! at once. A permit is held only while waiting for a connection; once one is
//! acquired the pool's own size bounds the work. Refusals are counted in
//! `db_admission_refusals_total{pool}`.
//!
//! Admission is per request, not per query: every gRPC call runs in [`request`] (the
//! server's call layer does it), and once a call was given a connection its later queries
//! wait for the pool without passing the queue again. A call is thus refused before it did
//! anything, never half-way through (after a write, before reading it back).
//!
//! [`Pool`] is an `sqlx::Executor` (as `&AnyPool` is), so stores run queries on it as they
//! would on the pool, and every query and transaction passes the admission.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use futures::TryStreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::any::{Any, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{AnyPool, Describe, Either, Execute, Executor, Transaction};
use tokio::sync::Semaphore;

/// What a query may take on average for the queue to drain in time.
pub const QUERY_BUDGET: std::time::Duration = std::time::Duration::from_millis(10);
/// The smallest queue.
pub const MIN_WAITERS: usize = 32;

tokio::task_local! {
    /// Whether the current request was given a connection already.
    static ADMITTED: Cell<bool>;
}

/// Runs `call` as one request: its first query passes the queue, the rest ride on that.
pub fn request<F: Future>(call: F) -> impl Future<Output = F::Output> {
    ADMITTED.scope(Cell::new(false), call)
}

fn already_admitted() -> bool {
    ADMITTED.try_with(Cell::get).unwrap_or(false)
}

/// Why a query was not admitted: the pool's queue is full.
#[derive(Debug, thiserror::Error)]
#[error("the {pool} connection pool is at capacity ({waiters} requests already waiting)")]
pub struct Overloaded {
    pub pool: &'static str,
    pub waiters: usize,
}

/// Whether `error` is an admission refusal.
pub fn is_overloaded(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<Overloaded>().is_some()),
        _ => false,
    }
}

/// A connection pool behind a bounded queue.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: AnyPool,
    waiting: Arc<Semaphore>,
    waiters: usize,
    name: &'static str,
}

impl Pool {
    /// `inner`, named `name` in errors and metrics, with a queue sized from its
    /// connections and acquire timeout.
    pub fn new(inner: AnyPool, name: &'static str) -> Self {
        let options = inner.options();
        let drained_in_time = options.get_acquire_timeout().as_millis() / QUERY_BUDGET.as_millis()
            * u128::from(options.get_max_connections());
        let waiters = usize::try_from(drained_in_time)
            .unwrap_or(usize::MAX)
            .max(MIN_WAITERS);
        Self {
            inner,
            waiting: Arc::new(Semaphore::new(waiters)),
            waiters,
            name,
        }
    }

    /// The pool itself (migrations, probes, shutdown).
    pub fn inner(&self) -> &AnyPool {
        &self.inner
    }

    fn refused(&self) -> sqlx::Error {
        metrics::counter!("db_admission_refusals_total", "pool" => self.name).increment(1);
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            Overloaded {
                pool: self.name,
                waiters: self.waiters,
            },
        ))
    }

    /// A connection, waiting in the bounded queue (refused at once when it is full).
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        self.admitted(self.inner.acquire()).await
    }

    /// A transaction, admitted like [`Self::acquire`].
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.admitted(self.inner.begin()).await
    }

    /// `wait` (for a connection), in the queue unless this request is in already.
    async fn admitted<T>(
        &self,
        wait: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        if already_admitted() {
            return wait.await;
        }
        let Ok(_waiting) = self.waiting.try_acquire() else {
            return Err(self.refused());
        };
        let connection = wait.await?;
        let _ = ADMITTED.try_with(|admitted| admitted.set(true));
        Ok(connection)
    }
}

impl<'p> Executor<'p> for &'_ Pool {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(async_stream::try_stream! {
            let mut connection = pool.acquire().await?;
            let mut rows = connection.fetch_many(query);
            while let Some(row) = rows.try_next().await? {
                yield row;
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move { pool.acquire().await?.describe(sql).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one SQLite connection.
    async fn one_connection() -> Pool {
        sqlx::any::install_default_drivers();
        let inner = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(1))
            .connect("sqlite::memory:")
            .await
            .unwrap();
        Pool::new(inner, "test")
    }

    /// Fills the queue with waiters (while the connection is held elsewhere).
    async fn fill_queue(pool: &Pool) -> Vec<tokio::task::JoinHandle<Result<(), sqlx::Error>>> {
        let waiters = (0..pool.waiters)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.acquire().await.map(drop) })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waiters
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_frees_as_waiters_are_served() {
        let pool = one_connection().await;
        // One connection, 1 s to acquire, 10 ms a query.
        assert_eq!(pool.waiters, 100);
        let held = pool.acquire().await.unwrap();
        let waiters = fill_queue(&pool).await;
        let refused = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
        assert!(is_overloaded(&refused), "{refused}");
        assert!(matches!(
            crate::Error::from(refused),
            crate::Error::Overloaded { .. }
        ));
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_given_a_connection_is_not_refused_half_way() {
        let pool = one_connection().await;
        let first = request(async {
            sqlx::query("SELECT 1").execute(&pool).await.unwrap();
            // Now the queue fills up behind this request...
            let held = pool.acquire().await.unwrap();
            let _waiters = fill_queue(&pool).await;
            // ...a new request is refused, but this one's next query still waits its turn.
            let newcomer = tokio::spawn({
                let pool = pool.clone();
                request(async move { sqlx::query("SELECT 1").execute(&pool).await })
            });
            assert!(is_overloaded(&newcomer.await.unwrap().unwrap_err()));
            drop(held);
            sqlx::query("SELECT 2").execute(&pool).await.map(drop)
        });
        first.await.unwrap();
    }
}
