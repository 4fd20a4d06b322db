//! Todo API: a multi-user task service for a Next.js + Better Auth frontend.
//!
//! [`build`] turns [`Settings`] into an [`App`]: the router with every layer,
//! over a database pool that connects on first use. [`App::start`] then
//! reaches the database (it may be late), migrates and marks the instance
//! ready, while [`serve`] already answers (`/health` 200, `/api` 503 until
//! then). `main` and the integration tests both use these.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod etag;
pub mod http;
pub mod idempotency;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod models;
pub mod preconditions;
pub mod readiness;
pub mod routes;
mod row_security;
pub mod startup;
mod state;
pub mod store;
pub mod tls;
mod upkeep;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use config::Settings;
pub use state::AppState;

use crate::db::Db;
use crate::readiness::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Database(#[from] startup::StartupError),
    #[error("cannot open the database ({url}): {source}")]
    Open {
        url: String,
        #[source]
        source: db::DbError,
    },
    #[error("cannot start metrics: {0}")]
    Metrics(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The assembled service, not yet serving.
pub struct App {
    router: Router,
    db: Db,
    limits: Arc<limits::UserLimits>,
    readiness: Arc<Readiness>,
    settings: Settings,
}

/// Assembles the application without waiting for the database.
pub async fn build(settings: &Settings) -> Result<App, StartupError> {
    if !settings.auth.is_configured() {
        return Err(config::ConfigError::NoAuth.into());
    }
    let readiness = Arc::new(Readiness::default());
    let db = Db::open(&settings.database, Arc::clone(&readiness)).map_err(|source| {
        StartupError::Open {
            url: config::redact_url(settings.database.url()),
            source,
        }
    })?;
    let postgres = db.dialect() == db::Dialect::Postgres;
    let live = live::Hub::new(
        settings.live.max_streams_per_user as usize,
        settings.live.max_streams as usize,
        // SQLite: one instance, it hears every write itself.
        !postgres,
    );
    if let Some(addr) = settings.operations.metrics_addr {
        let handle = metrics::install().map_err(StartupError::Metrics)?;
        // Bound here, not in the task: an address that cannot be listened on
        // stops start-up, as the public one does. Bound in the task, it was
        // only logged, and the server ran on without the metrics it was asked for.
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            StartupError::Metrics(format!("cannot listen on {addr} (METRICS_ADDR): {e}"))
        })?;
        let (db, max) = (db.clone(), settings.database.max_connections);
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, handle, db, max, live).await {
                tracing::error!(%addr, error = %err, "metrics listener failed");
            }
        });
    }
    match settings.live.listen_url(&settings.database) {
        _ if !postgres => {}
        Some(url) => live::listener::spawn(
            url.to_owned(),
            Arc::clone(&live),
            Arc::clone(&readiness),
            settings.live.sse_heartbeat_seconds,
        ),
        None => tracing::warn!(
            "live events: behind a transaction-mode pooler with no direct URL (LISTEN_DATABASE_URL or \
             MIGRATION_DATABASE_URL), other instances' changes reach streams by polling, every second"
        ),
    }
    let state = AppState::new(
        db.clone(),
        auth::Verifier::new(&settings.auth),
        settings,
        live,
    );
    let router = http::with_layers(routes::router(state.clone()), &settings.server);
    Ok(App {
        router,
        db,
        limits: Arc::clone(state.limits()),
        readiness,
        settings: settings.clone(),
    })
}

impl App {
    /// Reaches the database (retrying for `DB_STARTUP_TIMEOUT`), migrates,
    /// and marks the instance ready; then starts the background upkeep.
    pub async fn start(&self) -> Result<(), StartupError> {
        startup::start(&self.settings.database, &self.db).await?;
        let rate_limited = self.settings.limits.rate_limit_per_user > 0;
        upkeep::spawn(
            self.db.clone(),
            Arc::clone(&self.limits),
            rate_limited,
            self.settings.sync.clone(),
        );
        Ok(())
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }
}

/// Serves `app` until `shutdown` resolves, then drains and shuts down within
/// the configured bounds (see [`http::server`]).
pub async fn serve(
    listener: TcpListener,
    app: &App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http::server::serve(
        listener,
        app.router(),
        &app.settings,
        Arc::clone(&app.readiness),
        shutdown,
    )
    .await
}
