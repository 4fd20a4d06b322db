//! Per-user fair share: no user can take the server from the others.
//!
//! At most `MAX_IN_FLIGHT_PER_USER` requests of one user are processed at
//! once; the user's further requests wait their turn in order (a burst from
//! one browser is served, only later), up to `MAX_QUEUED_PER_USER` waiting;
//! beyond that, or after waiting [`MAX_QUEUE_WAIT`], 429. With
//! `RATE_LIMIT_PER_USER`, requests over that rate (bursts of twice it) get 429 too.
//! An [`Admission`] is held until the response body has been sent.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// Longest a request waits for its user's turn before it is refused.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// A request refused by a limit (429): why, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests ({reason:?})")]
pub struct Refused {
    pub reason: Refusal,
    pub retry_after: Duration,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More requests waiting than `MAX_QUEUED_PER_USER`, or waited too long.
    QueueFull,
    /// Over `RATE_LIMIT_PER_USER`.
    RateLimited,
    /// `MAX_STREAMS_PER_USER` live streams of the user, or `MAX_STREAMS`
    /// in all, are open on this instance.
    StreamsFull,
}

pub struct UserLimits {
    max_in_flight: u32,
    max_queued: u32,
    gates: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    rate: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    clock: DefaultClock,
}

/// One user's turnstile: exists while the user has requests running or waiting.
struct Gate {
    permits: Arc<Semaphore>,
    waiting: AtomicU32,
}

/// A user's turn. Dropping it lets the next waiting request of that user in.
pub struct Admission {
    permit: Option<OwnedSemaphorePermit>,
    gate: Option<Arc<Gate>>,
    user: Arc<str>,
    limits: Arc<UserLimits>,
}

impl UserLimits {
    pub fn new(limits: &Limits) -> Arc<Self> {
        let rate = NonZeroU32::new(limits.rate_limit_per_user).map(|per_second| {
            let burst = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Arc::new(UserLimits {
            max_in_flight: limits.max_in_flight_per_user,
            max_queued: limits.max_queued_per_user,
            gates: Mutex::new(HashMap::new()),
            rate,
            clock: DefaultClock::default(),
        })
    }

    /// Waits for the user's turn, or refuses with 429.
    pub async fn admit(self: &Arc<Self>, user: &str) -> Result<Admission, Refused> {
        let user: Arc<str> = Arc::from(user);
        if let Some(rate) = &self.rate
            && let Err(not_until) = rate.check_key(&user)
        {
            return Err(Refused {
                reason: Refusal::RateLimited,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        let gate = self.gate(&user);
        if let Ok(permit) = Arc::clone(&gate.permits).try_acquire_owned() {
            return Ok(self.admission(permit, gate, user));
        }
        let queue_full = Refused {
            reason: Refusal::QueueFull,
            retry_after: Duration::from_secs(1),
        };
        // Count ourselves in, unless the queue is full.
        if gate
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_queued).then_some(n + 1)
            })
            .is_err()
        {
            drop(gate);
            self.forget_idle(&user);
            return Err(queue_full);
        }
        // Tokio's semaphore is fair: waiters are served in arrival order.
        let acquired =
            tokio::time::timeout(MAX_QUEUE_WAIT, Arc::clone(&gate.permits).acquire_owned()).await;
        gate.waiting.fetch_sub(1, Ordering::AcqRel);
        match acquired {
            Ok(Ok(permit)) => Ok(self.admission(permit, gate, user)),
            _ => {
                drop(gate);
                self.forget_idle(&user);
                Err(queue_full)
            }
        }
    }

    fn admission(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        gate: Arc<Gate>,
        user: Arc<str>,
    ) -> Admission {
        Admission {
            permit: Some(permit),
            gate: Some(gate),
            user,
            limits: Arc::clone(self),
        }
    }

    fn gate(&self, user: &Arc<str>) -> Arc<Gate> {
        // The map holds no invariant a panic could break.
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(gates.entry(Arc::clone(user)).or_insert_with(|| {
            Arc::new(Gate {
                permits: Arc::new(Semaphore::new(self.max_in_flight as usize)),
                waiting: AtomicU32::new(0),
            })
        }))
    }

    /// Removes the user's gate when nobody holds or waits on it, so the map
    /// holds only active users. Every holder clones the `Arc` under this
    /// lock, so a count of one (the map's) is final.
    fn forget_idle(&self, user: &Arc<str>) {
        if let Ok(mut gates) = self.gates.lock()
            && gates.get(user).is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(user);
        }
    }

    /// Users with a request running or waiting (metrics, tests).
    pub fn active_users(&self) -> usize {
        self.gates.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Drops rate-limiter state of users not seen lately (run periodically).
    pub fn forget_quiet_users(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Let the next request in, then let go of the gate before checking
        // whether anyone else still uses it.
        self.permit.take();
        self.gate.take();
        self.limits.forget_idle(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(in_flight: u32, queued: u32, rate: Option<u32>) -> Arc<UserLimits> {
        UserLimits::new(&Limits {
            max_tasks_per_user: 10,
            max_in_flight_per_user: in_flight,
            max_queued_per_user: queued,
            rate_limit_per_user: rate.unwrap_or(0),
        })
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_idle_users_are_forgotten() {
        let l = limits(1, 1, None);
        let first = l.admit("alice").await.unwrap();
        let l2 = Arc::clone(&l);
        let waiting = tokio::spawn(async move { l2.admit("alice").await.map(|_| ()) });
        // Wait until the second request is queued (observable state, not a sleep).
        while l.gates.lock().unwrap()["alice"]
            .waiting
            .load(Ordering::Acquire)
            == 0
        {
            tokio::task::yield_now().await;
        }
        let refused = l.admit("alice").await.err().unwrap();
        assert_eq!(refused.reason, Refusal::QueueFull);
        assert!(l.admit("bob").await.is_ok(), "other users are not affected");
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(l.active_users(), 0);
    }

    #[tokio::test]
    async fn rate_limit_allows_bursts_of_twice_the_rate() {
        // Five a second: a burst of 10, plus what the bucket regained while
        // it was sent (a token per 200 ms, however slow the machine).
        let l = limits(100, 100, Some(5));
        let mut admitted = Vec::new();
        let started = std::time::Instant::now();
        let retry_after = loop {
            match l.admit("alice").await {
                Ok(admission) => admitted.push(admission),
                Err(Refused { retry_after, .. }) => break retry_after,
            }
            assert!(admitted.len() <= 1_000, "never refused");
        };
        let regained = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
        assert!(
            (10..=10 + regained).contains(&admitted.len()),
            "{} admitted, {regained} regained",
            admitted.len()
        );
        assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}");
        assert!(l.admit("bob").await.is_ok());
    }
}
