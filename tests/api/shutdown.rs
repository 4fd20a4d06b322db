//! Shutdown of the real binary (the contract's "Shutdown"): on SIGTERM it
//! stops accepting, lets in-flight requests finish, closes idle connections
//! and exits within `SHUTDOWN_TIMEOUT` whatever the clients do; with
//! `SHUTDOWN_DRAIN_SECONDS` it first answers readiness 503 while still
//! serving, then closes the listener.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::process::Server;
use crate::common::raw::{RawConn, request};
use crate::common::{Backend, TestDb};

/// How much later than its bound an exit may come on a loaded machine.
const LATE: Duration = Duration::from_secs(3);

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bearer(secret: &str, user: &str) -> String {
    format!(
        "Bearer {}",
        todo_api::auth::mint_hs256(secret.as_bytes(), user, None, 600).unwrap()
    )
}

/// What one client of the load saw.
#[derive(Default)]
struct ClientLog {
    created: Vec<i64>,
    /// Requests sent (on an accepted connection) that did not end in a 2xx.
    failures: Vec<String>,
    refused: bool,
}

/// Creates tasks, one request per connection (`Connection: close`), until a
/// connection is refused. Each 201 is reported on `created` as it comes.
fn create_until_refused(
    addr: &str,
    auth: &str,
    client: usize,
    created: &mpsc::Sender<()>,
) -> ClientLog {
    let mut log = ClientLog::default();
    for n in 0.. {
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                log.refused = true;
                return log;
            }
            Err(e) => {
                log.failures.push(format!("connect: {e}"));
                return log;
            }
        };
        let mut conn = RawConn::new(stream);
        let body = format!(r#"{{"title": "client {client} task {n}"}}"#);
        let sent = conn.send(&request(
            "POST",
            "/api/tasks",
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ],
            body.as_bytes(),
        ));
        match sent.and_then(|()| conn.response()) {
            Ok(response) if response.status == 201 => {
                log.created.push(response.json()["id"].as_i64().unwrap());
                let _ = created.send(());
            }
            Ok(response) => log.failures.push(format!(
                "{}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )),
            Err(e) => log.failures.push(format!("after connect: {e}")),
        }
    }
    unreachable!()
}

/// ~40 clients creating tasks, SIGTERM in the middle: every request sent is
/// answered 2xx (or its connection is refused), every 201 is stored, nothing
/// unacknowledged is, and the process exits 0 promptly.
fn sigterm_under_load_loses_nothing(backend: Backend) {
    const CLIENTS: usize = 40;
    const BEFORE_SIGNAL: usize = 200;
    let rt = runtime();
    let Some(db) = rt.block_on(TestDb::create(backend)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = "load-secret";
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("DATABASE_URL", db.url.as_str()),
        ("SHUTDOWN_TIMEOUT", "10"),
    ];
    let mut server = Server::start(dir.path(), &env, &[]).expect("server starts");
    let (created_tx, created_rx) = mpsc::channel();
    let (logs, exit) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (addr, created) = (server.addr.clone(), created_tx.clone());
                let auth = bearer(secret, &format!("load-{client}"));
                scope.spawn(move || create_until_refused(&addr, &auth, client, &created))
            })
            .collect();
        for i in 0..BEFORE_SIGNAL {
            created_rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("only {i} tasks created before the signal"));
        }
        let signalled = server.sigterm();
        let status = server.wait_exit(Duration::from_secs(10) + LATE);
        let exit = (status, signalled.elapsed());
        if status.is_none() {
            // Let the clients end: a killed server refuses them.
            server.kill();
        }
        let logs: Vec<ClientLog> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (logs, exit)
    });
    let (status, took) = exit;
    eprintln!(
        "measured: {backend:?}: exit {} after SIGTERM under load",
        secs(took)
    );
    let status = status.expect("exited within SHUTDOWN_TIMEOUT");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "exit took {}", secs(took));

    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    assert!(
        failures.is_empty(),
        "requests lost in the shutdown: {failures:?}"
    );
    assert!(logs.iter().all(|l| l.refused));
    let acknowledged: BTreeSet<i64> = logs
        .iter()
        .flat_map(|l| l.created.iter().copied())
        .collect();
    assert!(acknowledged.len() >= BEFORE_SIGNAL);
    let stored: BTreeSet<i64> = rt
        .block_on(db.snapshot())
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    eprintln!(
        "measured: {backend:?}: {} acknowledged, {} stored",
        acknowledged.len(),
        stored.len()
    );
    assert_eq!(stored, acknowledged, "stored = acknowledged");
}

