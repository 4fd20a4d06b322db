//! The registered claims we check, and the identity they yield.

use serde::Deserialize;

use super::Identity;

/// Audience Better Auth gives its session-cache cookie tokens: never an API token.
const SESSION_CACHE_AUDIENCE: &str = "better-auth:session-cache";

#[derive(Debug, Deserialize)]
pub struct Claims {
    sub: Option<String>,
    /// Kept loose: a malformed email must not make an otherwise valid token fail.
    email: Option<serde_json::Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Option<String>,
    aud: Option<Audience>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// What the claims must satisfy beyond a valid signature.
#[derive(Debug, Clone, Default)]
pub struct ClaimsPolicy {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl ClaimsPolicy {
    /// `now` in seconds since the epoch. No leeway: `exp` is a hard limit.
    pub fn check(&self, claims: Claims, now: f64) -> Result<Identity, &'static str> {
        let exp = claims.exp.ok_or("missing exp claim")?;
        if now >= exp {
            return Err("token expired");
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err("token not yet valid");
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err("wrong issuer");
        }
        if claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(SESSION_CACHE_AUDIENCE))
        {
            return Err("not an API token");
        }
        if let Some(audience) = &self.audience
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(audience))
        {
            return Err("wrong audience");
        }
        let user_id = claims
            .sub
            .filter(|s| !s.trim().is_empty())
            .ok_or("missing subject")?;
        let email = claims.email.and_then(|e| e.as_str().map(str::to_owned));
        Ok(Identity { user_id, email })
    }
}
