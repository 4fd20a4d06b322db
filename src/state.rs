//! Shared application state. The database handle is private to this module:
//! handlers reach tasks only through [`UserTasks`], built from a verified caller.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{AuthUser, Verifier};
use crate::db::Db;
use crate::error::ApiError;
use crate::http::RequestContext;
use crate::idempotency::InFlight;
use crate::limits::UserLimits;
use crate::readiness::{NotReady, Readiness};
use crate::store::{StoreConfig, UserTasks};

#[derive(Clone)]
pub struct AppState {
    store: StoreConfig,
    verifier: Arc<Verifier>,
    limits: Arc<UserLimits>,
}

impl AppState {
    pub fn new(db: Db, verifier: Verifier, limits: &crate::config::Limits) -> Self {
        AppState {
            store: StoreConfig {
                db,
                max_tasks: limits.max_tasks_per_user,
                in_flight_keys: Arc::new(InFlight::default()),
            },
            verifier: Arc::new(verifier),
            limits: UserLimits::new(limits),
        }
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub(crate) fn limits(&self) -> &Arc<UserLimits> {
        &self.limits
    }

    pub(crate) fn readiness(&self) -> &Readiness {
        self.store.db.readiness()
    }

    /// Readiness: `None` when this instance should get traffic.
    pub(crate) async fn not_ready(&self) -> Option<ApiError> {
        if let Some(why) = self.readiness().not_ready() {
            return Some(ApiError::unavailable(match why {
                NotReady::Starting => {
                    "starting: the database is not reached or migrated yet".to_owned()
                }
                NotReady::Draining => "shutting down".to_owned(),
                NotReady::WritesFailing(cause) => format!("writes fail: {cause}"),
            }));
        }
        self.store.db.ping().await.err().map(ApiError::from)
    }
}

/// Extracting the store authenticates first, then waits for the user's turn
/// (held until the response is sent), then scopes the store to the caller.
impl FromRequestParts<AppState> for UserTasks {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Boxed: their states would otherwise be copied by every layer above.
        let AuthUser(identity) = Box::pin(AuthUser::from_request_parts(parts, state)).await?;
        if !state.readiness().is_started() {
            return Err(ApiError::unavailable(
                "starting: the database is not reached or migrated yet",
            ));
        }
        let admission = Box::pin(state.limits.admit(&identity.user_id)).await?;
        if let Some(context) = parts.extensions.get::<Arc<RequestContext>>() {
            context.hold(admission);
        }
        Ok(UserTasks::new(&state.store, &identity))
    }
}
