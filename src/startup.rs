//! Start-up: reach the database (it may be late: Neon's compute wakes in a
//! few seconds), migrate, check the serving role's privileges, check that
//! writes can be stored, then report ready. The server listens meanwhile,
//! answering 503 on `/api` and `/health/ready`.

use std::time::{Duration, Instant};

use crate::config::{DatabaseSettings, PoolMode, Switch, redact_url};
use crate::db::{Db, DbError, Dialect};
pub use crate::row_security::Unenforced;
use crate::tls;

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
    #[error(
        "the database server's certificate does not verify ({url}): {cause}; give the certificate \
         authority that signed it as a PEM file with sslrootcert=/path/to/ca.pem in the URL \
         (sslrootcert=system: the system's roots), or a host name it is valid for"
    )]
    Certificate { url: String, cause: String },
    #[error("cannot migrate the database ({url}): {cause}")]
    Migration { url: String, cause: String },
    #[error(
        "the database role \"{role}\" of {url} lacks privileges on the service's tables: {missing}; \
         as their owner (the role of MIGRATION_DATABASE_URL), grant them, e.g. \
         `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO \"{role}\"`"
    )]
    Privileges {
        url: String,
        role: String,
        schema: String,
        missing: String,
    },
    #[error(transparent)]
    RowSecurity(#[from] Unenforced),
}

/// Waits for the database, migrates, checks privileges, probes a write, and
/// marks `db` ready. A failing probe does not stop start-up: the instance
/// serves reads and reports not ready until writes succeed.
pub async fn start(settings: &DatabaseSettings, db: &Db) -> Result<(), StartupError> {
    reach_and_migrate(settings).await?;
    check_privileges(settings, db).await?;
    crate::row_security::check(settings, db).await?;
    if let Err(err) = crate::store::probe_write(db).await {
        tracing::warn!(error = %err, "a first write could not be stored");
    }
    db.readiness().mark_started();
    tracing::info!(database = %redact_url(settings.url()), "database ready");
    Ok(())
}

/// Waits for the database (see below), then applies pending migrations.
pub async fn reach_and_migrate(settings: &DatabaseSettings) -> Result<(), StartupError> {
    wait_until_reachable(settings, settings.migration_url()).await?;
    if settings.migration_url() != settings.url() {
        wait_until_reachable(settings, settings.url()).await?;
    }
    // Through a transaction-mode pooler, unless migrations have a direct URL.
    let pooled = settings.pool_mode == PoolMode::Transaction && !settings.has_migration_url();
    let failed = |cause: String| StartupError::Migration {
        url: redact_url(settings.migration_url()),
        cause,
    };
    let url = tls::for_sqlx(settings.migration_url()).map_err(failed)?;
    migration::run(&url, pooled)
        .await
        .map_err(|err| failed(migration::describe(&err)))
}

/// Stops start-up when the serving role may not do its work on the tables:
/// the requests' (with row-level security off; on, they run as the request
/// role, see `row_security`), and its own (the purge, the probe).
///
/// Why: with migrations run by another role (`MIGRATION_DATABASE_URL`, the
/// tables' owner), the serving role has no privilege on new tables unless
/// someone granted it; the instance would report ready and answer every
/// request 500. An error of the check itself (the database went away) is
/// only logged: the probe write and readiness cover that.
async fn check_privileges(settings: &DatabaseSettings, db: &Db) -> Result<(), StartupError> {
    if db.dialect() != Dialect::Postgres {
        return Ok(());
    }
    // Each table with what is done to it (an upsert needs SELECT too).
    let needed = match settings.db_row_level_security {
        Switch::Off => {
            "('tasks', 'SELECT,INSERT,UPDATE,DELETE'), ('task_lists', 'SELECT,INSERT,UPDATE,DELETE'), \
             ('task_tombstones', 'SELECT,INSERT,UPDATE,DELETE'), \
             ('idempotency_keys', 'SELECT,INSERT,UPDATE,DELETE'), ('service_probe', 'SELECT,INSERT,UPDATE')"
        }
        // The purges (keys, tombstones) and the probe: the service's own work.
        Switch::On => {
            "('idempotency_keys', 'SELECT,DELETE'), ('task_tombstones', 'SELECT,DELETE'), \
             ('service_probe', 'SELECT,INSERT,UPDATE')"
        }
    };
    let sql = format!(
        "SELECT current_user::text, current_schema()::text, \
                string_agg(t.name || ' (' || p.missing || ')', ', ' ORDER BY t.name) \
         FROM (VALUES {needed}) AS t(name, privileges) \
         CROSS JOIN LATERAL ( \
             SELECT string_agg(q.privilege, ', ' ORDER BY q.n) AS missing \
             FROM unnest(string_to_array(t.privileges, ',')) WITH ORDINALITY AS q(privilege, n) \
             WHERE NOT has_table_privilege(t.name, q.privilege)) AS p \
         WHERE p.missing IS NOT NULL"
    );
    // Outside the pool: its connections are the request role (row-level security on).
    let found = crate::row_security::as_login(settings, async |client| {
        let rows = client.query_typed(&sql, &[]).await?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::bug("no row from the check"))?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    })
    .await;
    match found {
        Ok((_, _, None::<String>)) => Ok(()),
        Ok((role, schema, Some(missing))) => Err(StartupError::Privileges {
            url: redact_url(settings.url()),
            role,
            schema,
            missing,
        }),
        Err(err) => {
            tracing::warn!(error = %err, "could not check the database role's privileges");
            Ok(())
        }
    }
}

