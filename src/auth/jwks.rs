//! The Better Auth JWKS: fetched lazily, cached, refetched on an unknown `kid`.
//!
//! Refetches are single-flight (one fetch however many requests wait on it)
//! and rate-limited (none within [`MIN_REFETCH_INTERVAL`] of the last attempt),
//! so a flood of made-up `kid`s cannot make us hammer the auth server. If the
//! server is down, cached keys keep working.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use super::TokenRejection;
use super::keys::{Jwk, PublicKey};
use super::token::Alg;

pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// After this, the next request refreshes the set in passing (revoked keys go away).
const MAX_KEY_AGE: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<PublicKey>>,
    fetched_at: Option<Instant>,
}

pub struct JwksCache {
    url: Url,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held for the whole of a fetch (single flight); holds the last attempt's time.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

impl JwksCache {
    pub fn new(url: Url) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        JwksCache {
            url,
            client,
            keys: RwLock::default(),
            refetch: tokio::sync::Mutex::new(None),
        }
    }

    /// The key that may verify a token with this `kid` and algorithm.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Arc<PublicKey>, TokenRejection> {
        let current = self.snapshot();
        if let Some(key) = find(&current, kid, alg) {
            if current
                .fetched_at
                .is_some_and(|t| t.elapsed() > MAX_KEY_AGE)
            {
                // Stale but usable: one request refreshes, nobody waits for it.
                if let Ok(mut last) = self.refetch.try_lock() {
                    self.fetch_into_cache(&mut last).await;
                }
            }
            return Ok(key);
        }
        let mut last = self.refetch.lock().await;
        // Whoever held the lock before us may have fetched this very key.
        if let Some(key) = find(&self.snapshot(), kid, alg) {
            return Ok(key);
        }
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH_INTERVAL) {
            return Err(TokenRejection::UnknownKey);
        }
        self.fetch_into_cache(&mut last).await;
        find(&self.snapshot(), kid, alg).ok_or(TokenRejection::UnknownKey)
    }

    /// Whether `key` is still in the key set (a key removed from the JWKS
    /// stops verifying as soon as the set is fetched again).
    pub fn is_current(&self, key: &Arc<PublicKey>) -> bool {
        self.snapshot().keys.iter().any(|k| Arc::ptr_eq(k, key))
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    async fn fetch_into_cache(&self, last_attempt: &mut Option<Instant>) {
        *last_attempt = Some(Instant::now());
        let fetched = self.fetch().await;
        crate::metrics::jwks_fetched(fetched.is_ok());
        match fetched {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "fetched JWKS");
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                });
                if let Ok(mut slot) = self.keys.write() {
                    *slot = set;
                }
            }
            // Keep the keys we have: tokens they verify still work.
            Err(why) => tracing::warn!(url = %self.url, error = %why, "could not fetch JWKS"),
        }
    }

    async fn fetch(&self) -> Result<Vec<Arc<PublicKey>>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("JWKS document too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let doc: JwksDocument =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWKS document: {e}"))?;
        // Entries we cannot use are skipped, not fatal: a set may mix key types.
        Ok(doc
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| PublicKey::from_jwk(&jwk))
            .map(Arc::new)
            .collect())
    }
}

/// By `kid` when the token names one; otherwise only an unambiguous match.
fn find(set: &KeySet, kid: Option<&str>, alg: Alg) -> Option<Arc<PublicKey>> {
    match kid {
        Some(kid) => set
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid) && k.allows(alg))
            .cloned(),
        None => {
            let mut usable = set.keys.iter().filter(|k| k.allows(alg));
            match (usable.next(), usable.next()) {
                (Some(only), None) => Some(Arc::clone(only)),
                _ => None,
            }
        }
    }
}
