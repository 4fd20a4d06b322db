//! Settings from the environment (and `.env`, loaded by `main`).
//! Everything is parsed once at start-up; requests never touch the environment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::HeaderValue;
use url::Url;

/// Used when neither `NEON_DATABASE_URL` nor `DATABASE_URL` is set: a newcomer's
/// first run works with no database server.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://todo.db?mode=rwc";
pub const DEFAULT_CORS_ORIGIN: &str = "http://localhost:3000";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "no token verification configured: set BETTER_AUTH_SECRET (HS256 tokens) and/or \
         BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL (Better Auth JWT plugin), or run `todo-api serve --dev`"
    )]
    NoAuth,
}

/// One setting, as `--help` shows it. The parser below reads exactly these
/// names (a test checks), and each documented default is the real one.
pub struct SettingDoc {
    /// The environment variable (also `--name-in-kebab-case`).
    pub name: &'static str,
    pub heading: &'static str,
    pub help: &'static str,
}

const DATABASE: &str = "Database";
const AUTH: &str = "Authentication (Better Auth)";
const HTTP: &str = "HTTP server";
const LIMITS: &str = "Per-user limits";
const OPERATIONS: &str = "Operations";

const fn doc(name: &'static str, heading: &'static str, help: &'static str) -> SettingDoc {
    SettingDoc {
        name,
        heading,
        help,
    }
}

pub const SETTINGS: &[SettingDoc] = &[
    doc(
        "NEON_DATABASE_URL",
        DATABASE,
        "PostgreSQL URL (Neon or any PostgreSQL 13+; sslmode=require and channel_binding=require work) [default: embedded SQLite ./todo.db]",
    ),
    doc(
        "DATABASE_URL",
        DATABASE,
        "Read when NEON_DATABASE_URL is unset",
    ),
    doc(
        "MIGRATION_DATABASE_URL",
        DATABASE,
        "Direct (non-pooled) URL used for migrations only [default: the main URL]",
    ),
    doc(
        "DB_POOL_MODE",
        DATABASE,
        "session, or transaction behind a transaction-mode pooler (PgBouncer, Neon's -pooler hosts; a -pooler host switches it on) [default: session]",
    ),
    doc(
        "DB_MAX_CONNECTIONS",
        DATABASE,
        "Connection pool size [default: 10; for PostgreSQL on this machine 2 x CPUs + 2, at most 10]",
    ),
    doc(
        "DB_STARTUP_TIMEOUT",
        DATABASE,
        "Seconds to keep trying to reach the database at start-up [default: 60]",
    ),
    doc(
        "DB_STATEMENT_TIMEOUT",
        DATABASE,
        "Seconds any statement may run on PostgreSQL [default: 10]",
    ),
    doc(
        "BETTER_AUTH_SECRET",
        AUTH,
        "Shared secret: HS256/384/512 tokens signed with its raw bytes (use 32 characters or more)",
    ),
    doc(
        "BETTER_AUTH_URL",
        AUTH,
        "Base URL of the Better Auth server (the Next.js app); its JWT plugin's keys at {url}/api/auth/jwks",
    ),
    doc(
        "BETTER_AUTH_JWKS_URL",
        AUTH,
        "Explicit JWKS URL, overrides the one derived from BETTER_AUTH_URL",
    ),
    doc(
        "JWT_ISSUER",
        AUTH,
        "When set, the `iss` claim must equal it",
    ),
    doc(
        "JWT_AUDIENCE",
        AUTH,
        "When set, the `aud` claim must contain it",
    ),
    doc("HOST", HTTP, "Listen address [default: 127.0.0.1]"),
    doc("PORT", HTTP, "Listen port [default: 8000]"),
    doc(
        "CORS_ORIGINS",
        HTTP,
        "Comma-separated browser origins allowed to call the API [default: http://localhost:3000]",
    ),
    doc(
        "WORKER_THREADS",
        HTTP,
        "Threads serving requests; one serves about 10,000 requests a second and wakes no other thread (run more instances, or raise it, for more) [default: 1]",
    ),
    doc(
        "HTTP_HEADER_TIMEOUT",
        HTTP,
        "Seconds a connection may take to send a request head, also the idle keep-alive timeout [default: 10]",
    ),
    doc(
        "HTTP_BODY_TIMEOUT",
        HTTP,
        "Seconds after its head a request body must be complete, else 408 [default: 30]",
    ),
    doc(
        "HTTP_WRITE_TIMEOUT",
        HTTP,
        "Seconds a response may wait for the client to read before the connection is dropped [default: 30]",
    ),
    doc(
        "HTTP_REQUEST_TIMEOUT",
        HTTP,
        "Seconds a request may take in all (a last resort: statements, pool waits and queues have shorter bounds) before it is answered 503 [default: 60]",
    ),
    doc(
        "MAX_TASKS_PER_USER",
        LIMITS,
        "Tasks a user may have; more is 409 task_limit_reached [default: 10000]",
    ),
    doc(
        "MAX_IN_FLIGHT_PER_USER",
        LIMITS,
        "Requests of one user processed at once; the rest wait their turn [default: 4]",
    ),
    doc(
        "MAX_QUEUED_PER_USER",
        LIMITS,
        "Requests of one user that may wait; more is 429 [default: 128]",
    ),
    doc(
        "RATE_LIMIT_PER_USER",
        LIMITS,
        "Requests per second per user, bursts of twice that; 0 is off [default: 0]",
    ),
    doc(
        "SHUTDOWN_DRAIN_SECONDS",
        OPERATIONS,
        "On SIGTERM: seconds to keep serving with /health/ready at 503, before the listener closes [default: 0]",
    ),
    doc(
        "SHUTDOWN_TIMEOUT",
        OPERATIONS,
        "Seconds in-flight requests get to finish once the listener closed [default: 30]",
    ),
    doc(
        "LOG_FORMAT",
        OPERATIONS,
        "text, or json: one JSON object per line [default: text]",
    ),
    doc(
        "METRICS_ADDR",
        OPERATIONS,
        "Address of a second listener with Prometheus metrics at GET /metrics, e.g. 127.0.0.1:9090 [default: off]",
    ),
];

