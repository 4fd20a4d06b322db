//! Applying the migrations, safely when several instances start at once,
//! directly or through a transaction-mode pooler.

use std::time::Duration;

use sea_orm_migration::MigratorTrait;
use sea_orm_migration::sea_orm::{
    self, ConnectOptions, ConnectionTrait, Database, DbBackend, DbErr, RuntimeErr,
    TransactionTrait, sqlx,
};

use crate::Migrator;

/// The advisory lock that makes instances starting at once take turns.
const MIGRATION_LOCK_KEY: i64 = 0x746f_646f_5f6d_6967; // "todo_mig"

/// Applies pending migrations at `url`; `pooled`: through a
/// transaction-mode pooler. A new SQLite file another process is opening
/// at the same moment answers BUSY at once (switching to WAL does not
/// wait): retried for about 10 s.
pub async fn run(url: &str, pooled: bool) -> Result<(), DbErr> {
    let mut tries: u64 = 0;
    loop {
        match run_once(url, pooled).await {
            Err(err) if tries < 40 && sqlite_busy(&err) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25 * tries.min(20))).await;
            }
            other => return other,
        }
    }
}

async fn run_once(url: &str, pooled: bool) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    // Behind a pooler: nothing PgBouncer refuses, no statement cache.
    if pooled {
        options.map_sqlx_postgres_opts(|o| o.statement_cache_capacity(0).extra_float_digits(None));
    }
    let conn = Database::connect(options).await?;
    let result = async {
        // One transaction: SQLite takes its write lock for the whole run
        // (IMMEDIATE); PostgreSQL holds a transaction-level advisory lock
        // (a pooler would separate a session lock from its unlock). DDL is
        // transactional on both, so a second instance waits, then finds
        // nothing to do.
        let txn = match conn.get_database_backend() {
            DbBackend::Sqlite => {
                let mode = Some(sea_orm::SqliteTransactionMode::Immediate);
                let options = sea_orm::TransactionOptions {
                    sqlite_transaction_mode: mode,
                    ..Default::default()
                };
                conn.begin_with_options(options).await?
            }
            _ => {
                let txn = conn.begin().await?;
                txn.execute_unprepared(&format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                ))
                .await?;
                txn
            }
        };
        // sqlx names the migrator's statements even without a cache, and
        // they would outlive the transaction on a pooler's server connection.
        if pooled {
            txn.execute_unprepared("DEALLOCATE ALL").await?;
        }
        Migrator::up(&txn, None).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(crate::request_role::ENSURE).await?;
        }
        if pooled {
            txn.execute_unprepared("DEALLOCATE ALL").await?;
        }
        txn.commit().await
    }
    .await;
    conn.close().await?;
    result
}

fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// SQLite's BUSY or LOCKED (the low byte of an extended result code).
fn sqlite_busy(err: &DbErr) -> bool {
    matches!(sqlx_error(err), Some(sqlx::Error::Database(db))
        if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
            && matches!(db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff), Some(5 | 6)))
}

/// A migration's error in words: the database's message, hint and code
/// (not sqlx's " at line N" of PostgreSQL's C source, nor SeaORM's prefix),
/// and for a missing privilege what to do about it.
pub fn describe(err: &DbErr) -> String {
    let Some(sqlx::Error::Database(db)) = sqlx_error(err) else {
        return err.to_string();
    };
    let mut text = db.message().to_owned();
    let hint = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.hint());
    if let Some(hint) = hint {
        text.push_str(&format!(" (hint: {hint})"));
    }
    if let Some(code) = db.code() {
        text.push_str(&format!(" [SQLSTATE {code}]"));
    }
    if db.code().as_deref() == Some("42501") {
        text.push_str(
            "; the role lacks a privilege the migrations need (to create tables in the schema, \
             or to alter tables it does not own): run them as the tables' owner with \
             MIGRATION_DATABASE_URL, or `GRANT CREATE ON SCHEMA public TO <role>` (since \
             PostgreSQL 15 not every role has it)",
        );
    }
    text
}
