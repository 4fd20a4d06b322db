//! Settings: each one an environment variable (also read from `.env`) and a
//! flag of the same name (`PORT`, `--port`), parsed and checked once at
//! start-up by clap; the defaults that depend on other settings are worked
//! out then too ([`Settings::resolve`]). Fields are named after their variables.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ::url::Url;
use axum::http::HeaderValue;
use clap::{Args, FromArgMatches, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// Where the data lives when no database URL is set: a newcomer's first run
/// works with no database server.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://todo.db?mode=rwc";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no token verification configured: set BETTER_AUTH_SECRET (HS256 tokens) and/or \
         BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL (Better Auth JWT plugin), or run `todo-api serve --dev`"
    )]
    NoAuth,
}

// The groups below are flattened into it: their comments are plain `//`,
// since clap takes a flattened group's doc comment as the program's about.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub sync: SyncSettings,
    #[command(flatten)]
    pub live: LiveSettings,
    #[command(flatten)]
    pub operations: Operations,
}

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Database")]
pub struct DatabaseSettings {
    /// PostgreSQL URL (Neon or any PostgreSQL 13+; sslmode, sslrootcert and channel_binding as in libpq) [default: embedded SQLite ./todo.db]
    #[arg(long, env = "NEON_DATABASE_URL", value_parser = secret)]
    neon_database_url: Option<SecretString>,
    /// Read when NEON_DATABASE_URL is unset
    #[arg(long, env = "DATABASE_URL", value_parser = secret)]
    database_url: Option<SecretString>,
    /// Direct (non-pooled) URL used for migrations only [default: the main URL]
    #[arg(long, env = "MIGRATION_DATABASE_URL", value_parser = secret)]
    migration_database_url: Option<SecretString>,
    /// session, or transaction behind a transaction-mode pooler (PgBouncer, Neon's -pooler hosts; a -pooler host switches it on) [default: session]
    #[arg(long, env = "DB_POOL_MODE", value_enum)]
    db_pool_mode: Option<PoolMode>,
    /// Connection pool size [default: 10; for PostgreSQL on this machine 2 x CPUs + 2, at most 10]
    #[arg(long, env = "DB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    db_max_connections: Option<u32>,
    /// Seconds to keep trying to reach the database at start-up
    #[arg(long, env = "DB_STARTUP_TIMEOUT", default_value = "60", value_parser = seconds(0.0, 86_400.0))]
    pub db_startup_timeout: Duration,
    /// Seconds any statement may run on PostgreSQL
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "10", value_parser = seconds(0.1, 3_600.0))]
    pub db_statement_timeout: Duration,
    /// on: requests run as role todo_request under PostgreSQL's row-level security; off: the query layer alone isolates users (PostgreSQL only)
    #[arg(long, env = "DB_ROW_LEVEL_SECURITY", default_value = "on", value_enum)]
    pub db_row_level_security: Switch,
    /// Tests only, in debug builds: the store's statements lose their `user_id` condition
    #[cfg(debug_assertions)]
    #[arg(long, env = "TEST_ONLY_WITHOUT_OWNER_FILTER", default_value = "false", hide = true, action = clap::ArgAction::Set)]
    pub test_only_without_owner_filter: bool,
    /// The database's URL (resolved).
    #[arg(skip)]
    pub url: SecretString,
    #[arg(skip)]
    pub pool_mode: PoolMode,
    #[arg(skip)]
    pub max_connections: u32,
}

/// A feature on or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    #[default]
    On,
    Off,
}

/// How connections reach PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PoolMode {
    // Directly, or through a session-mode pooler: prepared statements and
    // session settings are fine.
    #[default]
    Session,
    // Through a transaction-mode pooler: nothing may outlive a transaction.
    Transaction,
}

impl DatabaseSettings {
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }

    /// The URL migrations run over.
    pub fn migration_url(&self) -> &str {
        self.migration_database_url
            .as_ref()
            .map_or(self.url(), |u| u.expose_secret())
    }

    /// A direct URL is given for migrations.
    pub fn has_migration_url(&self) -> bool {
        self.migration_database_url.is_some()
    }
}

