//! The settings of versions, conditional requests and the changes feed,
//! and of live events.

use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use super::{DatabaseSettings, PoolMode, Switch, seconds, secret};

// Versions, conditional requests and the changes feed.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Sync")]
pub struct SyncSettings {
    /// true: PUT, PATCH /complete and DELETE without If-Match are 428 precondition_required
    #[arg(long, env = "REQUIRE_IF_MATCH", default_value = "false", action = clap::ArgAction::Set)]
    pub require_if_match: bool,
    /// Days the changes feed remembers deletes; an older cursor is 410 cursor_expired
    #[arg(long, env = "TOMBSTONE_RETENTION_DAYS", default_value = "30", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub tombstone_retention_days: u32,
}

impl LiveSettings {
    /// Where the listener connects: never through a transaction-mode
    /// pooler (it cannot hold a `LISTEN`); `None` when only a pooler is known.
    pub fn listen_url<'a>(&'a self, database: &'a DatabaseSettings) -> Option<&'a str> {
        match &self.listen_database_url {
            Some(url) => Some(url.expose_secret()),
            None if database.pool_mode == PoolMode::Transaction => database
                .has_migration_url()
                .then(|| database.migration_url()),
            None => Some(database.url()),
        }
    }
}

impl SyncSettings {
    /// The oldest delete the feed still remembers, at `now`.
    pub fn tombstones_kept_from(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.tombstone_retention_days))
    }
}

// Live events (`GET /api/tasks/events`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Live events")]
pub struct LiveSettings {
    /// Live streams of one user open on one instance; more is 429
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value = "16", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_user: u32,
    /// Live streams open on one instance; more is 429
    #[arg(long, env = "MAX_STREAMS", default_value = "20000", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_streams: u32,
    /// Seconds between heartbeat comments on an idle stream
    #[arg(long, env = "SSE_HEARTBEAT_SECONDS", default_value = "15", value_parser = seconds(1.0, 3_600.0))]
    pub sse_heartbeat_seconds: Duration,
    /// Direct PostgreSQL URL of the connection that hears other instances' changes (LISTEN) [default: MIGRATION_DATABASE_URL behind a transaction-mode pooler, else the main URL]
    #[arg(long, env = "LISTEN_DATABASE_URL", value_parser = secret)]
    listen_database_url: Option<SecretString>,
    /// on: every write on PostgreSQL notifies the other instances (NOTIFY); off: streams on other instances learn of it only by polling while they cannot hear (single instance)
    #[arg(long, env = "LIVE_NOTIFY", default_value = "on", value_enum)]
    pub live_notify: Switch,
}
