//! The HTTP routes and the router that tests and `main` share. Each route is
//! registered together with its OpenAPI entry, so the document cannot list a
//! route that does not exist or miss one that does.

mod changes;
mod docs;
mod errors;
mod events;
mod extract;
mod health;
mod tasks;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every API route with its OpenAPI entry.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(tasks::routes())
        .merge(changes::routes())
        .merge(events::routes())
        .merge(health::routes())
}

/// The OpenAPI document of every route (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    docs::complete(api().split_for_parts().1)
}

/// Every route, without the cross-cutting layers (see [`crate::http`]).
pub fn router(state: AppState) -> Router {
    let (routes, document) = api().split_for_parts();
    routes
        .with_state(state)
        .merge(docs::routes(docs::complete(document)))
}
