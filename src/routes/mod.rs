//! The HTTP routes and the router that tests and `main` share.

mod body;
mod docs;
mod health;
mod tasks;

use axum::Router;

pub use docs::ApiDoc;

use crate::state::AppState;

/// Every route, without the cross-cutting layers (see [`crate::http`]).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(tasks::routes())
        .merge(health::routes())
        .with_state(state)
        .merge(docs::routes())
}
