//! Shared application state. The database handle is private to this module:
//! handlers reach tasks only through [`UserTasks`], built from a verified caller.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sea_orm::{DatabaseConnection, DbErr};

use crate::auth::{AuthUser, Verifier};
use crate::error::ApiError;
use crate::store::UserTasks;

#[derive(Clone)]
pub struct AppState {
    db: DatabaseConnection,
    verifier: Arc<Verifier>,
}

impl AppState {
    pub fn new(db: DatabaseConnection, verifier: Verifier) -> Self {
        AppState {
            db,
            verifier: Arc::new(verifier),
        }
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Readiness: does the database answer?
    pub(crate) async fn ping_database(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }
}

/// Extracting the store authenticates first, then scopes it to the caller.
impl FromRequestParts<AppState> for UserTasks {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let AuthUser(identity) = AuthUser::from_request_parts(parts, state).await?;
        Ok(UserTasks::new(state.db.clone(), &identity))
    }
}
