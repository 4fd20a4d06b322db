//! SQLite: sqlx's pool, with this process's writers taking turns.
//!
//! SQLite has one writer at a time; the others wait in its busy handler,
//! which sleeps in growing steps (up to 100 ms) and wakes them in no order.
//! Writers of this process therefore queue on a fair semaphore first and
//! ask SQLite for its lock (`BEGIN IMMEDIATE`) only when their turn comes;
//! the busy handler is left to writers of other processes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::sqlx::{self, Sqlite, SqliteConnection, SqlitePool};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::sql::{Row, Rows, Stmt};
use super::{ACQUIRE_TIMEOUT, DbError};
use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// How long a write waits for SQLite's lock (its busy timeout), and for its
/// turn among this process's writers.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows a connection's worker thread may read ahead of the request that
/// consumes them (sqlx's default, 50, makes it wait every few rows of a
/// long list); a page of 1,000 fits.
const ROW_BUFFER: usize = 1024;

pub(super) struct Lite {
    pool: SqlitePool,
    /// One writer at a time, in the order they asked (tokio's semaphore is fair).
    writers: Arc<Semaphore>,
}

/// A writer's turn, held until its transaction ended.
pub(super) type Turn = OwnedSemaphorePermit;

impl Lite {
    pub fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Lite, DbError> {
        let options = SqliteConnectOptions::from_str(&settings.url)
            .map_err(DbError::from)?
            // WAL lets readers run beside the writer. FULL: a commit is on
            // disk before it is acknowledged (it survives an OS crash).
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .row_buffer_size(ROW_BUFFER)
            // Unicode case-insensitive search (the store's `q`).
            .with_regexp();
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            // A connection is not given back as it is when it is still inside
            // a transaction (SQLite rolls back by itself when a COMMIT fails
            // on a full disk, and sqlx still counts it open), nor while writes
            // fail: SQLite opened an unwritable file read-only, and only a
            // new connection can write once it is writable again.
            .after_release(move |conn, _| {
                let writes_failing = readiness.writes_failing();
                Box::pin(async move {
                    sqlx::Connection::ping(conn).await?;
                    let clean = !sqlx::Connection::is_in_transaction(conn);
                    if !clean {
                        tracing::warn!(
                            "closing a SQLite connection left inside a failed transaction"
                        );
                    }
                    Ok(clean && !writes_failing)
                })
            })
            .connect_lazy_with(options);
        Ok(Lite {
            pool,
            writers: Arc::new(Semaphore::new(1)),
        })
    }

    /// The caller's turn to write; past the busy timeout, unavailable (503).
    pub async fn turn(&self) -> Result<Turn, DbError> {
        match tokio::time::timeout(BUSY_TIMEOUT, Arc::clone(&self.writers).acquire_owned()).await {
            Ok(Ok(turn)) => Ok(turn),
            _ => Err(DbError::unavailable(
                "no turn to write within the busy timeout",
            )),
        }
    }

    /// A write transaction: SQLite's lock is taken at once (`BEGIN
    /// IMMEDIATE`), so it waits its turn instead of failing on its first write.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, DbError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Reads: one statement on its own, several in one transaction (one snapshot).
    pub async fn read(&self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        if let [stmt] = stmts {
            let mut conn = self.pool.acquire().await?;
            return Ok(vec![run(&mut conn, stmt).await?]);
        }
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            results.push(run(&mut tx, stmt).await?);
        }
        tx.commit().await?;
        Ok(results)
    }

    /// The rows of `stmt` as they arrive.
    pub fn stream(&self, stmt: Stmt) -> impl Stream<Item = Result<Row, DbError>> + Send + use<> {
        let pool = self.pool.clone();
        async_stream::try_stream! {
            let mut conn = pool.acquire().await?;
            let mut rows = query(&stmt).fetch(&mut *conn);
            while let Some(row) = rows.next().await {
                yield Row::Sqlite(row?);
            }
        }
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await?;
        Ok(sqlx::Connection::ping(&mut *conn).await?)
    }

    /// Open and idle connections.
    pub fn status(&self) -> (usize, usize) {
        (self.pool.size() as usize, self.pool.num_idle())
    }
}

/// Runs one statement and reads every row (a write's error, such as a full
/// disk, comes with its last step).
pub(super) async fn run(conn: &mut SqliteConnection, stmt: &Stmt) -> Result<Rows, DbError> {
    Ok(query(stmt)
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(Row::Sqlite)
        .collect())
}

fn query(stmt: &Stmt) -> sqlx::query::Query<'_, Sqlite, SqlxValues> {
    sqlx::query_with(
        sqlx::AssertSqlSafe(stmt.sql.as_str()),
        SqlxValues(stmt.values.clone()),
    )
}
