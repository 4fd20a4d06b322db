//! Who is calling: bearer-token verification and the extractors built on it.
//!
//! Identity comes only from a verified JWT in `Authorization: Bearer`:
//! HS256/384/512 with `BETTER_AUTH_SECRET`, or the Better Auth JWT plugin's
//! asymmetric keys from its JWKS. Nothing in a URL, query or body counts.

mod cache;
mod claims;
mod jwks;
mod keys;
mod rejection;
mod token;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;

pub use claims::{ClaimsPolicy, MAX_USER_ID_CHARS, is_valid_user_id};
pub use jwks::MIN_REFETCH_INTERVAL;
pub use rejection::TokenRejection;

use std::sync::Arc;

use crate::config::AuthSettings;
use cache::TokenCache;
use jwks::JwksCache;
use keys::PublicKey;
use token::Jws;

/// A verified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The Better Auth user id (`sub`).
    pub user_id: String,
    pub email: Option<String>,
    /// The token's `exp`, seconds since the epoch: a live stream ends then.
    pub expires_at: f64,
}

/// Verifies bearer tokens against the configured sources. Built once at
/// start-up: keys are never parsed per request.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    policy: ClaimsPolicy,
    verified: TokenCache,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Self {
        Verifier {
            secret: settings.secret().map(DecodingKey::from_secret),
            jwks: settings.better_auth_jwks_url.clone().map(JwksCache::new),
            policy: ClaimsPolicy {
                issuer: settings.jwt_issuer.clone(),
                audience: settings.jwt_audience.clone(),
            },
            verified: TokenCache::default(),
        }
    }

    /// The identity in `token`, or why it is refused (safe to show the caller).
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenRejection> {
        if token.len() > token::MAX_TOKEN_BYTES {
            return Err(TokenRejection::TooLong);
        }
        let now = unix_now();
        let digest = cache::digest(token);
        let key_is_current =
            |key: &Arc<PublicKey>| self.jwks.as_ref().is_some_and(|j| j.is_current(key));
        if let Some(identity) = self.verified.get(&digest, now, key_is_current) {
            return Ok(identity);
        }
        let jws = Jws::parse(token)?;
        let (genuine, key) = if jws.alg.is_hmac() {
            // HS* only ever with the shared secret, never with a JWKS key.
            let Some(secret) = &self.secret else {
                return Err(TokenRejection::UnsupportedAlgorithm);
            };
            (jws.verify_with(secret), None)
        } else {
            let Some(jwks) = &self.jwks else {
                return Err(TokenRejection::UnsupportedAlgorithm);
            };
            let key = jwks.key_for(jws.kid.as_deref(), jws.alg).await?;
            (key.verify(&jws), Some(key))
        };
        if !genuine {
            return Err(TokenRejection::BadSignature);
        }
        let claims = jws.claims().ok_or(TokenRejection::MalformedClaims)?;
        let identity = self.policy.check(claims, now)?;
        self.verified.insert(digest, identity.clone(), key, now);
        Ok(identity)
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Mints an HS256 token for `sub` with the given secret (the `token` command
/// and `serve --dev` use it; so do the tests).
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    email: Option<&str>,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut claims = serde_json::json!({ "sub": sub, "iat": now, "exp": now + ttl_secs });
    if let Some(email) = email {
        claims["email"] = email.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}
