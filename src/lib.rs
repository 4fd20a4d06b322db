//! Todo API: a multi-user task service for a Next.js + Better Auth frontend.
//!
//! [`build`] turns [`Settings`] into a ready router (database connected and
//! migrated, verifier configured); `main` and the integration tests both use it.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod models;
pub mod routes;
mod state;
pub mod store;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use config::Settings;
pub use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the database ({url}): {source}")]
    Database { url: String, source: sea_orm::DbErr },
    #[error("cannot migrate the database ({url}): {source}")]
    Migration { url: String, source: sea_orm::DbErr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Connects, migrates and assembles the application.
pub async fn build(settings: &Settings) -> Result<Router, StartupError> {
    if !settings.auth.is_configured() {
        return Err(config::ConfigError::NoAuth.into());
    }
    let shown_url = config::redact_url(&settings.database_url);
    db::migrate(&settings.database_url)
        .await
        .map_err(|source| StartupError::Migration {
            url: shown_url.clone(),
            source,
        })?;
    let db = db::connect(&settings.database_url, settings.db_max_connections)
        .await
        .map_err(|source| StartupError::Database {
            url: shown_url,
            source,
        })?;
    let state = AppState::new(db, auth::Verifier::new(&settings.auth));
    Ok(http::with_layers(
        routes::router(state),
        &settings.cors_origins,
    ))
}

/// Serves `app` until `shutdown` resolves; in-flight requests then finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
