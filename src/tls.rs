//! TLS to PostgreSQL as libpq reads a URL's `sslmode`, `sslrootcert` and
//! `channel_binding`. tokio-postgres knows only disable/prefer/require and
//! refuses the rest, so they are read here and taken out of the URL.
//!
//! `channel_binding=require` (Neon's URLs): request connections
//! (tokio-postgres) authenticate with SCRAM-SHA-256-PLUS, which binds the
//! password exchange to this TLS connection's server certificate, so a man
//! in the middle cannot complete it. The migrations' driver (sqlx) has no
//! channel binding, so every connection also verifies the server's
//! certificate and host name (`verify-full`): one rule for all of them.

use std::sync::Arc;

use percent_encoding::percent_decode_str;
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
    /// TLS if the server offers it, the server not authenticated (`prefer`, `allow`).
    Opportunistic,
    /// TLS that does not authenticate the server (`sslmode=require`).
    Encrypted,
    /// The server's certificate verified (`verify-ca`), and its host name (`verify-full`).
    Verified { host_name: bool },
}

/// A connection's settings and TLS connector.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub protection: Protection,
    /// SCRAM-SHA-256-PLUS required (`channel_binding=require`).
    pub channel_binding: bool,
}

impl Target {
    /// One connection outside any pool (its driver spawned): start-up's
    /// checks, as the login role itself.
    pub async fn connect(self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Says once what protects the connections: a warning if the server is
    /// not authenticated.
    pub fn report(&self) {
        let tls = match self.protection {
            Protection::Plain => "no TLS (sslmode=disable)",
            Protection::Opportunistic => {
                "TLS if the server offers it, the server not authenticated (sslmode=prefer)"
            }
            Protection::Encrypted => {
                "TLS, but the server is not authenticated: a man in the middle could read and change \
                 everything (sslmode=require; use sslmode=verify-full or channel_binding=require)"
            }
            Protection::Verified { host_name: false } => {
                "TLS, the server's certificate verified, not its host name (sslmode=verify-ca)"
            }
            Protection::Verified { host_name: true } => {
                "TLS, the server's certificate and host name verified (verify-full)"
            }
        };
        let text = match self.channel_binding {
            true => format!(
                "{tls}, and SCRAM-SHA-256-PLUS channel binding on request connections \
                 (channel_binding=require; the migrations' driver has none, hence verify-full)"
            ),
            false => tls.to_owned(),
        };
        match self.protection {
            Protection::Encrypted => tracing::warn!("PostgreSQL connections: {text}"),
            _ => tracing::info!("PostgreSQL connections: {text}"),
        }
    }
}

/// A URL's TLS parameters, as libpq reads them.
struct Params {
    sslmode: String,
    root_cert: Option<String>,
    channel_binding: ChannelBinding,
}

/// Splits `url` into its TLS parameters and the rest.
fn split(url: &str) -> Result<(Url, Params), String> {
    let invalid = |e: &dyn std::fmt::Display| format!("invalid database URL: {e}");
    let mut parsed = Url::parse(url).map_err(|e| invalid(&e))?;
    let tls_param = |k: &str| matches!(k, "sslmode" | "sslrootcert" | "channel_binding");
    // As libpq reads a query: `%XX` decoded, a `+` a plus (not form
    // encoding's space). The TLS parameters are taken out, the rest goes on
    // as written.
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let (mut tls, mut kept) = (Vec::new(), Vec::new());
    for pair in parsed.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k);
        match tls_param(&key) {
            true => tls.push((key, decode(v))),
            false if !pair.is_empty() => kept.push(pair.to_owned()),
            false => {}
        }
    }
    let param = |name: &str| {
        tls.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let kept = kept.join("&");
    parsed.set_query((!kept.is_empty()).then_some(kept.as_str()));
    let channel_binding = match param("channel_binding").as_deref() {
        None | Some("prefer") => ChannelBinding::Prefer,
        Some("require") => ChannelBinding::Require,
        Some("disable") => ChannelBinding::Disable,
        Some(other) => return Err(invalid(&format!("unknown channel_binding {other:?}"))),
    };
    let mut sslmode = param("sslmode").unwrap_or_else(|| "prefer".to_owned());
    if channel_binding == ChannelBinding::Require {
        if sslmode == "disable" {
            return Err(invalid(
                &"channel_binding=require needs TLS, and sslmode is disable",
            ));
        }
        sslmode = "verify-full".to_owned();
    }
    let root_cert = param("sslrootcert");
    // libpq: with a root certificate given, `require` verifies the chain too.
    if sslmode == "require" && root_cert.is_some() {
        sslmode = "verify-ca".to_owned();
    }
    Ok((
        parsed,
        Params {
            sslmode,
            root_cert,
            channel_binding,
        },
    ))
}

