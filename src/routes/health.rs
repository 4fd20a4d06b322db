//! Public liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::errors::{Unavailable, Unexpected};
use crate::error::ApiError;
use crate::models::output::HealthOut;
use crate::readiness::NotReady;
use crate::state::AppState;

/// The probes, each with its OpenAPI entry.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// Liveness: the process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "Alive", body = HealthOut), Unexpected),
    security()
)]
pub async fn health() -> Json<HealthOut> {
    Json(HealthOut { status: "ok" })
}

/// Readiness: started (database reached and migrated), not shutting down,
/// writes can be stored, and the database answers.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses((status = 200, description = "Ready: started, not draining, writes stored, the database answers", body = HealthOut), Unavailable, Unexpected),
    security()
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<HealthOut>, ApiError> {
    if let Some(why) = state.readiness().not_ready() {
        return Err(ApiError::unavailable(match why {
            NotReady::Starting => {
                "starting: the database is not reached or migrated yet".to_owned()
            }
            NotReady::Draining => "shutting down".to_owned(),
            NotReady::WritesFailing(cause) => format!("writes fail: {cause}"),
        }));
    }
    state.ping().await?;
    Ok(Json(HealthOut { status: "ok" }))
}
