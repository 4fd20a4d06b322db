//! Background work, for as long as the process runs: the hourly purge of
//! expired idempotency keys and of tombstones past their retention, a probe write every second while writes fail
//! for want of storage (until one succeeds, and the instance is ready
//! again), and forgetting the rate-limit state of quiet users.

use std::sync::Arc;
use std::time::Duration;

use crate::config::SyncSettings;
use crate::db::Db;
use crate::limits::UserLimits;
use crate::{idempotency, store};

pub fn spawn(db: Db, limits: Arc<UserLimits>, rate_limited: bool, sync: SyncSettings) {
    let purged = db.clone();
    tokio::spawn(async move {
        loop {
            match store::purge_expired_keys(&purged).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency keys deleted"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
            }
            let kept_from = sync.tombstones_kept_from(chrono::Utc::now());
            match store::purge_tombstones(&purged, kept_from).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "tombstones past their retention deleted"),
                Err(e) => tracing::warn!(error = %e, "could not purge tombstones"),
            }
            tokio::time::sleep(idempotency::PURGE_INTERVAL).await;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if db.readiness().writes_failing()
                && let Err(e) = store::probe_write(&db).await
            {
                tracing::debug!(error = %e, "probe write failed");
            }
        }
    });
    if rate_limited {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                limits.forget_quiet_users();
            }
        });
    }
}
