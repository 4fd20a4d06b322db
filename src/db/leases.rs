//! PostgreSQL connections kept between requests, out of sqlx's pool.
//!
//! sqlx pings every connection it gets back (a bare `Sync`, always, not
//! configurable): a round trip per request that PostgreSQL spends a wake-up
//! on and that pgbench, the benchmark's limit, does not make. So a
//! connection whose request finished cleanly is kept here and handed to the
//! next request as it is. One that did not (an error, a request cancelled
//! mid-statement) goes back to sqlx, whose ping drains or closes it.
//!
//! A fair semaphore of `max_connections` permits orders the waiters (as
//! sqlx's own queue did): a request holding a permit either finds a kept
//! connection or gets one from sqlx, which then has one to give. A connection
//! kept idle for [`MAX_KEPT_IDLE`], or leased for longer than
//! [`MAX_KEPT_FOR`], goes back to sqlx, whose idle timeout, lifetime and
//! ping-before-use then apply as before.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Kept idle longer, a connection goes back to sqlx (which pings a
/// connection idle this long before using it: a proxy may have dropped it).
const MAX_KEPT_IDLE: Duration = Duration::from_secs(30);

/// Kept longer in all, a connection goes back to sqlx once (one ping), which
/// closes it if it is past its lifetime.
const MAX_KEPT_FOR: Duration = Duration::from_secs(300);

struct Kept {
    conn: PoolConnection<Postgres>,
    since: Instant,
    idle_since: Instant,
}

pub struct Leases {
    pool: PgPool,
    permits: Arc<Semaphore>,
    kept: Mutex<Vec<Kept>>,
    acquire_timeout: Duration,
}

impl Leases {
    pub fn new(pool: PgPool, max_connections: u32, acquire_timeout: Duration) -> Arc<Leases> {
        let leases = Arc::new(Leases {
            pool,
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            kept: Mutex::new(Vec::new()),
            acquire_timeout,
        });
        spawn_upkeep(Arc::downgrade(&leases));
        leases
    }

    /// Connections kept idle here (they count as in use for sqlx).
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    /// A connection for one unit of work, in turn; `PoolTimedOut` as sqlx
    /// would answer when none frees up within the acquire timeout.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, sqlx::Error> {
        let permit = tokio::time::timeout(
            self.acquire_timeout,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
        .map_err(|_| sqlx::Error::PoolClosed)?;
        let now = Instant::now();
        let mut stale = Vec::new();
        let fresh = {
            let mut kept = self.lock();
            // Most recently used first; stale ones go back to sqlx (outside
            // the lock: dropping one spawns its return).
            loop {
                match kept.pop() {
                    Some(k) if is_stale(&k, now) => stale.push(k),
                    other => break other,
                }
            }
        };
        drop(stale);
        let (conn, since) = match fresh {
            Some(k) => (k.conn, k.since),
            // Boxed: sqlx's acquire future is ~14 KiB, and every future that
            // awaits a lease (each request's) would otherwise carry it inline.
            None => (Box::pin(self.pool.acquire()).await?, now),
        };
        Ok(Lease {
            conn: Some(conn),
            since,
            clean: false,
            leases: Arc::clone(self),
            _permit: permit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        // The list holds no invariant a panic could break.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands stale kept connections back to sqlx.
    fn release_stale(&self) {
        let now = Instant::now();
        let stale: Vec<Kept> = {
            let mut kept = self.lock();
            let (stale, fresh): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut *kept)
                .into_iter()
                .partition(|k| is_stale(k, now));
            *kept = fresh;
            stale
        };
        drop(stale);
    }
}

fn is_stale(k: &Kept, now: Instant) -> bool {
    now.duration_since(k.idle_since) >= MAX_KEPT_IDLE || now.duration_since(k.since) >= MAX_KEPT_FOR
}

/// Without requests, kept connections still go back to sqlx in time (and
/// from there are closed when idle), as they would have without this cache.
fn spawn_upkeep(leases: Weak<Leases>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAX_KEPT_IDLE / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(leases) = leases.upgrade() else {
                return;
            };
            leases.release_stale();
        }
    });
}

/// One connection, for one unit of work. Kept for the next one only if
/// [`Lease::finished_cleanly`] was called; otherwise it goes back to sqlx.
pub struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    since: Instant,
    clean: bool,
    leases: Arc<Leases>,
    // Released after `drop` has put the connection back (fields drop last).
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// The unit of work read every answer to its end: nothing is pending
    /// on the connection, which is idle outside any transaction.
    pub fn finished_cleanly(&mut self) {
        self.clean = true;
    }

    /// Closes the connection instead of reusing it (a transaction that did
    /// not end: closing it is what ends it).
    pub fn close_on_drop(&mut self) {
        self.clean = false;
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

impl Deref for Lease {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        // Some until dropped.
        self.conn.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.clean {
            self.leases.lock().push(Kept {
                conn,
                since: self.since,
                idle_since: Instant::now(),
            });
        }
        // Otherwise `conn` drops here: back to sqlx, which pings it.
    }
}
