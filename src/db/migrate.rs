//! Migrations, safe when several instances start at once, directly or
//! through a transaction-mode pooler.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectionTrait, Database, DbBackend, DbErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use super::errors::is_sqlite_busy;
use super::pool::options;
use crate::config::{DatabaseSettings, PoolMode};

/// Arbitrary constant key of the PostgreSQL advisory lock that serialises
/// migrations between instances starting at the same time.
const MIGRATION_LOCK_KEY: i64 = 0x746f_646f_5f6d_6967; // "todo_mig"

/// Applies pending migrations over `MIGRATION_DATABASE_URL` (else the main URL).
pub async fn migrate(settings: &DatabaseSettings) -> Result<(), DbErr> {
    retry_sqlite_busy(|| migrate_once(settings)).await
}

async fn migrate_once(settings: &DatabaseSettings) -> Result<(), DbErr> {
    // No statement_timeout: a migration may rewrite a large table.
    let conn = Database::connect(options(
        settings.migration_url(),
        settings.pool_mode,
        1,
        None,
        None,
    ))
    .await?;
    // Behind a transaction-mode pooler, unless migrations have a direct URL.
    let pooled = settings.pool_mode == PoolMode::Transaction && settings.migration_url.is_none();
    let result = match conn.get_database_backend() {
        DbBackend::Postgres => {
            // One transaction holds a transaction-level advisory lock and every
            // migration (PostgreSQL's DDL is transactional): concurrent starters
            // take turns, and it holds through a transaction-mode pooler, which
            // would separate a session-level lock from its unlock.
            async {
                let txn = conn.begin().await?;
                txn.execute_unprepared(&format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                ))
                .await?;
                // SeaORM's statements are named prepared statements, which
                // outlive a transaction on a pooler's server connection: drop
                // any an earlier client left there (their names would clash),
                // and ours before handing it back.
                if pooled {
                    txn.execute_unprepared("DEALLOCATE ALL").await?;
                }
                Migrator::up(&txn, None).await?;
                if pooled {
                    txn.execute_unprepared("DEALLOCATE ALL").await?;
                }
                txn.commit().await
            }
            .await
        }
        // SQLite: one IMMEDIATE transaction takes the write lock for the whole
        // run (SQLite's DDL is transactional too), so a second instance waits,
        // then finds nothing pending.
        _ => {
            async {
                let txn = conn
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?;
                Migrator::up(&txn, None).await?;
                txn.commit().await
            }
            .await
        }
    };
    conn.close().await?;
    result
}

/// Start-up against a SQLite file another process is opening or migrating at
/// the same moment can meet BUSY/LOCKED at once (switching a new file to WAL
/// does not wait out the busy timeout). Such errors are retried with a short
/// backoff, for about 10 s in all; any other error is returned at once.
pub(super) async fn retry_sqlite_busy<T, F, Fut>(mut attempt: F) -> Result<T, DbErr>
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
