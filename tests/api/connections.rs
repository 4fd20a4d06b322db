//! Connection hygiene (the contract's "Connections"): slow or idle
//! connections are closed at `HTTP_HEADER_TIMEOUT`, a body not complete at
//! `HTTP_BODY_TIMEOUT` is a 408, a response nobody reads is dropped at
//! `HTTP_WRITE_TIMEOUT` (and the user's turn with it), the open-file limit is
//! raised at start-up and accept errors never stop the server, and a request
//! answered before its body was read leaves the keep-alive connection usable.
//!
//! Raw sockets throughout: the exact bytes sent, responses parsed as they
//! come, and when and how the server ends the connection. Timeouts are set to
//! a second or two; each is asserted from both sides, with margins for a
//! loaded two-core machine.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::process::{
    Server, open_file_limit, open_file_limit_of, raise_own_open_file_limit, with_open_file_limit,
};
use crate::common::raw::{
    RawConn, connect_with_small_receive_buffer, peek_response_start, request,
};
use crate::common::{Backend, BlockingApp, TestApp, seed_large_tasks};

/// How much later than its setting a timeout may fire on a loaded machine.
const LATE: Duration = Duration::from_secs(3);

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Asserts `elapsed` lies in `[low, high]`, saying what was measured.
fn assert_between(what: &str, elapsed: Duration, low: Duration, high: Duration) {
    eprintln!("measured: {what}: {}", secs(elapsed));
    assert!(
        elapsed >= low && elapsed <= high,
        "{what}: {} not within [{}, {}]",
        secs(elapsed),
        secs(low),
        secs(high)
    );
}

#[test]
fn slow_and_idle_connections_are_closed_at_the_header_timeout() {
    let header_timeout = Duration::from_secs(1);
    let Some(server) =
        BlockingApp::start(TestApp::builder(Backend::Sqlite).env("HTTP_HEADER_TIMEOUT", "1"))
    else {
        return;
    };
    let addr = server.addr();

    // Half a request line, then nothing. The server's clock starts after our
    // connect returned, so it cannot close earlier than the timeout.
    let mut conn = RawConn::connect(&addr);
    let opened = Instant::now();
    conn.send(b"GET /heal").unwrap();
    let (end, at, received) = conn
        .wait_for_end(header_timeout + LATE)
        .expect("a half request line is closed by the server");
    assert_between(
        "half request line closed after",
        at - opened,
        header_timeout,
        header_timeout + LATE,
    );
    eprintln!("  ended by {end:?}, {received} bytes received");

    // Idle keep-alive after a response: the same timeout, from the response.
    // (The server's clock starts as it sends the response, a little before
    // we read it: the lower bound allows for that.)
    let mut conn = RawConn::connect(&addr);
    conn.send(&request("GET", "/health", &[], b"")).unwrap();
    let response = conn.response().unwrap();
    let answered = Instant::now();
    assert_eq!(response.status, 200);
    assert!(!response.closes(), "a keep-alive connection: {response:?}");
    let (_, at, received) = conn
        .wait_for_end(header_timeout + LATE)
        .expect("an idle keep-alive connection is closed by the server");
    assert_between(
        "idle keep-alive connection closed after",
        at - answered,
        header_timeout.mul_f64(0.7),
        header_timeout + LATE,
    );
    assert_eq!(received, 0, "closed without another response");

    // A head sent slowly but steadily (a byte every 50 ms), still incomplete
    // at the timeout: closed at the timeout, not kept alive by the trickle.
    let mut conn = RawConn::connect(&addr);
    let opened = Instant::now();
    let mut writer = conn.stream().try_clone().unwrap();
    let stop = AtomicBool::new(false);
    let trickled = AtomicUsize::new(0);
    let end = std::thread::scope(|scope| {
        scope.spawn(|| {
            if writer
                .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
                .is_err()
            {
                return;
            }
            while !stop.load(Ordering::Acquire) {
                // Pacing the trickle, not synchronising.
                std::thread::sleep(Duration::from_millis(50));
                if writer.write_all(b"a").is_err() {
                    return;
                }
                trickled.fetch_add(1, Ordering::AcqRel);
            }
        });
        let end = conn.wait_for_end(header_timeout + LATE);
        stop.store(true, Ordering::Release);
        end
    });
    let (_, at, _) = end.expect("a trickled head is closed by the server");
    let sent = trickled.load(Ordering::Acquire);
    assert_between(
        "trickled head closed after",
        at - opened,
        header_timeout,
        header_timeout + LATE,
    );
    eprintln!("  {sent} bytes trickled before the close");
    assert!(sent >= 10, "the head was still arriving: {sent} bytes");

    // The other side: a slow head that completes within the timeout is served.
    let mut conn = RawConn::connect(&addr);
    for byte in request("GET", "/health", &[], b"").chunks(4) {
        conn.send(byte).unwrap();
        std::thread::sleep(Duration::from_millis(25));
    }
    let response = conn.response().unwrap();
    assert_eq!(response.status, 200, "{response:?}");
}

