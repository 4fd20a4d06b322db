//! Whether this instance should get traffic: `/health/ready` answers from here.
//!
//! Not ready while the database is first being reached and migrated, while
//! writes fail for want of storage (disk full, read-only file, I/O error), and
//! once shutdown has begun (the drain period).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Readiness {
    started: AtomicBool,
    draining: AtomicBool,
    /// Mirrors `write_failure.is_some()`: every committed write reads it.
    failing: AtomicBool,
    /// Why the last write could not be stored, until a write succeeds again.
    write_failure: Mutex<Option<String>>,
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
            .and_then(|f| f.clone())
            .map(NotReady::WritesFailing)
    }

    /// Records a storage failure; true when writes were fine until now.
    pub fn write_failed(&self, cause: &str) -> bool {
        match self.write_failure.lock() {
            Ok(mut failure) => {
                self.failing.store(true, Ordering::Release);
                failure.replace(cause.to_owned()).is_none()
            }
            Err(_) => false,
        }
    }

    /// Records a committed write; true when writes were failing until now.
    pub fn write_succeeded(&self) -> bool {
        if !self.writes_failing() {
            return false;
        }
        match self.write_failure.lock() {
            Ok(mut failure) => {
                self.failing.store(false, Ordering::Release);
                failure.take().is_some()
            }
            Err(_) => false,
        }
    }

    pub fn writes_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}
