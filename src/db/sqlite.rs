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
use sea_orm::sqlx::{
    self, ConnectOptions, Connection, Sqlite, SqliteConnection, SqlitePool, Transaction,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::sql::{Row, Rows, Stmt};
use super::{ACQUIRE_TIMEOUT, DbError};
use crate::config::DatabaseSettings;
use crate::readiness::Readiness;

/// How long a write waits for SQLite's lock, and for its turn before that.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Lite {
    pool: SqlitePool,
    /// One writer at a time, in the order they asked (tokio's semaphore is fair).
    writers: Arc<Semaphore>,
}

/// A write transaction with its writer's turn.
pub struct Write {
    tx: Option<Transaction<'static, Sqlite>>,
    _turn: OwnedSemaphorePermit,
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

/// Opens the file once (start-up's check that it can be).
pub(super) async fn open_once(url: &str) -> Result<(), String> {
    let options = options(url).map_err(|e| format!("invalid database URL: {e}"))?;
    let conn = options
        .connect()
        .await
        .map_err(|e| format!("cannot open: {e}"))?;
    conn.close().await.map_err(|e| e.to_string())
}

impl Lite {
    pub fn open(settings: &DatabaseSettings, readiness: Arc<Readiness>) -> Result<Lite, DbError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
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
        Ok(Lite {
            pool,
            writers: Arc::new(Semaphore::new(1)),
        })
    }

    /// The caller's turn, then SQLite's lock at once (`BEGIN IMMEDIATE`): a
    /// transaction that reads first would fail on its first write.
    pub async fn begin_write(&self) -> Result<Write, DbError> {
        let turn = tokio::time::timeout(BUSY_TIMEOUT, Arc::clone(&self.writers).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| DbError::unavailable("no turn to write within the busy timeout"))?;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Write {
            tx: Some(tx),
            _turn: turn,
        })
    }

    /// One statement alone, several in one transaction. None: a ping.
    pub async fn read(&self, stmts: &[Stmt]) -> Result<Vec<Rows>, DbError> {
        let mut conn = self.pool.acquire().await?;
        match stmts {
            [] => Ok(conn.ping().await.map(|()| Vec::new())?),
            [stmt] => Ok(vec![run(&mut conn, stmt).await?]),
            _ => {
                let mut tx = conn.begin().await?;
                let mut results = Vec::with_capacity(stmts.len());
                for stmt in stmts {
                    results.push(run(&mut tx, stmt).await?);
                }
                tx.commit().await?;
                Ok(results)
            }
        }
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

    /// Open and idle connections.
    pub fn status(&self) -> (usize, usize) {
        (self.pool.size() as usize, self.pool.num_idle())
    }
}

impl Write {
    pub async fn batch(&mut self, stmts: &[Stmt], commit: bool) -> Result<Vec<Rows>, DbError> {
        let mut results = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            let tx = self
                .tx
                .as_mut()
                .ok_or_else(|| DbError::bug("a statement after the commit"))?;
            results.push(run(tx, stmt).await?);
        }
        if commit && let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        Ok(results)
    }

    pub async fn rollback(&mut self) -> Result<(), DbError> {
        match self.tx.take() {
            Some(tx) => Ok(tx.rollback().await?),
            None => Ok(()),
        }
    }
}

/// Runs one statement and reads every row (a write's error, such as a full
/// disk, comes with its last step).
async fn run(conn: &mut SqliteConnection, stmt: &Stmt) -> Result<Rows, DbError> {
    let rows = query(stmt).fetch_all(conn).await?;
    Ok(rows.into_iter().map(Row::Sqlite).collect())
}

fn query(stmt: &Stmt) -> sqlx::query::Query<'_, Sqlite, SqlxValues> {
    sqlx::query_with(
        sqlx::AssertSqlSafe(stmt.sql.as_str()),
        SqlxValues(stmt.values.clone()),
    )
}
