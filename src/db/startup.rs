//! Start-up: reach the database (it may be late: Neon's compute wakes in a few
//! seconds), migrate, check that writes can be stored, then report ready.
//! The server listens meanwhile, answering 503 on `/api` and `/health/ready`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};

use super::Db;
use super::errors::{describe as describe_db_err, describe_sqlx};
use super::migrate::migrate;
use crate::config::{DatabaseSettings, PoolMode, redact_url};

/// Longest single connection attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest single attempt, however little of `DB_STARTUP_TIMEOUT` is left.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot reach the database ({url}) within {:.1} s: {cause}", waited.as_secs_f64())]
    Unreachable {
        url: String,
        cause: String,
        waited: Duration,
    },
    #[error("cannot migrate the database ({url}): {}", describe_migration_failure(.source))]
    Migration {
        url: String,
        #[source]
        source: sea_orm::DbErr,
    },
    #[error(
        "the database role \"{role}\" of {url} lacks privileges on the service's tables or functions: {missing}; \
         as their owner (the role of MIGRATION_DATABASE_URL), grant them, e.g. \
         `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO \"{role}\"` \
         and `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO \"{role}\"`"
    )]
    Privileges {
        url: String,
        role: String,
        schema: String,
        missing: String,
    },
}

/// Waits for the database, migrates, probes a write, and marks `db` ready.
/// A failing probe does not stop start-up: the instance serves reads and
/// reports not ready until writes succeed.
pub async fn start(settings: &DatabaseSettings, db: &Db) -> Result<(), StartupError> {
    reach_and_migrate(settings).await?;
    check_privileges(settings, db).await?;
    if let Err(err) = db.probe_write().await {
        db.observe_write(&Err::<(), sea_orm::DbErr>(err), |e| Some(e));
    }
    db.readiness().mark_started();
    tracing::info!(database = %redact_url(&settings.url), "database ready");
    Ok(())
}

/// Stops start-up when the role of `DATABASE_URL` may not use the tables.
///
/// Why: with migrations run by another role (`MIGRATION_DATABASE_URL`, the
/// tables' owner), the serving role has no privilege on the new tables
/// unless someone granted it. The instance used to report itself ready
/// (`/health/ready` 200) and answer every request 500 ("permission denied
/// for table tasks"), so a load balancer sent it traffic. A missing
/// privilege is a configuration error, as in a migration: start-up fails
/// and says which privileges are missing and how to grant them. An error
/// of the check itself (e.g. the database went away) is only logged: the
/// probe write and readiness cover that.
async fn check_privileges(settings: &DatabaseSettings, db: &Db) -> Result<(), StartupError> {
    match db.missing_privileges().await {
        Ok(None) => Ok(()),
        Ok(Some((role, schema, missing))) => Err(StartupError::Privileges {
            url: redact_url(&settings.url),
            role,
            schema,
            missing,
        }),
        Err(err) => {
            tracing::warn!(error = %describe_db_err(&err), "could not check the database role's privileges");
            Ok(())
        }
    }
}

/// Waits for the database (see below), then applies pending migrations.
pub async fn reach_and_migrate(settings: &DatabaseSettings) -> Result<(), StartupError> {
    wait_until_reachable(settings, settings.migration_url()).await?;
    if settings.migration_url() != settings.url {
        wait_until_reachable(settings, &settings.url).await?;
    }
    migrate(settings)
        .await
        .map_err(|source| StartupError::Migration {
            url: redact_url(settings.migration_url()),
            source,
        })
}

/// Connects once, directly (not through the pool, which reports only "timed
/// out"), retrying with backoff until `DB_STARTUP_TIMEOUT`, and logs the real
/// cause of each failure.
async fn wait_until_reachable(settings: &DatabaseSettings, url: &str) -> Result<(), StartupError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        // An attempt ends with `DB_STARTUP_TIMEOUT`: a server that accepts and
        // never answers (a black-holed address, a pooler waiting for its own
        // server) used to hold each attempt 5 s whatever the setting, so a
        // 1 s timeout gave up after 5.
        let limit = ATTEMPT_TIMEOUT.min(
            settings
                .startup_timeout
                .saturating_sub(started.elapsed())
                .max(MIN_ATTEMPT_TIMEOUT),
        );
        let cause = match tokio::time::timeout(limit, connect_once(url, settings.pool_mode)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => describe(&err),
            Err(_) => format!("no answer within {:.1} s", limit.as_secs_f64()),
        };
        let waited = started.elapsed();
        // A SQLite file that cannot be opened will not open later either.
        if url.starts_with("sqlite:") || waited + backoff > settings.startup_timeout {
            return Err(StartupError::Unreachable {
                url: redact_url(url),
                cause,
                waited,
            });
        }
        tracing::warn!(database = %redact_url(url), attempt, %cause, retry_in = ?backoff, "database not reachable yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}

async fn connect_once(url: &str, pool_mode: PoolMode) -> Result<(), sqlx::Error> {
    if url.starts_with("sqlite:") {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        return opts.connect().await?.close().await;
    }
    let mut opts = sqlx::postgres::PgConnectOptions::from_str(url)?;
    if pool_mode == PoolMode::Transaction {
        opts = opts.extra_float_digits(None);
    }
    opts.connect().await?.close().await
}

/// Why migrations failed, and for a missing privilege what to do about it.
fn describe_migration_failure(err: &sea_orm::DbErr) -> String {
    let text = describe_db_err(err);
    let insufficient_privilege = matches!(
        super::errors::sqlx_error(err),
        Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42501")
    );
    if insufficient_privilege {
        format!(
            "{text}; the role lacks a privilege the migrations need (to create tables in the schema, \
             or to alter tables it does not own): run them as the tables' owner with MIGRATION_DATABASE_URL, \
             or `GRANT CREATE ON SCHEMA public TO <role>` (since PostgreSQL 15 not every role has it)"
        )
    } else {
        text
    }
}

/// The cause of a failed connection, named in words an operator searches for.
fn describe(err: &sqlx::Error) -> String {
    let kind = match err {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused"
        }
        sqlx::Error::Io(io) if io.to_string().contains("lookup") => "unknown host (DNS)",
        // A failed handshake (an untrusted or mismatched certificate under
        // `sslmode=verify-full`, an alert from the server) comes as an I/O
        // error around rustls' own; it used to be called a "network error".
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            "TLS error"
        }
        sqlx::Error::Io(_) => "network error",
        sqlx::Error::Tls(_) => "TLS error",
        sqlx::Error::Configuration(_) => "invalid database URL",
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01" | "28000") => "authentication failed",
            Some("3D000") => "no such database",
            Some(c) if c.starts_with("57P") => "the database is starting up or shutting down",
            _ => "the database refused the connection",
        },
        _ => "connection failed",
    };
    format!("{kind}: {}", describe_sqlx(err))
}