#[derive(Clone, Debug)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub cors_origins: Vec<HeaderValue>,
    pub server: ServerSettings,
    pub limits: Limits,
    pub log_format: LogFormat,
    /// Second listener for Prometheus metrics (`METRICS_ADDR`); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: String,
    /// Direct (non-pooled) URL for migrations only (`MIGRATION_DATABASE_URL`).
    pub migration_url: Option<String>,
    pub pool_mode: PoolMode,
    /// Upper bound of the connection pool (`DB_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// How long start-up keeps trying to reach the database (`DB_STARTUP_TIMEOUT`).
    pub startup_timeout: Duration,
    /// PostgreSQL `statement_timeout` of every statement (`DB_STATEMENT_TIMEOUT`).
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    /// The URL migrations run over.
    pub fn migration_url(&self) -> &str {
        self.migration_url.as_deref().unwrap_or(&self.url)
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field(
                "migration_url",
                &self.migration_url.as_deref().map(redact_url),
            )
            .field("pool_mode", &self.pool_mode)
            .field("max_connections", &self.max_connections)
            .field("startup_timeout", &self.startup_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// How connections reach PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// Directly, or through a session-mode pooler: prepared statements and
    /// session settings are fine.
    Session,
    /// Through a transaction-mode pooler (PgBouncer, Neon's `-pooler` hosts):
    /// no named prepared statements, no session state, no refused start-up parameters.
    Transaction,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// A connection without a complete request head this long after opening or
    /// after its previous response is closed (`HTTP_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// A request body not complete this long after its head: 408 (`HTTP_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// A response the client stops reading is dropped after this (`HTTP_WRITE_TIMEOUT`).
    pub write_timeout: Duration,
    /// Longest a request may be processed before it is answered 503 (`HTTP_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Bound on the exit after the listener closes (`SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
    /// Readiness 503 but still serving, before the listener closes (`SHUTDOWN_DRAIN_SECONDS`).
    pub shutdown_drain: Duration,
    /// The async runtime's worker threads (`WORKER_THREADS`).
    pub worker_threads: usize,
}

/// Per-user fair share.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `MAX_TASKS_PER_USER`.
    pub max_tasks_per_user: u64,
    /// `MAX_IN_FLIGHT_PER_USER`: requests of one user processed at once.
    pub max_in_flight_per_user: u32,
    /// `MAX_QUEUED_PER_USER`: requests of one user waiting for their turn.
    pub max_queued_per_user: u32,
    /// `RATE_LIMIT_PER_USER`: requests per second (bursts of twice that); off when `None`.
    pub rate_limit_per_user: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Raw bytes of `BETTER_AUTH_SECRET`, the HMAC key for HS256/384/512.
    pub secret: Option<Vec<u8>>,
    /// Where the Better Auth JWT plugin publishes its public keys.
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthSettings {
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.jwks_url.is_some()
    }
}