/// Reads `url` (a `postgres://` URL).
pub fn target(url: &str) -> Result<Target, String> {
    let (parsed, params) = split(url)?;
    let invalid = |e: &dyn std::fmt::Display| format!("invalid database URL: {e}");
    let mut config: tokio_postgres::Config = parsed.as_str().parse().map_err(|e| invalid(&e))?;
    let (sslmode, root_cert) = (params.sslmode.as_str(), params.root_cert.as_deref());
    let protection = match sslmode {
        "disable" => Protection::Plain,
        "allow" | "prefer" => Protection::Opportunistic,
        "require" => Protection::Encrypted,
        "verify-ca" => Protection::Verified { host_name: false },
        "verify-full" => Protection::Verified { host_name: true },
        other => return Err(invalid(&format!("unknown sslmode {other:?}"))),
    };
    config.ssl_mode(match sslmode {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    });
    config.channel_binding(params.channel_binding);
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
        channel_binding: params.channel_binding == ChannelBinding::Require,
    })
}

/// Adds startup options (`-c name=value ...`) after the URL's own, which a
/// later one of the same name overrides.
pub fn add_options(config: &mut tokio_postgres::Config, options: &str) {
    let given = config.get_options().unwrap_or_default().to_owned();
    config.options(format!("{given} {options}"));
}

/// The URL for sqlx (migrations), which has no channel binding and logs
/// every parameter it does not know: `sslmode` as [`target`] reads it
/// (`verify-full` where channel binding is required), `sslrootcert` a file
/// (sqlx's default roots are the same webpki roots as `system`).
pub fn for_sqlx(url: &str) -> Result<String, String> {
    if url.starts_with("sqlite:") {
        return Ok(url.to_owned());
    }
    let (mut parsed, params) = split(url)?;
    // sqlx reads the query as a form: a plus written for a plus is `%2B` to it.
    let query = parsed.query().map(|q| q.replace('+', "%2B"));
    parsed.set_query(query.as_deref());
    let mut pairs = vec![("sslmode", params.sslmode)];
    if let Some(root) = params.root_cert.filter(|r| r != "system") {
        pairs.push(("sslrootcert", root));
    }
    parsed.query_pairs_mut().extend_pairs(pairs);
    Ok(parsed.to_string())
}

/// Whether `err` (from connecting) is the server's certificate failing
/// verification, and why, in words.
pub fn certificate_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(e) = source {
        // An I/O error's `source()` skips the error it wraps (rustls's, here).
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Error>());
        if let Some(Error::InvalidCertificate(cert)) = wrapped.or_else(|| e.downcast_ref::<Error>())
        {
            return Some(match cert {
                CertificateError::UnknownIssuer => {
                    "it is signed by no certificate authority in sslrootcert (none given: the system's roots)".to_owned()
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "it is not valid for the URL's host name".to_owned()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".to_owned(),
                other => format!("{other:?}"),
            });
        }
        source = e.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use tokio_postgres::config::SslMode;

    /// The URL's other parameters reach tokio-postgres as written, spaces
    /// and plus signs included.
    #[test]
    fn other_parameters_keep_their_spaces_and_plus_signs() {
        let url = "postgres://u@h/db?sslmode=disable&options=-c%20search_path%3Da%2Bb&application_name=x+y";
        let target = super::target(url).expect("a valid URL");
        assert_eq!(target.config.get_options(), Some("-c search_path=a+b"));
        assert_eq!(target.config.get_application_name(), Some("x+y"));
        assert_eq!(target.config.get_ssl_mode(), SslMode::Disable);
        // sqlx, which reads a form, gets the same values.
        let url = super::for_sqlx(url).expect("a valid URL");
        let url = url::Url::parse(&url).expect("a URL");
        let pairs: Vec<_> = url.query_pairs().collect();
        assert!(
            pairs.contains(&("options".into(), "-c search_path=a+b".into())),
            "{url}"
        );
        assert!(
            pairs.contains(&("application_name".into(), "x+y".into())),
            "{url}"
        );
        assert!(
            pairs.contains(&("sslmode".into(), "disable".into())),
            "{url}"
        );
    }
}