/// A body still arriving at HTTP_BODY_TIMEOUT is the client's doing: a 408,
/// not the 503 of a request the server could not process in time
/// (HTTP_REQUEST_TIMEOUT, which must be the longer of the two).
#[test]
fn a_body_not_complete_at_the_body_timeout_is_408_and_stores_nothing() {
    let body_timeout = Duration::from_secs(1);
    let Some(server) = BlockingApp::start(
        TestApp::builder(Backend::Sqlite)
            .env("HTTP_BODY_TIMEOUT", "1")
            .env("HTTP_REQUEST_TIMEOUT", "3"),
    ) else {
        return;
    };
    let token = server.app.token("alice");
    let auth = format!("Bearer {token}");
    for round in 0..3 {
        let mut conn = RawConn::connect(&server.addr());
        let head = format!(
            "POST /api/tasks HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"title\": \"never fin"
        );
        conn.send(head.as_bytes()).unwrap();
        let sent = Instant::now();
        let response = conn
            .response()
            .expect("a response, not a dropped connection");
        assert_eq!(
            response.status,
            408,
            "round {round}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        assert_between(
            "incomplete body answered 408 after",
            sent.elapsed(),
            body_timeout.mul_f64(0.9),
            body_timeout + LATE,
        );
        let body = response.json();
        assert!(body["detail"].is_string(), "{body}");
        assert_eq!(body["code"], "request_timeout", "{body}");
        // The rest of the body is unknown: the connection cannot be reused.
        assert!(response.closes(), "{response:?}");
        assert!(
            conn.wait_for_end(LATE).is_some(),
            "closed after the 408, as it said"
        );
    }
    assert!(server.block_on(server.app.db.snapshot()).is_empty());
}

#[test]
fn a_response_nobody_reads_is_dropped_at_the_write_timeout() {
    const TASKS: usize = 10_000;
    let write_timeout = Duration::from_secs(2);
    let Some(server) = BlockingApp::start(
        TestApp::builder(Backend::Sqlite)
            .env("HTTP_WRITE_TIMEOUT", "2")
            .env("MAX_IN_FLIGHT_PER_USER", "1"),
    ) else {
        return;
    };
    server.block_on(seed_large_tasks(&server.app.db, "alice", TASKS));
    let token = server.app.token("alice");
    let auth = format!("Bearer {token}");

    // Alice lists her ~10 MB of tasks and never reads the answer.
    let mut stalled = connect_with_small_receive_buffer(&server.addr());
    stalled
        .write_all(&request(
            "GET",
            "/api/tasks",
            &[("Authorization", &auth)],
            b"",
        ))
        .unwrap();
    // Peeking does not consume: the receive window stays shut. Once the
    // status line is here, the response has begun and holds her only turn.
    let head = peek_response_start(&stalled);
    assert_eq!(
        &head,
        b"HTTP/1.1 200",
        "{:?}",
        String::from_utf8_lossy(&head)
    );

    // Her next request, on another connection, waits for that turn: it is
    // answered once the stalled response is dropped, about the write timeout
    // later (without the timeout it would wait 30 s in the queue, then 429).
    let mut next = RawConn::connect(&server.addr());
    let sent = Instant::now();
    next.send(&request(
        "GET",
        "/api/tasks?limit=1",
        &[("Authorization", &auth)],
        b"",
    ))
    .unwrap();
    let response = next.response().unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json().as_array().unwrap().len(), 1);
    assert_between(
        "next request of the same user answered after",
        sent.elapsed(),
        write_timeout.mul_f64(0.5),
        write_timeout + LATE,
    );

    // The stalled connection was ended before the whole body went out: what
    // it can still read is what sat in the socket buffers, then EOF or reset.
    let mut stalled = RawConn::new(stalled);
    let (end, _, received) = stalled
        .wait_for_end(LATE)
        .expect("the stalled connection was ended by the server");
    eprintln!("measured: stalled connection ended by {end:?} after {received} bytes");
    assert!(
        received < TASKS * 1000,
        "{received} bytes: the whole body was sent?"
    );
}

