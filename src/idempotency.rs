//! Safe retries of `POST /api/tasks` with an `Idempotency-Key` header.
//!
//! For one user and key, the first create's response (status, body,
//! `Location`) is stored in the same transaction as the task, so a retry after
//! an answer that never arrived (a dropped connection, a 503 during a database
//! restart) gets that response again instead of a second task. A repeat with
//! another body, or while the first is still running, is a conflict. Keys live
//! in the database (shared by instances, kept across restarts) for 24 hours.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::models::invalid::FieldError;

pub const HEADER: &str = "idempotency-key";
/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often keys past their retention period are deleted.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_KEY_LEN: usize = 255;

/// A valid key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of the request, if it sent one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, FieldError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let invalid = |message: &str| FieldError::new("Idempotency-Key", message);
        if values.next().is_some() {
            return Err(invalid("must be sent at most once"));
        }
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_KEY_LEN {
            return Err(invalid("must be 1 to 255 characters"));
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "must be visible ASCII characters only (no spaces or control characters)",
            ));
        }
        // Checked above: every byte is visible ASCII.
        Ok(Some(IdempotencyKey(
            String::from_utf8_lossy(bytes).into_owned(),
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifies a request body: SHA-256 of its JSON value written canonically
/// (serde_json writes an object's keys sorted, and no white space), so
/// formatting and key order do not make two equal bodies differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(body: &Map<String, Value>) -> Self {
        let canonical = serde_json::to_vec(body).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        Fingerprint(hex::encode(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A keyed create as the store needs it.
pub struct KeyedRequest {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

/// The response a key replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    /// The task the first request created.
    pub task_id: Option<i64>,
    /// Its version then (the replay's `ETag`); unknown for keys of releases
    /// before versions.
    pub task_version: Option<i64>,
}

/// What an earlier request with the same key means for this one.
pub enum Prior {
    /// None within the retention period: go ahead.
    None,
    /// Same body: answer with the stored response.
    Replay(StoredResponse),
    /// Another body.
    Mismatch,
}

/// Keys whose first request is running in this process: a repeat meanwhile is
/// a conflict at once. (Across instances, PostgreSQL's transaction-level
/// advisory lock on the key does the same; see the store.)
#[derive(Default)]
pub struct InFlight {
    running: Mutex<HashSet<(String, String)>>,
}

/// Held while the first request of a key runs.
pub struct Claim {
    registry: Arc<InFlight>,
    entry: (String, String),
}

impl InFlight {
    /// `None` when a request of this user with this key is already running.
    pub fn claim(self: &Arc<Self>, user: &str, key: &IdempotencyKey) -> Option<Claim> {
        let entry = (user.to_owned(), key.0.clone());
        let mut running = self.running.lock().ok()?;
        running.insert(entry.clone()).then(|| Claim {
            registry: Arc::clone(self),
            entry,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut running) = self.registry.running.lock() {
            running.remove(&self.entry);
        }
    }
}

/// Stable 64-bit name of `(user, key)` for `pg_try_advisory_xact_lock`.
pub fn lock_key(user: &str, key: &IdempotencyKey) -> i64 {
    stable_hash(&[b"idempotency", user.as_bytes(), key.0.as_bytes()])
}

/// The first 8 bytes of SHA-256 over the NUL-separated parts: the same on
/// every instance (no per-process seed, unlike std's hasher).
fn stable_hash(parts: &[&[u8]]) -> i64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Keys created at or before this instant are forgotten.
pub fn expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(RETENTION).unwrap_or_else(|_| chrono::Duration::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn key(value: &[u8]) -> Result<Option<IdempotencyKey>, FieldError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(value).unwrap());
        IdempotencyKey::from_headers(&headers)
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(
            IdempotencyKey::from_headers(&HeaderMap::new()).unwrap(),
            None
        );
        assert!(key(b"a").unwrap().is_some());
        assert!(key(&[b'k'; 255]).unwrap().is_some());
        assert!(
            key(b"3f1c2b8e-4d5a-4c6b-9e7f-0a1b2c3d4e5f")
                .unwrap()
                .is_some()
        );
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"has space",
            b"tab\there",
            b"caf\xc3\xa9",
        ] {
            let err = key(bad).unwrap_err();
            assert_eq!(err.field, "Idempotency-Key", "{bad:?}");
        }
        let mut twice = HeaderMap::new();
        twice.append(HEADER, HeaderValue::from_static("a"));
        twice.append(HEADER, HeaderValue::from_static("b"));
        assert!(IdempotencyKey::from_headers(&twice).is_err());
    }

    #[test]
    fn fingerprints_ignore_formatting_and_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"title": "x", "completed": false, "n": 1.0}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"n":1.0,"completed":false,"title":"x"}"#).unwrap();
        let c = json!({"title": "y", "completed": false, "n": 1.0});
        let fp = |v: &Value| Fingerprint::of(v.as_object().unwrap());
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c));
        assert_eq!(fp(&a).as_str().len(), 64);
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let k = IdempotencyKey("k".into());
        assert_eq!(lock_key("alice", &k), lock_key("alice", &k));
        assert_ne!(lock_key("alice", &k), lock_key("bob", &k));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(
            lock_key("ab", &IdempotencyKey("c".into())),
            lock_key("a", &IdempotencyKey("bc".into()))
        );
    }

    #[test]
    fn a_running_key_cannot_be_claimed_twice() {
        let registry = Arc::new(InFlight::default());
        let k = IdempotencyKey("k".into());
        let first = registry.claim("alice", &k).expect("first claim");
        assert!(registry.claim("alice", &k).is_none());
        assert!(registry.claim("bob", &k).is_some(), "keys are per user");
        drop(first);
        assert!(registry.claim("alice", &k).is_some());
    }
}
