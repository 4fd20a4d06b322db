//! TLS to PostgreSQL as libpq reads a URL's `sslmode`, `sslrootcert` and
//! `channel_binding`. tokio-postgres knows only disable/prefer/require and
//! refuses the rest, so they are read here and taken out of the URL.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;
use url::Url;

/// What protects the connection, as start-up reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// No TLS (`sslmode=disable`).
    Plain,
    /// TLS that does not authenticate the server (`sslmode=prefer`/`require`).
    Encrypted,
    /// The server's certificate verified (`verify-ca`), and its host name (`verify-full`).
    Verified { host_name: bool },
}

/// A connection's settings and TLS connector.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub protection: Protection,
}

/// Reads `url` (a `postgres://` URL).
pub fn target(url: &str) -> Result<Target, String> {
    let mut parsed = Url::parse(url).map_err(|e| format!("invalid database URL: {e}"))?;
    let tls_param = |k: &str| matches!(k, "sslmode" | "sslrootcert" | "channel_binding");
    let (tls, kept): (Vec<(String, String)>, Vec<_>) = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| tls_param(k));
    let param = |name: &str| {
        tls.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    let invalid = |e: &dyn std::fmt::Display| format!("invalid database URL: {e}");
    let mut config: tokio_postgres::Config = parsed.as_str().parse().map_err(|e| invalid(&e))?;
    let (sslmode, root_cert) = (param("sslmode").unwrap_or("prefer"), param("sslrootcert"));
    // libpq: with a root certificate given, `require` verifies the chain too.
    let protection = match (sslmode, root_cert) {
        ("disable", _) => Protection::Plain,
        ("allow" | "prefer", _) | ("require", None) => Protection::Encrypted,
        ("require" | "verify-ca", _) => Protection::Verified { host_name: false },
        ("verify-full", _) => Protection::Verified { host_name: true },
        (other, _) => return Err(invalid(&format!("unknown sslmode {other:?}"))),
    };
    config.ssl_mode(match sslmode {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    });
    config.channel_binding(match param("channel_binding") {
        None | Some("prefer" | "require") => ChannelBinding::Prefer,
        Some("disable") => ChannelBinding::Disable,
        Some(other) => return Err(invalid(&format!("unknown channel_binding {other:?}"))),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = match protection {
        Protection::Verified { .. } => Some(
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(root_cert)?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let host_name = protection == Protection::Verified { host_name: true };
    let verifier = Arc::new(Verifier {
        webpki,
        host_name,
        provider: Arc::clone(&provider),
    });
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
        protection,
    })
}

/// The URL for sqlx (migrations), which has no channel binding and logs
/// every parameter it does not know; `sslmode` and `sslrootcert` it knows.
pub fn for_sqlx(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_owned();
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "channel_binding")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    parsed.to_string()
}

/// `sslrootcert`'s certificates; none or `system`: the webpki roots.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read sslrootcert {path:?}: {e}"))?;
            if roots.add_parsable_certificates(certs).0 == 0 {
                return Err(format!("sslrootcert {path:?} holds no certificate"));
            }
        }
    }
    Ok(roots)
}

/// The server's certificate as `sslmode` asks: not at all (`prefer`,
/// `require`: encrypted, the handshake's signatures still checked), its
/// chain (`verify-ca`), or its chain and host name (`verify-full`).
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    host_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        cert: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(cert, intermediates, name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.host_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