/// Every early rejection, 1000 times on one keep-alive connection, each
/// followed by a GET on the same connection; half of the bodies sent in the
/// same write as the head, half a moment after it.
#[test]
fn early_rejections_leave_the_keep_alive_connection_usable() {
    const ROUNDS: usize = 1000;
    let Some(server) = BlockingApp::start(TestApp::builder(Backend::Sqlite)) else {
        return;
    };
    let auth = format!("Bearer {}", server.app.token("alice"));
    let json = ("Content-Type", "application/json");
    let mut conn = RawConn::connect(&server.addr());
    let mut closes = Vec::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        // A JSON body from a few hundred bytes to a few KiB.
        let size = 200 + (round * 397) % 4000;
        let body = format!(r#"{{"title": "{}"}}"#, "x".repeat(size));
        let (expected, bytes) = match round % 4 {
            0 => (
                401,
                request(
                    "POST",
                    "/api/tasks",
                    &[("Authorization", "Bearer not-a-token"), json],
                    body.as_bytes(),
                ),
            ),
            1 => (
                404,
                request(
                    "POST",
                    "/api/no-such-route",
                    &[("Authorization", &auth), json],
                    body.as_bytes(),
                ),
            ),
            2 => (
                405,
                request(
                    "PUT",
                    "/api/tasks",
                    &[("Authorization", &auth), json],
                    body.as_bytes(),
                ),
            ),
            _ => (
                415,
                request(
                    "POST",
                    "/api/tasks",
                    &[("Authorization", &auth), ("Content-Type", "text/plain")],
                    body.as_bytes(),
                ),
            ),
        };
        // Every kind of rejection both ways: rounds 0-3 whole, 4-7 split, ...
        if (round / 4) % 2 == 0 {
            conn.send(&bytes)
        } else {
            // The body a little after the head, as a client writing them
            // separately does: the server has rejected the request before
            // the body arrived, so it is not in hyper's read buffer yet.
            let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            conn.send(&bytes[..head_end]).and_then(|()| {
                std::thread::sleep(Duration::from_millis(5));
                conn.send(&bytes[head_end..])
            })
        }
        .unwrap_or_else(|e| panic!("round {round}: send: {e}"));
        let rejected = conn
            .response()
            .unwrap_or_else(|e| panic!("round {round} ({expected}): {e}"));
        assert_eq!(rejected.status, expected, "round {round}: {rejected:?}");
        assert!(rejected.json()["code"].is_string(), "round {round}");
        if rejected.closes() {
            // Allowed only if the server then really closes.
            assert!(
                conn.wait_for_end(LATE).is_some(),
                "round {round}: said Connection: close and left the connection open"
            );
            closes.push((round, expected, body.len()));
            conn = RawConn::connect(&server.addr());
        }
        conn.send(&request("GET", "/health", &[], b""))
            .unwrap_or_else(|e| panic!("round {round}: send GET: {e}"));
        let health = conn
            .response()
            .unwrap_or_else(|e| panic!("round {round}: GET /health after {expected}: {e}"));
        assert_eq!(health.status, 200, "round {round}: {health:?}");
        assert_eq!(health.json()["status"], "ok");
        assert!(!health.closes(), "round {round}: {health:?}");
    }
    eprintln!(
        "measured: {ROUNDS} rounds in {}, {} Connection: close",
        secs(started.elapsed()),
        closes.len()
    );
    assert!(
        closes.is_empty(),
        "bodies of a few KiB are drained, never a reason to close: {closes:?}"
    );
    assert!(server.block_on(server.app.db.snapshot()).is_empty());
}

/// A body over the 64 KiB limit, declared by Content-Length: 413 at once,
/// `Connection: close`, and the connection really closed (not left waiting
/// for a body nobody will read).
#[test]
fn an_oversized_body_is_413_and_the_connection_closes() {
    let Some(server) = BlockingApp::start(TestApp::builder(Backend::Sqlite)) else {
        return;
    };
    let auth = format!("Bearer {}", server.app.token("alice"));
    let mut conn = RawConn::connect(&server.addr());
    // The head and the first KiB; the rest never comes.
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"title\": \"{}",
        100 * 1024,
        "x".repeat(1024)
    );
    conn.send(head.as_bytes()).unwrap();
    let response = conn.response().unwrap();
    let answered = Instant::now();
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.json()["code"], "payload_too_large");
    assert!(response.closes(), "{response:?}");
    let (end, at, received) = conn
        .wait_for_end(LATE)
        .expect("the connection is closed after the 413");
    eprintln!(
        "measured: closed {} after the 413 ({end:?})",
        secs(at - answered)
    );
    assert_eq!(received, 0);
    assert!(server.block_on(server.app.db.snapshot()).is_empty());
}

