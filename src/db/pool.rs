//! Connection options for each database and pool mode.

use std::time::Duration;

use std::sync::Arc;

use sea_orm::sqlx;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::{DatabaseSettings, PoolMode};
use crate::readiness::Readiness;

/// Rows a SQLite connection's worker thread may read ahead of the request
/// that consumes them (sqlx's default is 50). sqlx hands every row over a
/// channel; at 50 the worker blocks and is woken again every few rows of a
/// long list, two thread switches per hand-off. A page is at most 1,000 rows
/// (a few hundred KiB), so a whole page fits; an unbounded listing still
/// waits for its reader beyond that.
const SQLITE_ROW_BUFFER: usize = 1024;

/// A request waiting for a connection to a dead database answers 503 this soon.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a SQLite write waits for the write lock (SQLite's busy timeout,
/// and this process's queue of writers: see `writers`).
pub(super) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The serving pool: connects lazily, bounded statements.
pub(super) async fn open(
    settings: &DatabaseSettings,
    readiness: Arc<Readiness>,
) -> Result<DatabaseConnection, DbErr> {
    let mut opts = options(
        &settings.url,
        settings.pool_mode,
        settings.max_connections,
        Some(settings.statement_timeout),
        Some(readiness),
    );
    opts.connect_lazy(true);
    // SeaORM asks SQLite for its version even on a lazy pool: a file another
    // instance is creating may be locked for a moment.
    super::migrate::retry_sqlite_busy(|| Database::connect(opts.clone())).await
}

/// Options for `url`. `statement_timeout` is set per session in session mode;
/// a transaction-mode pooler would hand that session state to other clients,
/// so there each unit of work sets it with `SET LOCAL` instead (see `Db::unit`).
pub(super) fn options(
    url: &str,
    pool_mode: PoolMode,
    max_connections: u32,
    statement_timeout: Option<Duration>,
    readiness: Option<Arc<Readiness>>,
) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Duration::from_secs(300))
        // sqlx pings every connection when it comes back to the pool (on
        // PostgreSQL only those `leases` does not keep); pinging it again
        // when it is taken out would cost every request a round trip. Only
        // connections idle long enough for a proxy or the server to have
        // dropped them are pinged.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        // Statement logging would put user data in the logs.
        .sqlx_logging(false)
        // SQLite rolls a transaction back by itself when its COMMIT fails
        // (disk full, I/O error); sqlx's ROLLBACK then fails and its count of
        // open transactions stays at one, so the next "BEGIN" on that
        // connection would be a SAVEPOINT inside nothing, and its "commit" a
        // RELEASE that acknowledges writes no one ever commits. A connection
        // that comes back still counting a transaction is closed instead.
        //
        // And while writes fail (see `Db::observe_write`), connections are not
        // kept: SQLite opens an unwritable file read-only and a handle stays
        // so, so once the file is writable again only a new connection can write.
        .map_sqlx_sqlite_pool_opts(move |o| {
            let readiness = readiness.clone();
            o.after_release(move |conn, _| {
                let writes_failing = readiness.as_ref().is_some_and(|r| r.writes_failing());
                Box::pin(async move {
                    // Queued behind any rollback still pending for this connection.
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
        })
        .map_sqlx_sqlite_opts(|o| {
            // WAL lets readers run beside the single writer; a busy writer waits
            // instead of failing. FULL: a commit is on disk before it is
            // acknowledged, so it also survives an OS crash or power loss.
            o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .row_buffer_size(SQLITE_ROW_BUFFER)
                .with_regexp()
        });
    match pool_mode {
        PoolMode::Transaction => {
            // No named prepared statements (PgBouncer before 1.21 cannot route
            // them), and no start-up parameter PgBouncer refuses by default.
            opts.map_sqlx_postgres_opts(|o| o.statement_cache_capacity(0).extra_float_digits(None));
        }
        PoolMode::Session => {
            if let Some(timeout) = statement_timeout {
                let set = format!("SET statement_timeout = {}", timeout.as_millis());
                opts.map_sqlx_postgres_pool_opts(move |o| {
                    let set = set.clone();
                    o.after_connect(move |conn, _| {
                        let set = set.clone();
                        Box::pin(async move {
                            sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(set))
                                .await
                                .map(|_| ())
                        })
                    })
                });
            }
        }
    }
    opts
}
