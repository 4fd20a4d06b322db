//! Verified tokens, remembered: the frontend sends the same token with every
//! request for its 15 minutes, and checking an Ed25519 signature each time
//! costs more than the rest of a request. Keyed by the token's SHA-256, so a
//! token that differs in a single byte (tampered) is verified afresh; each
//! hit re-checks `exp`, and for a JWKS key that the key is still published.
//! A token is only ever cached after it passed full verification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Identity;
use super::keys::PublicKey;

/// Most tokens remembered (about 150 bytes each): every user's current
/// token, for a few thousand users at once.
const CAPACITY: usize = 4096;

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Verified {
    /// Valid until its `expires_at` (`exp`).
    identity: Identity,
    /// The JWKS key that verified it; `None` for the shared secret.
    key: Option<Arc<PublicKey>>,
}

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<TokenDigest, Verified>>,
}

impl TokenCache {
    /// The identity of a token verified before, while it is still valid.
    pub fn get(
        &self,
        digest: &TokenDigest,
        now: f64,
        key_is_current: impl Fn(&Arc<PublicKey>) -> bool,
    ) -> Option<Identity> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(digest)?;
        if now < entry.identity.expires_at && entry.key.as_ref().is_none_or(key_is_current) {
            return Some(entry.identity.clone());
        }
        // Expired, or its key is gone: verified afresh (and refused) from now on.
        entries.remove(digest);
        None
    }

    pub fn insert(
        &self,
        digest: TokenDigest,
        identity: Identity,
        key: Option<Arc<PublicKey>>,
        now: f64,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now < e.identity.expires_at);
            if entries.len() >= CAPACITY {
                // Still full of live tokens: start over rather than grow.
                entries.clear();
            }
        }
        entries.insert(digest, Verified { identity, key });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            user_id: "alice".into(),
            email: None,
            expires_at: 100.0,
        }
    }

    #[test]
    fn hits_until_expiry_and_never_for_another_token() {
        let cache = TokenCache::default();
        let token = digest("a.b.c");
        cache.insert(token, alice(), None, 0.0);
        assert_eq!(cache.get(&token, 99.0, |_| true), Some(alice()));
        assert_eq!(cache.get(&digest("a.b.d"), 99.0, |_| true), None);
        assert_eq!(cache.get(&token, 100.0, |_| true), None, "expired");
        assert_eq!(cache.get(&token, 50.0, |_| true), None, "and forgotten");
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::default();
        for i in 0..(CAPACITY * 2) {
            cache.insert(digest(&i.to_string()), alice(), None, 0.0);
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }
}