/// Opens `count` connections to `addr` and keeps them.
fn open_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i} of {count}: {e}"))
        })
        .collect()
}

/// GET /health on a new connection: the status (0 when not answered).
fn health(addr: &str) -> u16 {
    let mut conn = RawConn::connect(addr);
    conn.send(&request("GET", "/health", &[], b"")).unwrap();
    conn.response().map(|r| r.status).unwrap_or(0)
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_at_start_up() {
    const IDLE: usize = 1500;
    let (_, hard) = open_file_limit();
    if hard < 4 * 1024 || !raise_own_open_file_limit(4 * 1024) {
        eprintln!(
            "\n!!!!! SKIPPED: open-file limit test: the hard limit ({hard}) is too low for it !!!!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BETTER_AUTH_SECRET", "nofile-secret"),
        // The idle connections must stay open for the whole test.
        ("HTTP_HEADER_TIMEOUT", "120"),
    ];
    // Started with the usual soft limit of 1024, the hard limit left as is.
    let server = Server::start_with(dir.path(), &env, &[], |cmd| {
        with_open_file_limit(cmd, 1024, None)
    })
    .expect("server starts");
    let (soft_now, hard_now) = open_file_limit_of(server.pid());
    assert_eq!(
        soft_now,
        hard.to_string(),
        "soft limit raised to the hard one"
    );
    assert_eq!(hard_now, hard.to_string());

    let idle = open_connections(&server.addr, IDLE);
    let started = Instant::now();
    assert_eq!(
        health(&server.addr),
        200,
        "served beside {IDLE} idle connections"
    );
    eprintln!(
        "measured: GET /health beside {IDLE} idle connections: {}",
        secs(started.elapsed())
    );
    // Every one of them was accepted (not left in the listen backlog).
    for (i, stream) in idle.into_iter().enumerate() {
        let mut conn = RawConn::new(stream);
        conn.send(&request("GET", "/health", &[], b"")).unwrap();
        let response = conn
            .response()
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
        assert_eq!(response.status, 200, "idle connection {i}");
    }
    let token = todo_api::auth::mint_hs256(b"nofile-secret", "alice", None, 600).unwrap();
    let mut conn = RawConn::connect(&server.addr);
    conn.send(&request(
        "GET",
        "/api/tasks",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    ))
    .unwrap();
    assert_eq!(conn.response().unwrap().status, 200);
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}");
    assert!(!log.contains("cannot accept"), "{log}");
}

#[test]
fn accept_errors_never_stop_the_server() {
    const OPEN: usize = 400;
    if !raise_own_open_file_limit(4 * 1024) {
        eprintln!(
            "\n!!!!! SKIPPED: accept error test: the hard open-file limit is too low !!!!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = "accept-errors-secret";
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("HTTP_HEADER_TIMEOUT", "120"),
    ];
    // 256 file descriptors, hard limit included: the server cannot raise it.
    let server = Server::start_with(dir.path(), &env, &[], |cmd| {
        with_open_file_limit(cmd, 256, Some(256))
    })
    .expect("server starts");
    let mut open = open_connections(&server.addr, OPEN);
    let seen = server.wait_for_log("cannot accept connections").join("\n");
    assert!(seen.contains("out of file descriptors"), "{seen}");
    // Still serving the connections it has: the first one was accepted.
    let mut first = RawConn::new(open.remove(0));
    first.send(&request("GET", "/health", &[], b"")).unwrap();
    assert_eq!(first.response().unwrap().status, 200);
    drop(first);
    drop(open);

    // Once they are closed, a new client is served, database included.
    let started = Instant::now();
    assert_eq!(health(&server.addr), 200);
    eprintln!(
        "measured: new client served {} after closing {OPEN} connections",
        secs(started.elapsed())
    );
    let token = todo_api::auth::mint_hs256(secret.as_bytes(), "alice", None, 600).unwrap();
    let mut conn = RawConn::connect(&server.addr);
    conn.send(&request(
        "POST",
        "/api/tasks",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"title": "after the storm"}"#,
    ))
    .unwrap();
    let created = conn.response().unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");
}
