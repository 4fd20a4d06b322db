//! Migrations (sea-orm-migration), safe when several instances start at
//! once, directly or through a transaction-mode pooler.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DbBackend, DbErr, RuntimeErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait, sqlx,
};

use super::errors::is_sqlite_busy;
use crate::config::{DatabaseSettings, PoolMode};

/// Arbitrary constant key of the PostgreSQL advisory lock that serialises
/// migrations between instances starting at the same time.
const MIGRATION_LOCK_KEY: i64 = 0x746f_646f_5f6d_6967; // "todo_mig"

/// Applies pending migrations over `MIGRATION_DATABASE_URL` (else the main URL).
pub async fn migrate(settings: &DatabaseSettings) -> Result<(), DbErr> {
    retry_sqlite_busy(|| migrate_once(settings)).await
}

async fn migrate_once(settings: &DatabaseSettings) -> Result<(), DbErr> {
    let url = settings.migration_url();
    let mut options = ConnectOptions::new(without_channel_binding(url));
    options
        .max_connections(1)
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5));
    // Behind a transaction-mode pooler (no direct URL for migrations): no
    // start-up parameter PgBouncer refuses, no statement cache.
    let pooled = settings.pool_mode == PoolMode::Transaction && settings.migration_url.is_none();
    if pooled {
        options.map_sqlx_postgres_opts(|o| o.statement_cache_capacity(0).extra_float_digits(None));
    }
    let conn = Database::connect(options).await?;
    let result = async {
        let txn = match conn.get_database_backend() {
            // SQLite: one IMMEDIATE transaction takes the write lock for the
            // whole run, so a second instance waits, then finds nothing to do.
            DbBackend::Sqlite => {
                conn.begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await?
            }
            // PostgreSQL: one transaction holds a transaction-level advisory
            // lock (it holds through a pooler, which would separate a
            // session-level lock from its unlock) and every migration (DDL
            // is transactional): instances starting at once take turns.
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
        // named statements outlive a transaction on a pooler's server
        // connection: drop any an earlier client left there, and ours.
        if pooled {
            txn.execute_unprepared("DEALLOCATE ALL").await?;
        }
        Migrator::up(&txn, None).await?;
        if pooled {
            txn.execute_unprepared("DEALLOCATE ALL").await?;
        }
        txn.commit().await
    }
    .await;
    conn.close().await?;
    result
}

/// sqlx has no channel binding and logs every parameter it does not know;
/// the TLS settings it does know (`sslmode`, `sslrootcert`) are kept.
fn without_channel_binding(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.query_pairs().any(|(k, _)| k == "channel_binding") => {
            let kept: Vec<(String, String)> = parsed
                .query_pairs()
                .filter(|(k, _)| k != "channel_binding")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(kept);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Start-up against a SQLite file another process is opening or migrating
/// at the same moment can meet BUSY/LOCKED at once (switching a new file to
/// WAL does not wait out the busy timeout): retried for about 10 s.
async fn retry_sqlite_busy<T, F, Fut>(mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
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

/// A migration's error in words: the database's message, hint and code
/// (not sqlx's " at line N" of PostgreSQL's C source, nor SeaORM's prefix),
/// and for a missing privilege what to do about it.
pub(super) fn describe(err: &DbErr) -> String {
    let sqlx_err = match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(&**e),
        _ => None,
    };
    let Some(sqlx::Error::Database(db)) = sqlx_err else {
        return err.to_string();
    };
    let mut text = db.message().to_owned();
    let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    if let Some(hint) = postgres.and_then(|pg| pg.hint()) {
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