#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Authentication (Better Auth)")]
pub struct AuthSettings {
    /// Shared secret: HS256/384/512 tokens signed with its raw bytes (use 32 characters or more)
    #[arg(long, env = "BETTER_AUTH_SECRET", value_parser = secret)]
    pub better_auth_secret: Option<SecretString>,
    /// Base URL of the Better Auth server (the Next.js app); its JWT plugin's keys at {url}/api/auth/jwks
    #[arg(long, env = "BETTER_AUTH_URL", value_parser = http_url)]
    pub better_auth_url: Option<Url>,
    /// Explicit JWKS URL, overrides the one derived from BETTER_AUTH_URL
    #[arg(long, env = "BETTER_AUTH_JWKS_URL", value_parser = http_url)]
    pub better_auth_jwks_url: Option<Url>,
    /// When set, the `iss` claim must equal it
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, the `aud` claim must contain it
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl AuthSettings {
    pub fn is_configured(&self) -> bool {
        self.better_auth_secret.is_some() || self.better_auth_jwks_url.is_some()
    }

    /// The raw bytes of `BETTER_AUTH_SECRET`, the HMAC key.
    pub fn secret(&self) -> Option<&[u8]> {
        self.better_auth_secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes())
    }
}

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "HTTP server")]
pub struct ServerSettings {
    /// Listen address
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Listen port
    #[arg(long, env = "PORT", default_value = "8000")]
    pub port: u16,
    /// Comma-separated browser origins allowed to call the API
    #[arg(long, env = "CORS_ORIGINS", default_value = "http://localhost:3000", value_parser = origins)]
    pub cors_origins: Origins,
    /// Threads serving requests [default: the available cores]
    #[arg(long, env = "WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// Seconds a connection may take to send a request head, also the idle keep-alive timeout
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10", value_parser = seconds(0.1, 3_600.0))]
    pub http_header_timeout: Duration,
    /// Seconds after its head a request body must be complete, else 408
    #[arg(long, env = "HTTP_BODY_TIMEOUT", default_value = "30", value_parser = seconds(0.1, 3_600.0))]
    pub http_body_timeout: Duration,
    /// Seconds a response may wait for the client to read before the connection is dropped
    #[arg(long, env = "HTTP_WRITE_TIMEOUT", default_value = "30", value_parser = seconds(0.1, 3_600.0))]
    pub http_write_timeout: Duration,
    /// Seconds a request may take in all (longer than HTTP_BODY_TIMEOUT) before it is answered 503
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "60", value_parser = seconds(0.1, 3_600.0))]
    pub http_request_timeout: Duration,
}

impl ServerSettings {
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The async runtime's worker threads.
    pub fn worker_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.worker_threads.map_or(cores, usize::from)
    }
}

/// Allowed browser origins (`CORS_ORIGINS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origins(pub Vec<HeaderValue>);

// Per user, per instance.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Per-user limits")]
pub struct Limits {
    /// Tasks a user may have; more is 409 task_limit_reached
    #[arg(long, env = "MAX_TASKS_PER_USER", default_value = "10000", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    pub max_tasks_per_user: u64,
    /// Requests of one user processed at once; the rest wait their turn
    #[arg(long, env = "MAX_IN_FLIGHT_PER_USER", default_value = "4", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight_per_user: u32,
    /// Requests of one user that may wait; more is 429
    #[arg(long, env = "MAX_QUEUED_PER_USER", default_value = "128", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_queued_per_user: u32,
    /// Requests per second per user, bursts of twice that; 0 is off
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value = "0", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_per_user: u32,
}

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Operations")]
pub struct Operations {
    /// On SIGTERM: seconds to keep serving with /health/ready at 503, before the listener closes
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value = "0", value_parser = seconds(0.0, 3_600.0))]
    pub shutdown_drain_seconds: Duration,
    /// Seconds in-flight requests get to finish once the listener closed
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30", value_parser = seconds(0.0, 3_600.0))]
    pub shutdown_timeout: Duration,
    /// text, or json: one JSON object per line
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: LogFormat,
    /// Address of a second listener with Prometheus metrics at GET /metrics, e.g. 127.0.0.1:9090 [default: off]
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    // One JSON object per line.
    Json,
}

