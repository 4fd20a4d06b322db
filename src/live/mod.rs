//! Live events: every open stream of a user learns, within moments, that
//! the user's version moved, and reads what changed through the changes
//! feed (the store, under the user's isolation). No task data travels
//! here: only "this user's list changed".
//!
//! A [`Hub`] per instance holds one signal per user with open streams.
//! On PostgreSQL a write sends `NOTIFY todo_changes` with the user's
//! [`channel`] (a digest, not the id), and one listener connection per
//! instance ([`listener`]) touches the users any instance wrote for, this
//! one included; where no listener hears (SQLite, no `NOTIFY`, the listener
//! down) the write touches its user directly. While the listener is down,
//! streams read the feed every [`POLL_WHILE_DEAF`] instead: a lost
//! notification delays a change, never loses it.

pub mod listener;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

/// The PostgreSQL channel of the notifications.
pub const CHANNEL: &str = "todo_changes";

/// How often a stream reads the feed while notifications may be missed.
pub const POLL_WHILE_DEAF: Duration = Duration::from_secs(1);

/// The name of a user's signal, as notifications carry it: a digest of the
/// id (anyone allowed to `LISTEN` sees the payloads).
pub fn channel(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    hex::encode(&digest[..12])
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `MAX_STREAMS_PER_USER` streams of this user are open here.
    User,
    /// `MAX_STREAMS` streams are open here.
    Instance,
}

pub struct Hub {
    users: Mutex<HashMap<String, Arc<UserSignal>>>,
    total: AtomicUsize,
    max_per_user: usize,
    max_total: usize,
    /// Whether notifications (of every instance's writes) reach this one now.
    hearing: watch::Sender<bool>,
    /// Wakes the listener when the first stream opens.
    opened: Notify,
}

struct UserSignal {
    changed: watch::Sender<u64>,
    streams: AtomicUsize,
    /// The newest page of the feed read for this user's streams: they share
    /// one read instead of one each (see [`Subscription::page`]).
    page: tokio::sync::Mutex<Option<SharedPage>>,
}

struct SharedPage {
    since: i64,
    /// The user's signal count when the read began: the page holds every
    /// change signalled up to it.
    stamp: u64,
    /// What the read returned (the store's changes: opaque here, so that
    /// this module does not depend on the store that depends on it).
    changes: Arc<dyn Any + Send + Sync>,
}

/// A page of the feed, as the streams share it.
pub trait Page: Any + Send + Sync {
    /// It holds every change up to the user's version when it was read (the
    /// feed had no more to give).
    fn complete(&self) -> bool;
}

/// An open stream's membership: its user's signal, given back on drop.
pub struct Subscription {
    hub: Arc<Hub>,
    key: String,
    signal: Arc<UserSignal>,
    changed: watch::Receiver<u64>,
    hearing: watch::Receiver<bool>,
}

impl Hub {
    /// `hearing`: true where no other instance can write (SQLite), else
    /// false until the listener is connected.
    pub fn new(max_per_user: usize, max_total: usize, hearing: bool) -> Arc<Hub> {
        Arc::new(Hub {
            users: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            max_per_user,
            max_total,
            hearing: watch::Sender::new(hearing),
            opened: Notify::new(),
        })
    }

