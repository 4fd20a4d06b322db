//! Database connection pool, migrations and error classification.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx;
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    DbErr, RuntimeErr, Statement,
};

/// Arbitrary constant key of the PostgreSQL advisory lock that serialises
/// migrations between instances starting at the same time.
const MIGRATION_LOCK_KEY: i64 = 0x746f_646f_5f6d_6967; // "todo_mig"

/// Opens the connection pool. Connecting is lazy per connection, but the first
/// one is made here so a wrong URL fails at start-up, not on the first request.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    retry_sqlite_busy(|| Database::connect(options(url, max_connections))).await
}

/// Start-up against a SQLite file another process is opening or migrating at
/// the same moment can meet BUSY/LOCKED at once (switching a new file to WAL
/// does not wait out the busy timeout). Such errors are retried with a short
/// backoff, for about 10 s in all; any other error is returned at once.
async fn retry_sqlite_busy<T, F, Fut>(mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut tries: u64 = 0;
    loop {
        match attempt().await {
            Err(err) if tries < 40 && is_sqlite_busy(&err) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25 * tries.min(20))).await;
            }
            other => return other,
        }
    }
}

fn is_sqlite_busy(err: &DbErr) -> bool {
    matches!(sqlx_error(err), Some(sqlx::Error::Database(db))
        if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() && is_sqlite_busy_code(db.code().as_deref()))
}

fn options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(0)
        // Short: a request waiting for a dead database answers 503 quickly.
        .connect_timeout(Duration::from_secs(3))
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        // Statement logging would put user data in the logs.
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            // WAL lets readers run beside the single writer; a busy writer waits
            // instead of failing.
            o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .with_regexp()
        });
    opts
}

/// Applies pending migrations. On PostgreSQL an advisory lock makes concurrent
/// starters take turns, so two instances on an empty database both come up.
pub async fn migrate(url: &str) -> Result<(), DbErr> {
    retry_sqlite_busy(|| migrate_once(url)).await
}

async fn migrate_once(url: &str) -> Result<(), DbErr> {
    // A pool of one connection: the lock, the migrations and the unlock share
    // one session, which is what a session-level advisory lock requires.
    let conn = Database::connect(options(url, 1)).await?;
    let result = match conn.get_database_backend() {
        DbBackend::Postgres => {
            let lock = |sql: &str| {
                Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    [MIGRATION_LOCK_KEY.into()],
                )
            };
            conn.execute_raw(lock("SELECT pg_advisory_lock($1)"))
                .await?;
            let migrated = Migrator::up(&conn, None).await;
            conn.execute_raw(lock("SELECT pg_advisory_unlock($1)"))
                .await?;
            migrated
        }
        // SQLite has no advisory lock and migrates without a transaction: two
        // instances on a new file may both apply a version, and the second to
        // record it fails. Nothing left pending means the other one did the work.
        _ => match Migrator::up(&conn, None).await {
            Err(err)
                if Migrator::get_pending_migrations(&conn)
                    .await
                    .is_ok_and(|p| p.is_empty()) =>
            {
                tracing::info!(error = %err, "another instance applied the migrations");
                Ok(())
            }
            other => other,
        },
    };
    conn.close().await?;
    result
}

/// True when the error means "the database cannot be reached right now"
/// (answered with 503 and a retry hint) rather than a bug (500).
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            true
        }
        DbErr::Conn(_) => true,
        _ => sqlx_error(err).is_some_and(sqlx_unavailable),
    }
}

/// The sqlx error under a SeaORM connection, execution or query error.
fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// SQLite's primary result codes 5 (BUSY) and 6 (LOCKED).
fn is_sqlite_busy_code(code: Option<&str>) -> bool {
    matches!(code, Some("5" | "6"))
}

fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // PostgreSQL: 08xxx connection exception, 57P0x server shutting down,
            // 53xxx insufficient resources. SQLite: BUSY, LOCKED.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || is_sqlite_busy_code(Some(code))
        }
        _ => false,
    }
}
