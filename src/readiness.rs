//! Whether this instance should get traffic: `/health/ready` answers from here.
//!
//! Not ready while the database is first being reached and migrated, while
//! writes fail for want of storage (disk full, read-only file, I/O error), and
//! once shutdown has begun (the drain period).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Writes must have stopped failing this long before the instance is ready
/// again: on a disk that is nearly full, writes that fit and writes that do
/// not alternate, and readiness should not flap with them.
pub const WRITE_RECOVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Readiness {
    started: AtomicBool,
    draining: AtomicBool,
    /// Wakes what waits for the drain to begin (live streams end then).
    drain_started: tokio::sync::Notify,
    /// Mirrors `write_failure.is_some()`: every committed write reads it.
    failing: AtomicBool,
    /// Why the last write could not be stored, and when, until writes succeed again.
    write_failure: Mutex<Option<(String, Instant)>>,
    /// When the database last answered a statement, and last failed to
    /// (ms since the process started; 0: never).
    last_answer: AtomicU64,
    last_unavailable: AtomicU64,
}

fn millis() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    (START.elapsed().as_millis() as u64).max(1)
}

/// Why the instance is not ready (shown in the 503 body of `/health/ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    Starting,
    Draining,
    WritesFailing(String),
}

impl Readiness {
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain_started.notify_waiters();
    }

    /// Resolves once shutdown has begun.
    pub async fn draining(&self) {
        let started = self.drain_started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if self.is_draining() {
            return;
        }
        started.await;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `None` when ready as far as this process knows (the database is pinged separately).
    pub fn not_ready(&self) -> Option<NotReady> {
        if self.is_draining() {
            return Some(NotReady::Draining);
        }
        if !self.is_started() {
            return Some(NotReady::Starting);
        }
        self.write_failure
            .lock()
            .ok()
            .and_then(|f| f.as_ref().map(|(cause, _)| cause.clone()))
            .map(NotReady::WritesFailing)
    }

    /// Records a storage failure; true when writes were fine until now.
    pub fn write_failed(&self, cause: &str) -> bool {
        match self.write_failure.lock() {
            Ok(mut failure) => {
                self.failing.store(true, Ordering::Release);
                failure
                    .replace((cause.to_owned(), Instant::now()))
                    .is_none()
            }
            Err(_) => false,
        }
    }

    /// Records a committed write; true when this ends a failure (the last
    /// failed write is at least [`WRITE_RECOVERY`] old).
    pub fn write_succeeded(&self) -> bool {
        if !self.writes_failing() {
            return false;
        }
        match self.write_failure.lock() {
            Ok(mut failure) => match *failure {
                Some((_, at)) if at.elapsed() >= WRITE_RECOVERY => {
                    self.failing.store(false, Ordering::Release);
                    failure.take().is_some()
                }
                _ => false,
            },
            Err(_) => false,
        }
    }

    pub fn writes_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// A statement came back from the database.
    pub fn database_answered(&self) {
        self.last_answer.fetch_max(millis(), Ordering::Relaxed);
    }

    /// A statement found the database unavailable.
    pub fn database_unavailable(&self) {
        self.last_unavailable.fetch_max(millis(), Ordering::Relaxed);
    }

    /// The database answered within `window`, and nothing found it
    /// unavailable since: a busy instance needs no ping queued behind its
    /// requests to know the database answers.
    pub fn database_answered_within(&self, window: Duration) -> bool {
        let last = self.last_answer.load(Ordering::Relaxed);
        last > self.last_unavailable.load(Ordering::Relaxed)
            && millis().saturating_sub(last) < window.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_failing_until_they_succeed_after_a_quiet_moment() {
        let r = Readiness::default();
        assert_eq!(r.not_ready(), Some(NotReady::Starting));
        r.mark_started();
        assert_eq!(r.not_ready(), None);
        assert!(r.write_failed("disk full"));
        assert!(!r.write_failed("disk full"), "already failing");
        assert!(!r.write_succeeded(), "too soon after the failure");
        assert_eq!(
            r.not_ready(),
            Some(NotReady::WritesFailing("disk full".into()))
        );
        if let Ok(mut f) = r.write_failure.lock() {
            f.as_mut().unwrap().1 -= WRITE_RECOVERY;
        }
        assert!(r.write_succeeded());
        assert_eq!(r.not_ready(), None);
        r.start_draining();
        assert_eq!(r.not_ready(), Some(NotReady::Draining));
    }
}