    /// Opens a stream of `user`, unless a cap is reached.
    pub fn subscribe(self: &Arc<Self>, user: &str) -> Result<Subscription, Full> {
        let key = channel(user);
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Full::Instance);
        }
        let signal = users.entry(key.clone()).or_insert_with(|| {
            Arc::new(UserSignal {
                changed: watch::Sender::new(0),
                streams: AtomicUsize::new(0),
                page: tokio::sync::Mutex::new(None),
            })
        });
        if signal.streams.load(Ordering::Relaxed) >= self.max_per_user {
            return Err(Full::User);
        }
        signal.streams.fetch_add(1, Ordering::Relaxed);
        let changed = signal.changed.subscribe();
        let signal = Arc::clone(signal);
        if self.total.fetch_add(1, Ordering::Relaxed) == 0 {
            self.opened.notify_one();
        }
        Ok(Subscription {
            hub: Arc::clone(self),
            key,
            signal,
            changed,
            hearing: self.hearing.subscribe(),
        })
    }

    /// The user of `key` has a new version: wake their streams.
    pub fn touch(&self, key: &str) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signal) = users.get(key) {
            signal.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Every stream reads the feed (after notifications may have been missed).
    pub fn touch_all(&self) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        for signal in users.values() {
            signal.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Open streams on this instance.
    pub fn streams(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Whether notifications arrive now (the listener is connected).
    pub fn hearing(&self) -> bool {
        *self.hearing.borrow()
    }

    /// The listener says whether notifications arrive.
    pub fn set_hearing(&self, hearing: bool) {
        self.hearing.send_replace(hearing);
    }

    /// Resolves once a stream is open.
    pub async fn wanted(&self) {
        while self.streams() == 0 {
            let opened = self.opened.notified();
            if self.streams() > 0 {
                return;
            }
            opened.await;
        }
    }
}

impl Subscription {
    /// Resolves when the user's version may have moved: a signal, or (while
    /// notifications may be missed) every [`POLL_WHILE_DEAF`].
    pub async fn changed(&mut self) {
        loop {
            if *self.hearing.borrow_and_update() {
                tokio::select! {
                    _ = self.changed.changed() => return,
                    _ = self.hearing.changed() => continue,
                }
            } else {
                tokio::select! {
                    _ = self.changed.changed() => return,
                    () = tokio::time::sleep(POLL_WHILE_DEAF) => return,
                }
            }
        }
    }

    /// The feed after `since`, read by `read` or shared with another of the
    /// user's streams that read it since every change this stream has been
    /// signalled: from the same cursor, or from an earlier one (not 0) if
    /// that page is [complete](Page::complete); the caller skips what it has
    /// sent.
    /// Reads of one user's streams take turns, so the second waits for the
    /// first and takes its page.
    pub async fn page<P, E, F, R>(&self, since: i64, read: F) -> Result<Arc<P>, E>
    where
        P: Page,
        F: FnOnce() -> R,
        R: Future<Output = Result<P, E>>,
    {
        let seen = *self.changed.borrow();
        // While notifications may be missed, a stream polls: it must read.
        let hearing = *self.hearing.borrow();
        let mut shared = self.signal.page.lock().await;
        if let Some(page) = shared.as_ref()
            && hearing
            && page.stamp >= seen
            && let Ok(changes) = Arc::clone(&page.changes).downcast::<P>()
            // From 0 the feed is the snapshot, without deletes: only for 0.
            && (page.since == since || (0 < page.since && page.since < since && changes.complete()))
        {
            return Ok(changes);
        }
        let stamp = *self.signal.changed.borrow();
        let changes = Arc::new(read().await?);
        *shared = Some(SharedPage {
            since,
            stamp,
            changes: Arc::clone(&changes) as Arc<dyn Any + Send + Sync>,
        });
        Ok(changes)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut users = self.hub.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signal) = users.get(&self.key)
            && signal.streams.fetch_sub(1, Ordering::Relaxed) == 1
        {
            users.remove(&self.key);
        }
        self.hub.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_user_and_per_instance() {
        let hub = Hub::new(2, 3, true);
        let a1 = hub.subscribe("a").unwrap();
        let _a2 = hub.subscribe("a").unwrap();
        assert_eq!(hub.subscribe("a").err(), Some(Full::User));
        let _b = hub.subscribe("b").unwrap();
        assert_eq!(hub.subscribe("c").err(), Some(Full::Instance));
        drop(a1);
        assert_eq!(hub.streams(), 2);
        assert!(hub.subscribe("a").is_ok());
    }

    #[tokio::test]
    async fn a_touch_wakes_only_that_users_streams() {
        let hub = Hub::new(4, 10, true);
        let mut a = hub.subscribe("a").unwrap();
        let mut b = hub.subscribe("b").unwrap();
        hub.touch(&channel("a"));
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .expect("a woken");
        let b_woken = tokio::time::timeout(Duration::from_millis(50), b.changed()).await;
        assert!(b_woken.is_err(), "b not woken");
    }

    struct TestPage {
        read_from: i64,
        complete: bool,
    }

    impl Page for TestPage {
        fn complete(&self) -> bool {
            self.complete
        }
    }

    /// Reads from `since` with `sub`; which cursor the page was read from.
    async fn page_for(sub: &Subscription, since: i64, complete: bool) -> i64 {
        let read = || async move {
            Ok::<_, ()>(TestPage {
                read_from: since,
                complete,
            })
        };
        sub.page(since, read).await.unwrap().read_from
    }

    #[tokio::test]
    async fn a_users_streams_share_a_page_only_when_it_holds_what_each_needs() {
        let hub = Hub::new(4, 10, true);
        let (a, b) = (hub.subscribe("u").unwrap(), hub.subscribe("u").unwrap());
        hub.touch(&channel("u"));
        // The same cursor: shared, complete or not.
        assert_eq!(page_for(&a, 5, false).await, 5);
        assert_eq!(page_for(&b, 5, false).await, 5, "same cursor, shared");
        // A later cursor: not from an incomplete page (it may stop short).
        assert_eq!(page_for(&b, 7, true).await, 7, "incomplete: read");
        // A complete page from an earlier cursor serves a later one.
        assert_eq!(page_for(&a, 9, true).await, 7, "complete, earlier: shared");
        // A change signalled after the page was read: read again.
        hub.touch(&channel("u"));
        assert_eq!(page_for(&a, 9, true).await, 9, "signalled since: read");
        // From 0 the feed is the snapshot (no deletes): never for a later cursor.
        hub.touch(&channel("u"));
        assert_eq!(page_for(&a, 0, true).await, 0);
        assert_eq!(page_for(&b, 3, true).await, 3, "snapshot: read");
    }

    #[test]
    fn channels_name_no_user() {
        assert_ne!(channel("alice"), channel("bob"));
        assert!(!channel("alice").contains("alice"));
        assert_eq!(channel("alice").len(), 24);
    }
}