// Hand-written so that a stray `{:?}` can never print the secret.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("jwks_url", &self.jwks_url.as_ref().map(Url::as_str))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Reads variables through a lookup function and names the one at fault.
struct Env<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// An empty variable means unset, as in a `.env` with `KEY=`.
    fn var(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parsed<T>(
        &self,
        name: &'static str,
        default: T,
        reason: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.var(name) {
            None => Ok(default),
            Some(v) => parse(&v).ok_or_else(|| ConfigError::Invalid {
                name,
                reason: reason.to_owned(),
            }),
        }
    }

    /// A duration in seconds (fractions allowed), within `min..=max`.
    fn seconds(
        &self,
        name: &'static str,
        default: u64,
        min: f64,
        max: f64,
    ) -> Result<Duration, ConfigError> {
        self.parsed(
            name,
            Duration::from_secs(default),
            &format!("must be a number of seconds from {min} to {max}"),
            |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| (min..=max).contains(s))
                    .map(Duration::from_secs_f64)
            },
        )
    }

    /// A whole number within `min..=max`.
    fn number<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        self.parsed(
            name,
            default,
            &format!("must be a whole number from {min} to {max}"),
            |v| v.parse::<T>().ok().filter(|n| *n >= min && *n <= max),
        )
    }
}

impl Settings {
    /// Reads the process environment. Missing auth is not an error here: the
    /// caller decides (`serve --dev` may supply a secret of its own).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Settings::from_env`], reading variables through `get`
    /// (tests pass a map instead of mutating the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { get };
        Ok(Settings {
            database: database_settings(&env)?,
            auth: auth_settings(&env)?,
            cors_origins: cors_origins(&env)?,
            server: server_settings(&env)?,
            limits: Limits {
                max_tasks_per_user: env.number("MAX_TASKS_PER_USER", 10_000, 1, i64::MAX as u64)?,
                max_in_flight_per_user: env.number("MAX_IN_FLIGHT_PER_USER", 4, 1, 1_000_000)?,
                max_queued_per_user: env.number("MAX_QUEUED_PER_USER", 128, 0, 1_000_000)?,
                rate_limit_per_user: match env.number("RATE_LIMIT_PER_USER", 0, 0, 1_000_000)? {
                    0 => None,
                    n => Some(n),
                },
            },
            log_format: env.parsed("LOG_FORMAT", LogFormat::Text, "must be text or json", |v| {
                match v {
                    "text" => Some(LogFormat::Text),
                    "json" => Some(LogFormat::Json),
                    _ => None,
                }
            })?,
            metrics_addr: env
                .var("METRICS_ADDR")
                .map(|v| {
                    v.parse::<SocketAddr>().map_err(|_| ConfigError::Invalid {
                        name: "METRICS_ADDR",
                        reason: "must be an address such as 127.0.0.1:9090".into(),
                    })
                })
                .transpose()?,
        })
    }
}

fn database_settings<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<DatabaseSettings, ConfigError> {
    let url = env
        .var("NEON_DATABASE_URL")
        .or_else(|| env.var("DATABASE_URL"))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    check_database_url("NEON_DATABASE_URL", &url)?;
    let migration_url = env.var("MIGRATION_DATABASE_URL");
    if let Some(m) = &migration_url {
        check_database_url("MIGRATION_DATABASE_URL", m)?;
    }
    let pool_mode = match env.var("DB_POOL_MODE").as_deref() {
        Some("transaction") => PoolMode::Transaction,
        Some("session") => PoolMode::Session,
        // Neon's pooled hosts are `ep-...-pooler.<region>...`: PgBouncer in transaction mode.
        None if is_pooler_host(&url) => PoolMode::Transaction,
        None => PoolMode::Session,
        Some(_) => {
            return Err(ConfigError::Invalid {
                name: "DB_POOL_MODE",
                reason: "must be session or transaction".into(),
            });
        }
    };
    let max_connections = env.number("DB_MAX_CONNECTIONS", default_pool_size(&url), 1, 10_000)?;
    Ok(DatabaseSettings {
        url,
        migration_url,
        pool_mode,
        max_connections,
        startup_timeout: env.seconds("DB_STARTUP_TIMEOUT", 60, 0.0, 86_400.0)?,
        statement_timeout: env.seconds("DB_STATEMENT_TIMEOUT", 10, 0.1, 3_600.0)?,
    })
}