#[test]
fn sigterm_under_load_loses_nothing_sqlite() {
    sigterm_under_load_loses_nothing(Backend::Sqlite);
}

#[test]
fn sigterm_under_load_loses_nothing_postgres() {
    sigterm_under_load_loses_nothing(Backend::Postgres);
}

/// A client that sent a head announcing a body and then nothing holds a
/// request in flight; SHUTDOWN_TIMEOUT bounds how long the exit waits for it.
#[test]
fn a_stuck_client_does_not_delay_the_exit_past_the_shutdown_timeout() {
    let shutdown_timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let secret = "stuck-secret";
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("SHUTDOWN_TIMEOUT", "2"),
        ("HTTP_BODY_TIMEOUT", "120"),
        ("HTTP_HEADER_TIMEOUT", "120"),
        ("HTTP_REQUEST_TIMEOUT", "180"),
        // todo_api::request=debug logs "started processing request": the request is in flight.
        ("RUST_LOG", "info,todo_api::request=debug"),
    ];
    let mut server = Server::start(dir.path(), &env, &[]).expect("server starts");
    let mut stuck = RawConn::connect(&server.addr);
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nHost: test\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        bearer(secret, "alice")
    );
    stuck.send(head.as_bytes()).unwrap();
    server.wait_for_log("started processing request");
    let signalled = server.sigterm();
    let status = server
        .wait_exit(shutdown_timeout + LATE)
        .expect("exited within SHUTDOWN_TIMEOUT");
    let took = signalled.elapsed();
    eprintln!(
        "measured: exit {} after SIGTERM with a stuck client",
        secs(took)
    );
    assert!(status.success(), "{status}");
    // It did wait for the in-flight request, up to the timeout.
    assert!(
        took >= shutdown_timeout.mul_f64(0.9) && took <= shutdown_timeout + LATE,
        "exit after {}",
        secs(took)
    );
    let log = server.rest_of_log().join("\n");
    assert!(log.contains("shutdown timeout"), "{log}");
    assert!(
        stuck.wait_for_end(LATE).is_some(),
        "the stuck connection ended with the process"
    );
}

/// Idle keep-alive connections are closed at once on SIGTERM; a connection
/// opened just before it and still silent gets a second (the server's grace
/// for a first request on its way), no more: neither holds the exit for the
/// shutdown timeout.
#[test]
fn idle_connections_are_closed_promptly_on_sigterm() {
    let first_request_grace = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BETTER_AUTH_SECRET", "idle-secret"),
        ("SHUTDOWN_TIMEOUT", "10"),
        ("HTTP_HEADER_TIMEOUT", "60"),
    ];
    let mut server = Server::start(dir.path(), &env, &[]).expect("server starts");
    let mut idle: Vec<RawConn> = (0..3)
        .map(|_| {
            let mut conn = RawConn::connect(&server.addr);
            conn.send(&request("GET", "/health", &[], b"")).unwrap();
            let response = conn.response().unwrap();
            assert_eq!(response.status, 200);
            assert!(!response.closes());
            conn
        })
        .collect();
    let mut silent = RawConn::connect(&server.addr);
    let signalled = server.sigterm();
    for conn in &mut idle {
        let (_, at, received) = conn.wait_for_end(LATE).expect("idle connection closed");
        assert_eq!(received, 0, "closed without a response");
        let after = at - signalled;
        eprintln!(
            "measured: idle keep-alive connection closed {} after SIGTERM",
            secs(after)
        );
        // Below the grace a new connection gets: closed at once, not after it.
        assert!(after < first_request_grace.mul_f64(0.9), "{}", secs(after));
    }
    let (_, at, received) = silent
        .wait_for_end(first_request_grace + LATE)
        .expect("silent new connection closed");
    assert_eq!(received, 0, "closed without a response");
    let after = at - signalled;
    eprintln!(
        "measured: silent new connection closed {} after SIGTERM",
        secs(after)
    );
    assert!(
        after >= first_request_grace.mul_f64(0.5) && after <= first_request_grace + LATE,
        "{}",
        secs(after)
    );
    let status = server
        .wait_exit(first_request_grace + LATE)
        .expect("exited well within SHUTDOWN_TIMEOUT");
    let took = signalled.elapsed();
    eprintln!(
        "measured: exit {} after SIGTERM with idle connections",
        secs(took)
    );
    assert!(status.success(), "{status}");
}

