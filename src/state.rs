//! The router's shared state. The database handle is private to it:
//! handlers reach tasks only through a `UserTasks` built for a verified caller.

use std::sync::Arc;

use crate::auth::{Identity, Verifier};
use crate::config::Settings;
use crate::db::{Db, DbError};
use crate::idempotency::InFlight;
use crate::limits::UserLimits;
use crate::live::Hub;
use crate::readiness::Readiness;
use crate::store::{StoreConfig, UserTasks};

#[derive(Clone)]
pub struct AppState {
    store: StoreConfig,
    verifier: Arc<Verifier>,
    limits: Arc<UserLimits>,
    require_if_match: bool,
    live: Arc<Hub>,
    heartbeat: std::time::Duration,
}

impl AppState {
    pub fn new(db: Db, verifier: Verifier, settings: &Settings, live: Arc<Hub>) -> Self {
        AppState {
            store: StoreConfig {
                db,
                max_tasks: settings.limits.max_tasks_per_user,
                sync: settings.sync.clone(),
                live: Arc::clone(&live),
                notify: settings.live.live_notify == crate::config::Switch::On,
                in_flight_keys: Arc::new(InFlight::default()),
                #[cfg(debug_assertions)]
                without_owner_filter: settings.database.test_only_without_owner_filter,
            },
            verifier: Arc::new(verifier),
            limits: UserLimits::new(&settings.limits),
            require_if_match: settings.sync.require_if_match,
            live,
            heartbeat: settings.live.sse_heartbeat_seconds,
        }
    }

    /// This instance's live streams.
    pub(crate) fn live(&self) -> &Arc<Hub> {
        &self.live
    }

    /// `SSE_HEARTBEAT_SECONDS`.
    pub(crate) fn heartbeat(&self) -> std::time::Duration {
        self.heartbeat
    }

    /// `REQUIRE_IF_MATCH`: a write without `If-Match` is 428.
    pub(crate) fn require_if_match(&self) -> bool {
        self.require_if_match
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub(crate) fn limits(&self) -> &Arc<UserLimits> {
        &self.limits
    }

    pub(crate) fn readiness(&self) -> &Arc<Readiness> {
        self.store.db.readiness()
    }

    /// The store of a verified caller (only the extractor calls this).
    pub(crate) fn store_for(&self, identity: &Identity) -> UserTasks {
        UserTasks::new(&self.store, identity)
    }

    /// Does the database answer (readiness)?
    pub(crate) async fn ping(&self) -> Result<(), DbError> {
        self.store.db.ping().await
    }
}