fn check_database_url(name: &'static str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("sqlite:")
    {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name,
            reason: "must start with postgres://, postgresql:// or sqlite:".into(),
        })
    }
}

/// The pool size unless `DB_MAX_CONNECTIONS` says otherwise. A database
/// across a network (Neon) gets 10: its connections spend most of a request
/// waiting for the round trip. PostgreSQL on this machine runs its backends
/// on the service's own cores, where connections beyond 2 per core (+2)
/// only queue inside PostgreSQL: on 2 cores 6 served the benchmark's mix
/// at the same or higher throughput than 10, with a p99 about 1 ms lower
/// (docs/performance.md). SQLite keeps 10.
fn default_pool_size(url: &str) -> u32 {
    const DEFAULT: u32 = 10;
    if !is_local_postgres(url) {
        return DEFAULT;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cpus.saturating_mul(2).saturating_add(2))
        .unwrap_or(DEFAULT)
        .min(DEFAULT)
}

/// A PostgreSQL URL naming this machine: a loopback host, or a Unix socket
/// (no host, or a socket directory as host).
fn is_local_postgres(url: &str) -> bool {
    let Ok(parsed) = Url::parse(url) else {
        return false;
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return false;
    }
    let socket_dir = parsed
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    match parsed.host() {
        _ if socket_dir => true,
        None => true,
        // Not a special scheme: the URL standard leaves its IPv4 hosts as text.
        Some(url::Host::Domain(d)) => {
            d.is_empty()
                || d.eq_ignore_ascii_case("localhost")
                || d.starts_with("%2F")
                || d.starts_with("%2f")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
    }
}

fn is_pooler_host(url: &str) -> bool {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.contains("-pooler")))
        .unwrap_or(false)
}

fn auth_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<AuthSettings, ConfigError> {
    let better_auth_url = env
        .var("BETTER_AUTH_URL")
        .map(|v| parse_url("BETTER_AUTH_URL", &v))
        .transpose()?;
    let jwks_url = match env.var("BETTER_AUTH_JWKS_URL") {
        Some(v) => Some(parse_url("BETTER_AUTH_JWKS_URL", &v)?),
        None => better_auth_url.map(|base| jwks_url_from_base(&base)),
    };
    Ok(AuthSettings {
        // Better Auth signs HS256 tokens with the secret's raw bytes; not trimmed
        // beyond what `var` does, as surrounding whitespace is never intended.
        secret: env.var("BETTER_AUTH_SECRET").map(String::into_bytes),
        jwks_url,
        issuer: env.var("JWT_ISSUER"),
        audience: env.var("JWT_AUDIENCE"),
    })
}

fn cors_origins<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Vec<HeaderValue>, ConfigError> {
    env.var("CORS_ORIGINS")
        .unwrap_or_else(|| DEFAULT_CORS_ORIGIN.to_owned())
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            // Browsers send the origin without a trailing slash.
            HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| ConfigError::Invalid {
                name: "CORS_ORIGINS",
                reason: format!("{o:?} is not a valid origin"),
            })
        })
        .collect()
}

fn server_settings<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<ServerSettings, ConfigError> {
    let host: IpAddr = env.parsed(
        "HOST",
        IpAddr::from([127, 0, 0, 1]),
        "must be an IP address",
        |v| v.parse().ok(),
    )?;
    let port: u16 = env.parsed("PORT", 8000, "must be a number from 0 to 65535", |v| {
        v.parse().ok()
    })?;
    Ok(ServerSettings {
        listen: SocketAddr::new(host, port),
        header_timeout: env.seconds("HTTP_HEADER_TIMEOUT", 10, 0.1, 3_600.0)?,
        body_timeout: env.seconds("HTTP_BODY_TIMEOUT", 30, 0.1, 3_600.0)?,
        write_timeout: env.seconds("HTTP_WRITE_TIMEOUT", 30, 0.1, 3_600.0)?,
        request_timeout: env.seconds("HTTP_REQUEST_TIMEOUT", 60, 0.1, 3_600.0)?,
        shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT", 30, 0.0, 3_600.0)?,
        shutdown_drain: env.seconds("SHUTDOWN_DRAIN_SECONDS", 0, 0.0, 3_600.0)?,
        worker_threads: env.number("WORKER_THREADS", 1, 1, 1_024)?,
    })
}

