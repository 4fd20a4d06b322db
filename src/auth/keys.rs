//! Public keys from a JWKS, each bound to the one algorithm family it may
//! verify, so a token can never pick how its own key is used.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use p521::ecdsa::signature::Verifier as _;
use serde::Deserialize;

use super::token::{Alg, Jws};

/// A JWK as published at `/api/auth/jwks` (only the members we use).
#[derive(Debug, Deserialize)]
pub struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

enum Material {
    Ed25519(DecodingKey),
    P256(DecodingKey),
    P521(p521::ecdsa::VerifyingKey),
    Rsa(DecodingKey),
}

pub struct PublicKey {
    pub kid: Option<String>,
    material: Material,
    /// The JWK's own `alg`, when it names one: then only that algorithm.
    alg: Option<String>,
}

impl PublicKey {
    /// `None` for keys we cannot use (encryption keys, other curves, bad data).
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let material = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                let x = jwk.x.as_deref()?;
                (URL_SAFE_NO_PAD.decode(x).ok()?.len() == 32).then_some(())?;
                Material::Ed25519(DecodingKey::from_ed_components(x).ok()?)
            }
            ("EC", Some("P-256")) => Material::P256(
                DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()?,
            ),
            ("EC", Some("P-521")) => {
                let mut sec1 = vec![0x04];
                sec1.extend(left_pad(
                    URL_SAFE_NO_PAD.decode(jwk.x.as_deref()?).ok()?,
                    66,
                )?);
                sec1.extend(left_pad(
                    URL_SAFE_NO_PAD.decode(jwk.y.as_deref()?).ok()?,
                    66,
                )?);
                Material::P521(p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok()?)
            }
            ("RSA", _) => Material::Rsa(
                DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?,
            ),
            _ => return None,
        };
        Some(PublicKey {
            kid: jwk.kid.clone(),
            material,
            alg: jwk.alg.clone(),
        })
    }

    /// Whether this key may verify a token of algorithm `alg`.
    pub fn allows(&self, alg: Alg) -> bool {
        let family = matches!(
            (&self.material, alg),
            (Material::Ed25519(_), Alg::EdDSA)
                | (Material::P256(_), Alg::ES256)
                | (Material::P521(_), Alg::ES512)
                | (Material::Rsa(_), Alg::RS256 | Alg::PS256)
        );
        family
            && self
                .alg
                .as_deref()
                .is_none_or(|declared| declared == alg_name(alg))
    }

    pub fn verify(&self, jws: &Jws<'_>) -> bool {
        if !self.allows(jws.alg) {
            return false;
        }
        match &self.material {
            Material::P521(key) => {
                let Some(signature) = jws
                    .signature()
                    .and_then(|s| p521::ecdsa::Signature::from_slice(&s).ok())
                else {
                    return false;
                };
                key.verify(jws.signing_input.as_bytes(), &signature).is_ok()
            }
            Material::Ed25519(key) | Material::P256(key) | Material::Rsa(key) => {
                jws.verify_with(key)
            }
        }
    }
}

fn alg_name(alg: Alg) -> &'static str {
    match alg {
        Alg::HS256 => "HS256",
        Alg::HS384 => "HS384",
        Alg::HS512 => "HS512",
        Alg::EdDSA => "EdDSA",
        Alg::ES256 => "ES256",
        Alg::ES512 => "ES512",
        Alg::RS256 => "RS256",
        Alg::PS256 => "PS256",
    }
}

/// JWK coordinates may omit leading zero bytes; SEC1 wants fixed width.
fn left_pad(mut bytes: Vec<u8>, width: usize) -> Option<Vec<u8>> {
    if bytes.len() > width {
        return None;
    }
    let mut out = vec![0; width - bytes.len()];
    out.append(&mut bytes);
    Some(out)
}
