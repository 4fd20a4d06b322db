//! Token minting for tests, done by hand (not with the crate under test):
//! HMAC tokens and asymmetric keys of each JWKS algorithm, generated here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// `header.payload` for these JSON values.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

pub fn hs_token(alg: &str, secret: &[u8], claims: &Value) -> String {
    hs_token_with_header(&json!({"alg": alg, "typ": "JWT"}), secret, claims)
}

pub fn hs_token_with_header(header: &Value, secret: &[u8], claims: &Value) -> String {
    use hmac_sign::sign;
    let input = signing_input(header, claims);
    let sig = sign(
        header["alg"].as_str().unwrap_or("HS256"),
        secret,
        input.as_bytes(),
    );
    format!("{input}.{}", b64(&sig))
}

mod hmac_sign {
    use sha2::{Digest, Sha256, Sha384, Sha512};

    /// HMAC (RFC 2104) over the SHA-2 functions, enough for test tokens.
    pub fn sign(alg: &str, key: &[u8], msg: &[u8]) -> Vec<u8> {
        match alg {
            "HS384" => hmac::<Sha384>(128, key, msg),
            "HS512" => hmac::<Sha512>(128, key, msg),
            _ => hmac::<Sha256>(64, key, msg),
        }
    }

    fn hmac<D: Digest>(block: usize, key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > block {
            D::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(block, 0);
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let mut h = D::new();
        h.update(&inner);
        h.update(msg);
        let inner_hash = h.finalize();
        let mut h = D::new();
        h.update(&outer);
        h.update(inner_hash);
        h.finalize().to_vec()
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims like Better Auth's: `sub`, `email`, `iat`, `exp` 15 minutes ahead.
pub fn claims_for(sub: &str) -> Value {
    json!({"sub": sub, "email": format!("{sub}@example.com"), "iat": now(), "exp": now() + 900})
}

pub enum TestKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

impl TestKey {
    pub fn ed25519() -> Self {
        TestKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&rand::random::<
            [u8; 32],
        >()))
    }

    pub fn p256() -> Self {
        loop {
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                return TestKey::P256(k);
            }
        }
    }

    pub fn p521() -> Self {
        loop {
            let mut bytes = [0u8; 66];
            bytes[2..].copy_from_slice(&rand::random::<[u8; 64]>());
            bytes[1] = rand::random();
            bytes[0] = rand::random::<u8>() & 1;
            if let Ok(k) = p521::ecdsa::SigningKey::from_slice(&bytes) {
                return TestKey::P521(k);
            }
        }
    }

    /// A 2048-bit RSA key, generated once per test binary (`rsa` is built
    /// optimised even in debug, see Cargo.toml, so this takes well under a second).
    pub fn rsa() -> Self {
        static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key generation")
        });
        TestKey::Rsa(key.clone())
    }

    /// The algorithm Better Auth would use with this key (RSA: RS256).
    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Ed25519(_) => "EdDSA",
            TestKey::P256(_) => "ES256",
            TestKey::P521(_) => "ES512",
            TestKey::Rsa(_) => "RS256",
        }
    }

    /// The public JWK, as Better Auth publishes it (no `use`; `alg` optional).
    pub fn jwk(&self, kid: &str) -> Value {
        match self {
            TestKey::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.verifying_key().as_bytes()), "kid": kid, "alg": "EdDSA"})
            }
            TestKey::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()), "kid": kid})
            }
            TestKey::P521(k) => {
                let sec1 = k.verifying_key().to_sec1_bytes();
                let (x, y) = sec1[1..].split_at(66);
                json!({"kty": "EC", "crv": "P-521", "x": b64(x), "y": b64(y), "kid": kid, "alg": "ES512"})
            }
            TestKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                json!({"kty": "RSA", "n": b64(&k.n().to_bytes_be()), "e": b64(&k.e().to_bytes_be()), "kid": kid})
            }
        }
    }

    /// A token signed with this key's algorithm.
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        self.token_with_header(&json!({"alg": self.alg(), "kid": kid}), claims)
    }

    /// A token with this exact header, signed as its `alg` says (RSA: RS256 or PS256).
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let sig = self.sign(header["alg"].as_str().unwrap_or(""), input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    pub fn sign(&self, alg: &str, msg: &[u8]) -> Vec<u8> {
        match self {
            TestKey::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(msg).to_bytes().to_vec()
            }
            TestKey::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_bytes().to_vec()
            }
            TestKey::P521(k) => {
                use p521::ecdsa::signature::Signer;
                let sig: p521::ecdsa::Signature = k.sign(msg);
                sig.to_bytes().to_vec()
            }
            TestKey::Rsa(k) => {
                use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
                if alg == "PS256" {
                    let signer = rsa::pss::SigningKey::<sha2::Sha256>::new(k.clone());
                    signer.sign_with_rng(&mut rand_core::OsRng, msg).to_vec()
                } else {
                    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.clone());
                    signer.sign(msg).to_vec()
                }
            }
        }
    }

    /// The raw public key bytes, as an attacker would use them as an HMAC secret.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            TestKey::Ed25519(k) => k.verifying_key().as_bytes().to_vec(),
            TestKey::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            TestKey::P521(k) => k.verifying_key().to_sec1_bytes().to_vec(),
            TestKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                k.n().to_bytes_be()
            }
        }
    }
}
