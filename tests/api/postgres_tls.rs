//! TLS to PostgreSQL as libpq reads a URL, against a private cluster that
//! serves TLS with a certificate from a private authority (valid for
//! `localhost`, not for `127.0.0.1`) and authenticates with SCRAM: every
//! URL form, from both host names. What serves, serves over TLS and says
//! once how the connection is protected; what must not connect stops
//! start-up with the cause (and `sslrootcert` where a certificate failed).
//! `channel_binding=require` is real SCRAM-SHA-256-PLUS: a man in the
//! middle holding a certificate the authority issued for `localhost`
//! passes `verify-full`, and still cannot complete the password exchange.

use std::path::Path;
use std::sync::Arc;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::certs::TestCerts;
use crate::common::pg_cluster::PgCluster;
use crate::common::process::{Server, serve_until_it_stops};
use crate::common::runtime;

const SECRET: &str = "tls-test-secret-0123456789abcdef0123";
const APP_PASSWORD: &str = "app-Pa55word";
const PLAIN_PASSWORD: &str = "plain-Pa55word";

/// The cluster: `postgres` (trust, for the test's own looks), `app` (owns
/// database `todo`, may create roles as Neon's default role may; SCRAM,
/// over TLS only), `plain` (a password sent in clear over TLS: no SCRAM,
/// so no channel binding).
async fn tls_cluster(certs: &TestCerts) -> Option<PgCluster> {
    let cluster = PgCluster::start_new().await?;
    cluster
        .enable_tls(&certs.server_cert, &certs.server_key)
        .await
        .unwrap();
    cluster
        .set_hba(
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             hostssl all app 127.0.0.1/32 scram-sha-256\n\
             hostssl all plain 127.0.0.1/32 password\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .await
        .unwrap();
    let admin = admin(&cluster).await;
    for sql in [
        format!("CREATE ROLE app LOGIN CREATEROLE PASSWORD '{APP_PASSWORD}'"),
        format!("CREATE ROLE plain LOGIN PASSWORD '{PLAIN_PASSWORD}'"),
        "CREATE DATABASE todo OWNER app".to_owned(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    Some(cluster)
}

async fn admin(cluster: &PgCluster) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn url(user: &str, password: &str, host: &str, port: u16, query: &str) -> String {
    format!("postgres://{user}:{password}@{host}:{port}/todo?{query}")
}

fn env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BETTER_AUTH_SECRET", SECRET.to_owned()),
        ("DATABASE_URL", url.to_owned()),
        ("DB_STARTUP_TIMEOUT", "3".to_owned()),
    ]
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// What a case must do.
enum Expect {
    /// Comes up, serves, and says this of its connections.
    Serves(&'static str),
    /// Stops start-up, its last line saying all of these.
    Stops(&'static [&'static str]),
}

const NOT_AUTHENTICATED: &str = "TLS, but the server is not authenticated";
const CERTIFICATE_AND_NAME: &str = "the server's certificate and host name verified (verify-full)";
const CERTIFICATE_ONLY: &str =
    "the server's certificate verified, not its host name (sslmode=verify-ca)";
const UNKNOWN_AUTHORITY: &[&str] = &[
    "certificate does not verify",
    "signed by no certificate authority in sslrootcert",
    "sslrootcert=/path/to/ca.pem",
];
const WRONG_NAME: &[&str] = &[
    "certificate does not verify",
    "not valid for the URL's host name",
    "sslrootcert",
];

/// Runs the service on `url` and checks `expect`; returns its log.
fn check(dir: &Path, cluster: &PgCluster, what: &str, url: &str, expect: &Expect) -> String {
    let env = env(url);
    let log = match expect {
        Expect::Serves(says) => {
            let server = Server::start(dir, &pairs(&env), &[])
                .unwrap_or_else(|e| panic!("{what}: does not come up: {e}"));
            let bearer = todo_api::auth::mint_hs256(SECRET.as_bytes(), "ada", None, 600).unwrap();
            let client = Client::new();
            let created: Value = client
                .post(server.url("/api/tasks"))
                .bearer_auth(&bearer)
                .json(&json!({"title": what}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(created["title"], what, "{what}: {created}");
            assert_all_connections_encrypted(cluster, what);
            let started = server.log_so_far().join("\n");
            let (status, rest) = server.terminate();
            assert!(status.success(), "{what}: {status}");
            let log = format!("{started}\n{rest}");
            let said: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("PostgreSQL connections:"))
                .collect();
            assert_eq!(said.len(), 1, "{what}: said once:\n{log}");
            assert!(said[0].contains(says), "{what}: {}", said[0]);
            let warned = said[0].contains("WARN");
            assert_eq!(warned, *says == NOT_AUTHENTICATED, "{what}: {}", said[0]);
            log
        }
        Expect::Stops(says) => {
            let (status, log) = serve_until_it_stops(dir, &pairs(&env), what);
            assert!(!status.success(), "{what}: {status}");
            let last = log.last().cloned().unwrap_or_default();
            for text in *says {
                assert!(last.contains(text), "{what}: {text:?} not in {last}");
            }
            assert!(
                !last.contains(APP_PASSWORD) && !last.contains(PLAIN_PASSWORD),
                "{last}"
            );
            log.join("\n")
        }
    };
    for noise in ["unrecognized", "ignoring", "unknown query parameter"] {
        assert!(!log.contains(noise), "{what}: {noise:?} in\n{log}");
    }
    log
}

/// From the server's side: every connection of `app` uses TLS.
fn assert_all_connections_encrypted(cluster: &PgCluster, what: &str) {
    runtime().block_on(async {
        let admin = admin(cluster).await;
        let row = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'app'",
                &[],
            )
            .await
            .unwrap();
        let (total, encrypted): (i64, i64) = (row.get(0), row.get(1));
        assert!(total >= 1, "{what}: the service keeps a connection");
        assert_eq!(encrypted, total, "{what}: every connection uses TLS");
    });
}

/// Every URL form, from `host` (`localhost`: the certificate's name;
/// `127.0.0.1`: not its name).
fn url_forms_from(host: &str) {
    let rt = runtime();
    let certs = TestCerts::new();
    let Some(cluster) = rt.block_on(tls_cluster(&certs)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (certs.ca.display(), certs.other_ca.display());
    let named = host == "localhost";
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "sslmode=require",
            "sslmode=require".into(),
            Expect::Serves(NOT_AUTHENTICATED),
        ),
        (
            "Neon's URL as copied, from a private authority",
            "sslmode=require&channel_binding=require".into(),
            Expect::Stops(UNKNOWN_AUTHORITY),
        ),
        (
            "Neon's URL with the authority",
            format!("sslmode=require&channel_binding=require&sslrootcert={ca}"),
            match named {
                true => Expect::Serves("SCRAM-SHA-256-PLUS channel binding"),
                false => Expect::Stops(WRONG_NAME),
            },
        ),
        (
            "verify-full",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            match named {
                true => Expect::Serves(CERTIFICATE_AND_NAME),
                false => Expect::Stops(WRONG_NAME),
            },
        ),
        (
            "verify-ca",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            Expect::Serves(CERTIFICATE_ONLY),
        ),
        (
            "require with sslrootcert (libpq: verify-ca)",
            format!("sslmode=require&sslrootcert={ca}"),
            Expect::Serves(CERTIFICATE_ONLY),
        ),
        (
            "verify-ca with another authority",
            format!("sslmode=verify-ca&sslrootcert={other}"),
            Expect::Stops(UNKNOWN_AUTHORITY),
        ),
        (
            "verify-full with no sslrootcert (the system's roots)",
            "sslmode=verify-full".into(),
            Expect::Stops(UNKNOWN_AUTHORITY),
        ),
    ];
    for (what, query, expect) in &cases {
        let url = url("app", APP_PASSWORD, host, cluster.port(), query);
        check(
            dir.path(),
            &cluster,
            &format!("{what} ({host})"),
            &url,
            expect,
        );
    }
}

#[test]
fn url_forms_from_localhost() {
    url_forms_from("localhost");
}

#[test]
fn url_forms_from_127_0_0_1() {
    url_forms_from("127.0.0.1");
}

/// A server that takes the password without SCRAM (here in clear, over
/// TLS) cannot bind it to the connection: `channel_binding=require` refuses
/// to send it.
#[test]
fn channel_binding_required_refuses_a_server_without_scram() {
    let rt = runtime();
    let certs = TestCerts::new();
    let Some(cluster) = rt.block_on(tls_cluster(&certs)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let query = format!("channel_binding=require&sslrootcert={}", certs.ca.display());
    let url = url("plain", PLAIN_PASSWORD, "localhost", cluster.port(), &query);
    check(
        dir.path(),
        &cluster,
        "no SCRAM",
        &url,
        &Expect::Stops(&["authentication failed", "channel binding"]),
    );
}

/// A man in the middle with a certificate the same authority issued for
/// `localhost` (mis-issued, or a stolen key): `verify-full` alone
/// (`channel_binding=disable`) lets him read everything; with channel
/// binding (`require`, and libpq's default `prefer` on a server that offers
/// it) the server refuses the password exchange he relays, and start-up
/// stops.
#[test]
fn channel_binding_defeats_a_man_in_the_middle_that_verify_full_lets_through() {
    let rt = runtime();
    let certs = TestCerts::new();
    let Some(cluster) = rt.block_on(tls_cluster(&certs)) else {
        return;
    };
    let relay = rt.block_on(Impostor::start(&certs, cluster.port()));
    let dir = tempfile::tempdir().unwrap();
    let ca = certs.ca.display();
    let through = |query: String| url("app", APP_PASSWORD, "localhost", relay.port, &query);
    check(
        dir.path(),
        &cluster,
        "verify-full without channel binding, through the impostor",
        &through(format!(
            "sslmode=verify-full&sslrootcert={ca}&channel_binding=disable"
        )),
        &Expect::Serves(CERTIFICATE_AND_NAME),
    );
    assert!(
        relay.relayed() >= 1,
        "the traffic went through the impostor"
    );
    for (what, query) in [
        (
            "channel binding required",
            format!("sslmode=require&channel_binding=require&sslrootcert={ca}"),
        ),
        (
            "channel binding preferred",
            format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    ] {
        check(
            dir.path(),
            &cluster,
            &format!("{what}, through the impostor"),
            &through(query),
            &Expect::Stops(&[
                "authentication failed",
                "SCRAM channel binding check failed",
            ]),
        );
    }
}

/// Relays PostgreSQL connections to the real server, ending the client's
/// TLS with its own certificate and opening its own TLS to the server.
struct Impostor {
    port: u16,
    relayed: Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl Impostor {
    async fn start(certs: &TestCerts, upstream: u16) -> Impostor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(&certs.impostor_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&certs.impostor_key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&certs.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relayed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&relayed);
        let task = tokio::spawn(async move {
            while let Ok((mut victim, _)) = listener.accept().await {
                let (acceptor, connector) = (acceptor.clone(), connector.clone());
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut request = [0u8; 8];
                    victim.read_exact(&mut request).await.ok()?;
                    if request != SSL_REQUEST {
                        return None;
                    }
                    victim.write_all(b"S").await.ok()?;
                    let mut victim = acceptor.accept(victim).await.ok()?;
                    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await.ok()?;
                    server.write_all(&SSL_REQUEST).await.ok()?;
                    let mut answer = [0u8; 1];
                    server.read_exact(&mut answer).await.ok()?;
                    let name = ServerName::try_from("localhost").ok()?;
                    let mut server = connector.connect(name, server).await.ok()?;
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::io::copy_bidirectional(&mut victim, &mut server)
                        .await
                        .ok()
                });
            }
        });
        Impostor {
            port,
            relayed,
            _task: task,
        }
    }

    fn relayed(&self) -> usize {
        self.relayed.load(std::sync::atomic::Ordering::SeqCst)
    }
}