impl Settings {
    /// Every setting's argument, usable before or after a subcommand, its
    /// help naming its variable (never its value: some are secrets).
    pub fn arguments(command: clap::Command) -> clap::Command {
        Settings::augment_args(command).mut_args(|arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            match arg.get_env().and_then(|e| e.to_str()).map(str::to_owned) {
                Some(env) => arg
                    .help(format!("{help} [env: {env}]"))
                    .env(None::<&str>)
                    .global(true),
                None => arg.global(true),
            }
        })
    }

    /// Parses `argv` with `command` (built with [`Settings::arguments`]),
    /// each setting's variable read through `var` and a flag overriding it.
    /// A variable that is empty (as `KEY=` in a `.env`) is unset, and
    /// values are trimmed (clap, reading the environment itself, would
    /// take both as they are).
    pub fn parse(
        command: clap::Command,
        argv: impl IntoIterator<Item = std::ffi::OsString>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<clap::ArgMatches, clap::Error> {
        let mut argv = argv.into_iter();
        let mut args: Vec<std::ffi::OsString> = argv.next().into_iter().collect();
        for (env, long) in Self::variables() {
            if let Some(value) = var(&env).filter(|v| !v.trim().is_empty()) {
                args.push(format!("--{long}={}", value.trim()).into());
            }
        }
        args.extend(argv);
        command.args_override_self(true).try_get_matches_from(args)
    }

    /// Each setting's variable and flag.
    fn variables() -> Vec<(String, String)> {
        let command = Settings::augment_args(clap::Command::new("settings"));
        let names = command.get_arguments().filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((env, arg.get_long()?.to_owned()))
        });
        names.collect()
    }

    /// The settings that `var` gives the variables of (tests pass a map
    /// instead of changing the process environment).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let command = Self::arguments(clap::Command::new("todo-api"));
        let matches = Self::parse(command, [std::ffi::OsString::from("todo-api")], var)
            .map_err(|e| invalid(e.to_string()))?;
        Self::from_arg_matches(&matches)
            .map_err(|e| invalid(e.to_string()))?
            .resolve()
    }

    /// Works out the defaults that depend on other settings, and checks
    /// what no single setting can.
    pub fn resolve(mut self) -> Result<Self, ConfigError> {
        let db = &mut self.database;
        let url = db
            .neon_database_url
            .clone()
            .or_else(|| db.database_url.clone());
        db.url = url.unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        for url in [db.url(), db.migration_url()] {
            if !["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                return Err(invalid(
                    "the database URL must start with postgres://, postgresql:// or sqlite:",
                ));
            }
        }
        db.pool_mode = db.db_pool_mode.unwrap_or(match url::is_pooler(db.url()) {
            true => PoolMode::Transaction,
            false => PoolMode::Session,
        });
        db.max_connections = db
            .db_max_connections
            .unwrap_or_else(|| url::default_pool_size(db.url()));
        if self.auth.better_auth_jwks_url.is_none() {
            self.auth.better_auth_jwks_url = self.auth.better_auth_url.as_ref().map(|base| {
                let mut url = base.clone();
                url.set_path(&format!(
                    "{}/api/auth/jwks",
                    base.path().trim_end_matches('/')
                ));
                url.set_query(None);
                url
            });
        }
        if self.server.http_request_timeout <= self.server.http_body_timeout {
            return Err(invalid(
                "HTTP_REQUEST_TIMEOUT must be longer than HTTP_BODY_TIMEOUT (a body still arriving is the client's 408)",
            ));
        }
        Ok(self)
    }
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

fn secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.trim()))
}

fn http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim()).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        _ => Err("must be an http:// or https:// URL".into()),
    }
}

fn origins(value: &str) -> Result<Origins, String> {
    let origins = value.split(',').map(str::trim).filter(|o| !o.is_empty());
    // Browsers send the origin without a trailing slash.
    let parse = |o: &str| {
        HeaderValue::from_str(o.trim_end_matches('/'))
            .map_err(|_| format!("{o:?} is not a valid origin"))
    };
    origins.map(parse).collect::<Result<_, _>>().map(Origins)
}

/// A duration in seconds (fractions allowed), within `min..=max`.
fn seconds(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value: &str| match value.trim().parse::<f64>() {
        Ok(s) if (min..=max).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("must be a number of seconds from {min} to {max}")),
    }
}

mod sync;
mod url;

pub use sync::{LiveSettings, SyncSettings};
pub use url::redact_url;

#[cfg(test)]
mod tests;
