//! SQLite: sqlx's pool, this process's writers taking turns.
//!
//! SQLite has one writer at a time; the others wait in its busy handler,
//! which sleeps in growing steps (up to 100 ms) and wakes them in no order.
//! So this process's writers queue on a fair semaphore, and ask for SQLite's
//! lock (`BEGIN IMMEDIATE`) when their turn comes; the busy handler is left
//! to other processes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::sqlx::{self, Connection, Sqlite, SqliteConnection, SqlitePool};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Semaphore;

use super::sql::{Row, Rows, Stmt};
use super::{ACQUIRE_TIMEOUT, DbError};
use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// How long a write waits for SQLite's lock, and for its turn before that.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Lite {
    pub pool: SqlitePool,
    /// One writer at a time, in the order they asked (tokio's semaphore is fair).
    writers: Arc<Semaphore>,
}

fn options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    // WAL: readers run beside the writer. FULL: a commit is on disk before
    // it is acknowledged. A row buffer of 1,024: a page of 1,000 is read
    // ahead in one go. REGEXP: Unicode case-insensitive search.
    Ok(SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .row_buffer_size(1024)
        .with_regexp())
}

impl Lite {
    pub fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Lite, DbError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            // A local file does not drop connections: no ping before use.
            .test_before_acquire(false)
            // Not given back as it is: a connection still inside a
            // transaction (SQLite rolls back by itself when a COMMIT fails on
            // a full disk, and sqlx still counts it open), nor any while
            // writes fail (SQLite opened the unwritable file read-only).
            .after_release(move |conn, _| {
                let writes_failing = readiness.writes_failing();
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction() && !writes_failing)
                })
            })
            .connect_lazy_with(options(settings.url())?);
        let writers = Arc::new(Semaphore::new(1));
        Ok(Lite { pool, writers })
    }

    /// A read: one statement alone, several in one transaction. A write:
    /// its turn, then SQLite's lock at once (`BEGIN IMMEDIATE`: a
    /// transaction that reads first would fail on its first write).
    pub async fn run(&self, stmts: &[Stmt], write: bool) -> Result<Vec<Rows>, DbError> {
        let mut _turn = None;
        if write {
            let turn = Arc::clone(&self.writers).acquire_owned();
            let turn = tokio::time::timeout(BUSY_TIMEOUT, turn).await.ok();
            let no_turn = || DbError::unavailable("no turn to write within the busy timeout");
            _turn = Some(turn.and_then(Result::ok).ok_or_else(no_turn)?);
        }
        let mut conn = self.pool.acquire().await?;
        if stmts.len() == 1 && !write {
            return run(&mut conn, stmts).await;
        }
        let mut tx = conn
            .begin_with(if write { "BEGIN IMMEDIATE" } else { "BEGIN" })
            .await?;
        let results = run(&mut tx, stmts).await?;
        tx.commit().await?;
        Ok(results)
    }

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
}

/// Runs the statements in order, each read to its last row (a write's
/// error, such as a full disk, comes with its last step).
async fn run(conn: &mut SqliteConnection, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
    let mut results = Vec::with_capacity(stmts.len());
    for stmt in stmts {
        let rows = query(stmt).fetch_all(&mut *conn).await?;
        results.push(rows.into_iter().map(Row::Sqlite).collect());
    }
    Ok(results)
}

fn query(stmt: &Stmt) -> sqlx::query::Query<'_, Sqlite, SqlxValues> {
    sqlx::query_with(
        sqlx::AssertSqlSafe(stmt.sql.as_str()),
        SqlxValues(stmt.values.clone()),
    )
}
