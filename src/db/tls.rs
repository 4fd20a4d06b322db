//! TLS to PostgreSQL as libpq reads a URL's `sslmode`, `sslrootcert` and
//! `channel_binding` (tokio-postgres knows only disable/prefer/require and
//! refuses the rest, so they are read here and taken out of the URL).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;
use url::Url;

/// What protects the connection, as start-up reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// No TLS (`sslmode=disable`, or `prefer` with a server without TLS).
    Plain,
    /// TLS that does not authenticate the server (`sslmode=require`/`prefer`).
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
    let (mut sslmode, mut root_cert, mut channel_binding) = (None, None, None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(key, value)| {
            let value = value.into_owned();
            match &*key {
                "sslmode" => sslmode = Some(value),
                "sslrootcert" => root_cert = Some(value),
                "channel_binding" => channel_binding = Some(value),
                _ => return Some((key.into_owned(), value)),
            }
            None
        })
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config: tokio_postgres::Config = parsed
        .as_str()
        .parse()
        .map_err(|e| format!("invalid database URL: {e}"))?;
    let sslmode = sslmode.as_deref().unwrap_or("prefer");
    // libpq: with a root certificate given, `require` verifies the chain too.
    let verify = match (sslmode, &root_cert) {
        ("disable" | "allow" | "prefer", _) => None,
        ("require", None) => None,
        ("require" | "verify-ca", _) => Some(false),
        ("verify-full", _) => Some(true),
        (other, _) => return Err(format!("invalid database URL: unknown sslmode {other:?}")),
    };
    config.ssl_mode(match sslmode {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    });
    config.channel_binding(match channel_binding.as_deref() {
        None | Some("prefer" | "require") => ChannelBinding::Prefer,
        Some("disable") => ChannelBinding::Disable,
        Some(other) => {
            return Err(format!(
                "invalid database URL: unknown channel_binding {other:?}"
            ));
        }
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let (tls, protection) = match verify {
        None => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            if sslmode == "disable" {
                Protection::Plain
            } else {
                Protection::Encrypted
            },
        ),
        Some(host_name) => {
            let roots = Arc::new(roots(root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| e.to_string())?;
            let config = if host_name {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
                    .with_no_client_auth()
            };
            (config, Protection::Verified { host_name })
        }
    };
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
        protection,
    })
}

/// `sslrootcert`'s certificates (`system`: the webpki roots), else the webpki roots.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read sslrootcert {path:?}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path:?} holds no certificate"));
            }
        }
    }
    Ok(roots)
}

/// `sslmode=require`/`prefer`: any certificate (the handshake's signatures
/// are still checked, so the connection is encrypted, not authenticated).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is verified, the host name is not.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