/// A connection opened just before SIGTERM whose request comes just after
/// it is served (with `Connection: close`), not closed under the client.
#[test]
fn a_request_on_a_connection_opened_before_sigterm_is_served() {
    let rt = runtime();
    let Some(db) = rt.block_on(TestDb::create(Backend::Sqlite)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = "on-the-way-secret";
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("DATABASE_URL", db.url.as_str()),
        ("SHUTDOWN_TIMEOUT", "10"),
        ("RUST_LOG", "info,todo_api::http::server=debug"),
    ];
    let mut server = Server::start(dir.path(), &env, &[]).expect("server starts");
    let mut fresh = RawConn::connect(&server.addr);
    let signalled = server.sigterm();
    // The shutdown has reached the connection: the request comes after it.
    server.wait_for_log("waiting for the first request of a new connection");
    fresh
        .send(&request(
            "POST",
            "/api/tasks",
            &[
                ("Authorization", &bearer(secret, "alice")),
                ("Content-Type", "application/json"),
            ],
            br#"{"title": "sent after SIGTERM"}"#,
        ))
        .unwrap();
    let created = fresh.response().expect("the first request is served");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "sent within the server's grace of 1 s: the machine is too slow for this test"
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert!(created.closes(), "{created:?}");
    assert!(fresh.wait_for_end(LATE).is_some(), "closed after it");
    let status = server.wait_exit(LATE).expect("exits once it is served");
    assert!(status.success(), "{status}");
    let stored = rt.block_on(db.snapshot());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["title"], "sent after SIGTERM");
}

/// With SHUTDOWN_DRAIN_SECONDS: readiness 503 at once, requests (on new and
/// on open connections) still served with `Connection: close` for that
/// long, then the listener closes (connections refused) and the process exits.
#[test]
fn draining_keeps_serving_then_closes_the_listener() {
    let drain = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let secret = "drain-secret";
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("SHUTDOWN_DRAIN_SECONDS", "2"),
        ("SHUTDOWN_TIMEOUT", "10"),
    ];
    let mut server = Server::start(dir.path(), &env, &[]).expect("server starts");
    let auth = bearer(secret, "alice");
    let list = request("GET", "/api/tasks", &[("Authorization", &auth)], b"");
    // A keep-alive connection from before the signal.
    let mut open = RawConn::connect(&server.addr);
    open.send(&list).unwrap();
    let before = open.response().unwrap();
    assert_eq!(before.status, 200);
    assert!(!before.closes());

    let signalled = server.sigterm();
    server.wait_for_log("shutdown signal received");

    let mut conn = RawConn::connect(&server.addr);
    conn.send(&request("GET", "/health/ready", &[], b""))
        .unwrap();
    let ready = conn.response().unwrap();
    assert_eq!(ready.status, 503, "not ready while draining: {ready:?}");
    assert!(ready.json()["detail"].is_string());
    assert!(ready.closes(), "{ready:?}");

    let mut conn = RawConn::connect(&server.addr);
    conn.send(&list).unwrap();
    let served = conn.response().unwrap();
    assert_eq!(
        served.status, 200,
        "still served while draining: {served:?}"
    );
    assert!(served.closes(), "{served:?}");
    assert!(conn.wait_for_end(LATE).is_some(), "closed as it said");

    open.send(&list).unwrap();
    let on_open = open.response().unwrap();
    assert_eq!(on_open.status, 200, "{on_open:?}");
    assert!(on_open.closes(), "{on_open:?}");
    assert!(open.wait_for_end(LATE).is_some(), "closed as it said");
    assert!(
        signalled.elapsed() < drain,
        "the checks above ran within the drain ({}): the machine is too slow for this test",
        secs(signalled.elapsed())
    );

    server.wait_for_log("listener closed");
    let closed_after = signalled.elapsed();
    eprintln!(
        "measured: listener closed {} after SIGTERM",
        secs(closed_after)
    );
    assert!(
        closed_after >= drain && closed_after <= drain + LATE,
        "listener closed after {}",
        secs(closed_after)
    );
    let refused = TcpStream::connect(&server.addr);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused),
        "refused after the drain: {refused:?}"
    );
    let status = server
        .wait_exit(Duration::from_secs(10) + LATE)
        .expect("exits");
    let took = signalled.elapsed();
    eprintln!(
        "measured: exit {} after SIGTERM with a 2 s drain",
        secs(took)
    );
    assert!(status.success(), "{status}");
    assert!(took <= drain + LATE, "exit after {}", secs(took));
}
