//! Splitting and decoding a compact JWS, before any key is involved.
//!
//! We parse the header ourselves (rather than with `jsonwebtoken::Header`)
//! because the contract accepts ES512, which that type cannot represent, and
//! because we want to refuse `crit` and foreign `typ` values explicitly.

use super::TokenRejection;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Longer tokens are refused before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signature algorithms we accept. Anything else (`none` included) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    EdDSA,
    ES256,
    ES512,
    RS256,
    PS256,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "EdDSA" => Alg::EdDSA,
            "ES256" => Alg::ES256,
            "ES512" => Alg::ES512,
            "RS256" => Alg::RS256,
            "PS256" => Alg::PS256,
            _ => return None,
        })
    }

    /// Verified with the shared secret; every other algorithm needs a JWKS key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    /// The `jsonwebtoken` algorithm, for all but ES512 (verified with `p521`).
    pub fn jsonwebtoken(self) -> Option<jsonwebtoken::Algorithm> {
        use jsonwebtoken::Algorithm as J;
        Some(match self {
            Alg::HS256 => J::HS256,
            Alg::HS384 => J::HS384,
            Alg::HS512 => J::HS512,
            Alg::EdDSA => J::EdDSA,
            Alg::ES256 => J::ES256,
            Alg::RS256 => J::RS256,
            Alg::PS256 => J::PS256,
            Alg::ES512 => return None,
        })
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

/// A token split into its parts, signature not yet checked.
pub struct Jws<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `base64(header) "." base64(payload)`: the signed bytes.
    pub signing_input: &'t str,
    pub signature_b64: &'t str,
    payload_b64: &'t str,
}

impl<'t> Jws<'t> {
    pub fn parse(token: &'t str) -> Result<Self, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejection::Malformed);
        };
        let header: RawHeader =
            decode_json(header_b64).ok_or(TokenRejection::MalformedJoseHeader)?;
        let alg = Alg::from_name(&header.alg).ok_or(TokenRejection::UnsupportedAlgorithm)?;
        if header.crit.is_some() {
            return Err(TokenRejection::CriticalHeader);
        }
        // Better Auth's API tokens carry no `typ`; its session-cache cookie tokens
        // (`better-auth.session-cache+jwt`) are signed with the same key but are
        // not API tokens.
        if let Some(typ) = &header.typ
            && !["jwt", "at+jwt", "application/at+jwt"].contains(&typ.to_ascii_lowercase().as_str())
        {
            return Err(TokenRejection::UnsupportedType);
        }
        if signature_b64.is_empty() {
            return Err(TokenRejection::MissingSignature);
        }
        Ok(Jws {
            alg,
            kid: header.kid,
            signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
            signature_b64,
            payload_b64,
        })
    }

    /// Checks the signature with a `jsonwebtoken` key (every algorithm but ES512).
    pub fn verify_with(&self, key: &jsonwebtoken::DecodingKey) -> bool {
        let Some(alg) = self.alg.jsonwebtoken() else {
            return false;
        };
        jsonwebtoken::crypto::verify(self.signature_b64, self.signing_input.as_bytes(), key, alg)
            .unwrap_or(false)
    }

    pub fn signature(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(self.signature_b64).ok()
    }

    /// The claims; call only after the signature has been verified.
    pub fn claims<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        decode_json(self.payload_b64)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}
