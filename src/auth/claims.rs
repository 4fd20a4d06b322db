//! The registered claims we check, and the identity they yield.

use serde::Deserialize;

use super::Identity;
use super::TokenRejection;

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

/// Longest `sub` accepted, in characters.
pub const MAX_USER_ID_CHARS: usize = 255;

/// 1 to 255 characters, none of them a control character (Unicode category
/// Cc): what every database can store and index. Blank ones are refused too.
pub fn is_valid_user_id(sub: &str) -> bool {
    !sub.trim().is_empty()
        && sub.chars().count() <= MAX_USER_ID_CHARS
        && !sub.chars().any(char::is_control)
}

/// What the claims must satisfy beyond a valid signature.
#[derive(Debug, Clone, Default)]
pub struct ClaimsPolicy {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl ClaimsPolicy {
    /// `now` in seconds since the epoch. No leeway: `exp` is a hard limit.
    /// The identity, holding until its `expires_at` (`exp`).
    pub fn check(&self, claims: Claims, now: f64) -> Result<Identity, TokenRejection> {
        let exp = claims.exp.ok_or(TokenRejection::MissingExpiry)?;
        if now >= exp {
            return Err(TokenRejection::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(TokenRejection::NotYetValid);
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(TokenRejection::WrongIssuer);
        }
        if claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(SESSION_CACHE_AUDIENCE))
        {
            return Err(TokenRejection::NotAnApiToken);
        }
        if let Some(audience) = &self.audience
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(audience))
        {
            return Err(TokenRejection::WrongAudience);
        }
        let user_id = claims
            .sub
            .filter(|s| !s.trim().is_empty())
            .ok_or(TokenRejection::MissingSubject)?;
        if !is_valid_user_id(&user_id) {
            return Err(TokenRejection::InvalidSubject);
        }
        let email = claims.email.and_then(|e| e.as_str().map(str::to_owned));
        Ok(Identity {
            user_id,
            email,
            expires_at: exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert!(is_valid_user_id("Kx3b9Qe2mZ"));
        assert!(is_valid_user_id(&"é".repeat(255)));
        assert!(is_valid_user_id("user with spaces"));
        for bad in [
            String::new(),
            "   ".into(),
            "x".repeat(256),
            "x".repeat(3000),
            "nul\0inside".into(),
            "new\nline".into(),
            "tab\t".into(),
            "del\u{7f}".into(),
            "c1\u{85}".into(),
        ] {
            assert!(!is_valid_user_id(&bad), "{bad:?}");
        }
    }
}