fn parse_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be an http:// or https:// URL".into(),
        });
    }
    Ok(url)
}

/// `{BETTER_AUTH_URL}/api/auth/jwks`, whether or not the base ends in a slash.
fn jwks_url_from_base(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/api/auth/jwks", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

/// The URL with any password replaced, safe for a log line.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            // sqlx also reads the password from the query (`?password=...`,
            // as libpq does), which used to reach the log as it was; and
            // libpq's `sslpassword` (a client key's passphrase) is one too.
            let secret = |key: &str| key.to_ascii_lowercase().contains("password");
            if url.query_pairs().any(|(key, _)| secret(&key)) {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if secret(&key) { "***".into() } else { value };
                        (key.into_owned(), value.into_owned())
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_to_embedded_sqlite_and_local_frontend() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(s.database.pool_mode, PoolMode::Session);
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(
            s.cors_origins,
            vec![HeaderValue::from_static("http://localhost:3000")]
        );
        assert!(!s.auth.is_configured());
        assert_eq!(s.server.header_timeout, Duration::from_secs(10));
        assert_eq!(s.server.body_timeout, Duration::from_secs(30));
        assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.server.shutdown_drain, Duration::ZERO);
        assert_eq!(s.server.worker_threads, 1);
        assert_eq!(s.limits.max_tasks_per_user, 10_000);
        assert_eq!(s.limits.max_in_flight_per_user, 4);
        assert_eq!(s.limits.max_queued_per_user, 128);
        assert_eq!(s.limits.rate_limit_per_user, None);
        assert_eq!(s.database.startup_timeout, Duration::from_secs(60));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.metrics_addr, None);
    }

    /// 10 connections for a database elsewhere and for SQLite; for
    /// PostgreSQL on this machine 2 per core + 2, at most 10; the variable wins.
    #[test]
    fn pool_size_follows_where_the_database_runs() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let local = u32::try_from(2 * cpus + 2).unwrap().min(10);
        let pool = |url: &str| {
            settings(&[("NEON_DATABASE_URL", url)])
                .unwrap()
                .database
                .max_connections
        };
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgresql://app:pw@localhost/app",
            "postgres://[::1]/db",
            "postgres:///db?host=/var/run/postgresql",
            "postgres://%2Fvar%2Frun%2Fpostgresql/db",
        ] {
            assert_eq!(pool(url), local, "{url}");
        }
        for url in [
            "postgres://u:p@ep-cool-123456.eu-central-1.aws.neon.tech/db?sslmode=require",
            "postgres://u:p@ep-cool-123456-pooler.eu-central-1.aws.neon.tech/db",
            "postgres://u@10.0.0.5/db",
            "sqlite://./todo.db?mode=rwc",
        ] {
            assert_eq!(pool(url), 10, "{url}");
        }
        assert_eq!(settings(&[]).unwrap().database.max_connections, 10);
        let s = settings(&[
            ("NEON_DATABASE_URL", "postgres://postgres@127.0.0.1/test"),
            ("DB_MAX_CONNECTIONS", "12"),
        ])
        .unwrap();
        assert_eq!(s.database.max_connections, 12);
    }

    #[test]
    fn neon_url_wins_over_database_url() {
        let s = settings(&[
            ("NEON_DATABASE_URL", "postgres://a@neon/db"),
            ("DATABASE_URL", "postgres://b@x/db"),
        ])
        .unwrap();
        assert_eq!(s.database.url, "postgres://a@neon/db");
        let s = settings(&[
            ("NEON_DATABASE_URL", ""),
            ("DATABASE_URL", "postgres://b@x/db"),
        ])
        .unwrap();
        assert_eq!(s.database.url, "postgres://b@x/db");
    }

    #[test]
    fn pooler_hosts_switch_to_transaction_mode() {
        let pooled = "postgresql://u:p@ep-cool-1-pooler.eu-central-1.aws.neon.tech/db";
        let s = settings(&[("NEON_DATABASE_URL", pooled)]).unwrap();
        assert_eq!(s.database.pool_mode, PoolMode::Transaction);
        let s = settings(&[("NEON_DATABASE_URL", pooled), ("DB_POOL_MODE", "session")]).unwrap();
        assert_eq!(s.database.pool_mode, PoolMode::Session);
        let s = settings(&[("DB_POOL_MODE", "transaction")]).unwrap();
        assert_eq!(s.database.pool_mode, PoolMode::Transaction);
    }

    #[test]
    fn jwks_url_is_derived_from_better_auth_url_unless_explicit() {
        let s = settings(&[("BETTER_AUTH_URL", "https://app.example.com/")]).unwrap();
        assert_eq!(
            s.auth.jwks_url.unwrap().as_str(),
            "https://app.example.com/api/auth/jwks"
        );
        let s = settings(&[
            ("BETTER_AUTH_URL", "https://a.example"),
            ("BETTER_AUTH_JWKS_URL", "https://k.example/keys"),
        ])
        .unwrap();
        assert_eq!(s.auth.jwks_url.unwrap().as_str(), "https://k.example/keys");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("PORT", "eighty"),
            ("HOST", "not-an-ip"),
            ("BETTER_AUTH_URL", "ftp://x"),
            ("DB_MAX_CONNECTIONS", "0"),
            ("DB_POOL_MODE", "statement"),
            ("MIGRATION_DATABASE_URL", "mysql://x"),
            ("HTTP_HEADER_TIMEOUT", "-1"),
            ("SHUTDOWN_TIMEOUT", "soon"),
            ("WORKER_THREADS", "0"),
            ("MAX_IN_FLIGHT_PER_USER", "0"),
            ("MAX_TASKS_PER_USER", "1.5"),
            ("RATE_LIMIT_PER_USER", "-3"),
            ("LOG_FORMAT", "xml"),
            ("METRICS_ADDR", "localhost"),
        ] {
            let err = settings(&[(k, v)]).err().unwrap().to_string();
            assert!(err.starts_with(k), "{err}");
        }
    }

    #[test]
    fn limits_and_timeouts_are_read() {
        let s = settings(&[
            ("MAX_TASKS_PER_USER", "5"),
            ("MAX_IN_FLIGHT_PER_USER", "2"),
            ("MAX_QUEUED_PER_USER", "0"),
            ("RATE_LIMIT_PER_USER", "50"),
            ("HTTP_HEADER_TIMEOUT", "0.5"),
            ("SHUTDOWN_DRAIN_SECONDS", "3"),
            ("WORKER_THREADS", "4"),
            ("LOG_FORMAT", "json"),
            ("METRICS_ADDR", "127.0.0.1:9090"),
        ])
        .unwrap();
        assert_eq!(s.server.worker_threads, 4);
        assert_eq!(s.limits.max_tasks_per_user, 5);
        assert_eq!(s.limits.max_in_flight_per_user, 2);
        assert_eq!(s.limits.max_queued_per_user, 0);
        assert_eq!(s.limits.rate_limit_per_user, Some(50));
        assert_eq!(s.server.header_timeout, Duration::from_millis(500));
        assert_eq!(s.server.shutdown_drain, Duration::from_secs(3));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.metrics_addr.unwrap().port(), 9090);
    }

    #[test]
    fn every_setting_read_is_documented_and_every_default_is_true() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let _ = Settings::from_lookup(|name| {
            read.borrow_mut().insert(name.to_owned());
            None
        });
        let documented: std::collections::BTreeSet<String> =
            SETTINGS.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(read.into_inner(), documented);
        let plain = format!("{:?}", settings(&[]).unwrap());
        for setting in SETTINGS {
            let Some(default) = setting
                .help
                .rsplit_once("[default: ")
                .and_then(|(_, d)| d.strip_suffix(']'))
            else {
                continue;
            };
            if default.contains(' ') || default == "off" {
                continue; // described, not a value
            }
            let explicit = format!("{:?}", settings(&[(setting.name, default)]).unwrap());
            assert_eq!(explicit, plain, "{} default {default}", setting.name);
        }
    }

    #[test]
    fn redacted_urls_show_no_password_in_user_info_or_query() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=hunter2&sslpassword=x%26y"),
            "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = settings(&[
            ("BETTER_AUTH_SECRET", "s3cr3t-value"),
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("MIGRATION_DATABASE_URL", "postgres://u:hunter3@h/db"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t-value")
                && !shown.contains("hunter2")
                && !shown.contains("hunter3"),
            "{shown}"
        );
    }
}