/// Connects once, directly (a pool reports only "timed out"), retrying with
/// backoff until `DB_STARTUP_TIMEOUT`, and logs the real cause of each failure.
async fn wait_until_reachable(settings: &DatabaseSettings, url: &str) -> Result<(), StartupError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        // Each attempt ends with `DB_STARTUP_TIMEOUT` too: a server that
        // accepts and never answers must not hold it longer.
        let limit = ATTEMPT_TIMEOUT.min(
            settings
                .db_startup_timeout
                .saturating_sub(started.elapsed())
                .max(MIN_ATTEMPT_TIMEOUT),
        );
        let cause = match tokio::time::timeout(limit, connect_once(url)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(ConnectError::Certificate(cause))) => {
                return Err(StartupError::Certificate {
                    url: redact_url(url),
                    cause,
                });
            }
            Ok(Err(ConnectError::Other(cause))) => cause,
            Err(_) => format!("no answer within {:.1} s", limit.as_secs_f64()),
        };
        let waited = started.elapsed();
        // A SQLite file that cannot be opened will not open later either.
        if url.starts_with("sqlite:") || waited + backoff > settings.db_startup_timeout {
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

/// Why a connection attempt failed.
enum ConnectError {
    /// The server's certificate does not verify: retrying will not help.
    Certificate(String),
    Other(String),
}

impl From<String> for ConnectError {
    fn from(cause: String) -> Self {
        ConnectError::Other(cause)
    }
}

/// One connection as the pool would make it; the cause of a failure in
/// words an operator searches for. SQLite: the file opens.
async fn connect_once(url: &str) -> Result<(), ConnectError> {
    use sea_orm::sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
    if url.starts_with("sqlite:") {
        let options = <SqliteConnectOptions as std::str::FromStr>::from_str(url)
            .map_err(|e| format!("invalid database URL: {e}"))?;
        let conn = options
            .connect()
            .await
            .map_err(|e| format!("cannot open: {e}"))?;
        return Ok(conn.close().await.map_err(|e| e.to_string())?);
    }
    let target = tls::target(url)?;
    let err = match target.config.connect(target.tls).await {
        Ok((client, connection)) => {
            drop(client);
            let _ = connection.await; // ends once the client is gone: a clean goodbye
            return Ok(());
        }
        Err(err) => err,
    };
    if let Some(why) = tls::certificate_failure(&err) {
        return Err(ConnectError::Certificate(format!("{why} ({err})")));
    }
    let source = std::error::Error::source(&err);
    let refused = source
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    let dns = source.is_some_and(|s| s.to_string().contains("lookup"));
    let text = err.to_string();
    let kind = match err.code().map(|c| c.code()) {
        Some("28P01" | "28000") => "authentication failed",
        Some("3D000") => "no such database",
        Some(c) if c.starts_with("57P") => "the database is starting up or shutting down",
        Some(_) => "the database refused the connection",
        None if refused => "connection refused",
        None if dns => "unknown host (DNS)",
        None if text.contains("TLS") => "TLS error",
        None if text.starts_with("authentication") => "authentication failed",
        None => "connection failed",
    };
    Err(ConnectError::Other(format!(
        "{kind}: {}",
        DbError::from(err)
    )))
}
