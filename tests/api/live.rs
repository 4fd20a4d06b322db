//! Live events (`GET /api/tasks/events`): each change of a user reaches
//! every open stream of that user, across instances, missing nothing, and
//! no other user's.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

use todo_api::live::CHANNEL;
use todo_api::live::listener::APPLICATION_NAME as LISTENER;

use crate::common::metrics;
use crate::common::raw;
use crate::common::sse::SseStream;
use crate::common::{Backend, TestApp, error_code, error_fields, send};

on_each_database!(
    every_change_reaches_the_users_stream_and_no_other,
    streams_resume_after_their_last_event,
    streams_are_capped_and_authenticated,
    a_stream_ends_when_its_token_does,
    a_stream_ends_at_once_on_shutdown,
    idle_streams_get_heartbeats_and_the_instance_cap_holds,
);

/// Opens and reads streams of a test's server.
struct Stream;

impl Stream {
    async fn open(
        app: &TestApp,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> SseStream {
        let response = Self::request(app, token, query, last_event_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "content type"
        );
        SseStream::new(response)
    }

    async fn request(
        app: &TestApp,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = app.request(Method::GET, &format!("/api/tasks/events{query}"), token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }
}

/// A bound on waits for what normally comes in milliseconds: it only tells
/// "comes" from "never comes", so a slow machine's stall must not reach it.
const SOON: Duration = Duration::from_secs(20);

/// The backends of the instances' listeners on `admin`'s database that are
/// listening now (idle after `LISTEN` or a check).
async fn listeners(admin: &sea_orm::DatabaseConnection) -> Vec<i32> {
    use sea_orm::{ConnectionTrait, Statement};
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = '{LISTENER}' AND state = 'idle' \
         AND query IN ('LISTEN {CHANNEL}', 'SELECT 1') ORDER BY pid"
    );
    admin
        .query_all_raw(Statement::from_string(admin.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<i32>(0).unwrap())
        .collect()
}

/// Waits (bounded by `within`) until `ready` holds of the listeners' pids.
async fn until_listeners(
    admin: &sea_orm::DatabaseConnection,
    within: Duration,
    ready: impl Fn(&[i32]) -> bool,
) -> Vec<i32> {
    let started = std::time::Instant::now();
    loop {
        let pids = listeners(admin).await;
        if ready(&pids) {
            return pids;
        }
        assert!(
            started.elapsed() < within,
            "listeners {pids:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that stops reading its stream is dropped once the bounded
/// buffers between it and the stream are full (after `HTTP_WRITE_TIMEOUT`),
/// while its user's writes go on undisturbed: a slow reader costs the
/// server one event in hand, not the changes it has not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_is_dropped_and_holds_nothing_up() {
    use std::io::Write;
    let app = TestApp::builder(Backend::Sqlite)
        .env("HTTP_WRITE_TIMEOUT", "1")
        .env("MAX_STREAMS_PER_USER", "1")
        .start()
        .await
        .unwrap();
    let token = app.token("slow");
    // A reader that never reads, with a small receive buffer. (Blocking
    // socket calls run with `block_in_place`: the server shares this runtime.)
    let mut slow = raw::connect_with_small_receive_buffer(&app.addr());
    let auth = format!("Bearer {token}");
    let request = raw::request("GET", "/api/tasks/events", &[("Authorization", &auth)], b"");
    slow.write_all(&request).unwrap();
    let head = tokio::task::block_in_place(|| raw::peek_response_start(&slow));
    assert_eq!(
        &head,
        b"HTTP/1.1 200",
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    // It is the user's one stream (MAX_STREAMS_PER_USER=1): another is refused.
    let second = Stream::request(&app, &token, "", None).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);

    // 1,000 changes (more where the kernel's send buffers may be larger than
    // Linux's default 4 MiB) of about 5 kB each, a title and a description
    // of four-byte characters: more than the socket buffers hold.
    let (title, description) = ("\u{1D11E}".repeat(190), "\u{1D11E}".repeat(1000));
    let send_buffer_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let changes = 1000.max(send_buffer_max / 3500);
    let started = std::time::Instant::now();
    for i in 0..changes {
        let body = json!({"title": format!("{i} {title}"), "description": description});
        app.create(&token, body).await;
    }
    let writing = started.elapsed();
    // Dropped: the user's stream slot is free again, within the write
    // timeout and some slack (polled: how soon depends on the machine).
    let dropped = loop {
        let response = Stream::request(&app, &token, "", None).await;
        if response.status() == StatusCode::OK {
            break started.elapsed();
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            started.elapsed() < writing + Duration::from_secs(30),
            "the stream nobody reads is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // What the slow reader can still read: what the buffers held, then the end.
    let mut slow = raw::RawConn::new(slow);
    let (end, _, received) =
        tokio::task::block_in_place(|| slow.wait_for_end(SOON)).expect("the connection was closed");
    // Each event carries its title and description: 4,760 bytes at least.
    let all = changes * (190 + 1000) * 4;
    assert!(received < all, "{received} bytes: every event was buffered");
    eprintln!(
        "measured: {changes} writes in {writing:.2?}; the stream nobody read dropped after \
         {dropped:.2?}, by {end:?}; {received} bytes left in the buffers"
    );
}

async fn every_change_reaches_the_users_stream_and_no_other(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    // Two more streams of Alice's (another tab, another device).
    let mut tabs = vec![
        Stream::open(&app, &alice, "", None).await,
        Stream::open(&app, &alice, "", None).await,
    ];
    for tab in &mut tabs {
        tab.until_ready().await;
    }
    let mut mine = Stream::open(&app, &alice, "", None).await;
    let mut theirs = Stream::open(&app, &bob, "", None).await;
    let (missed, ready) = mine.until_ready().await;
    assert!(missed.is_empty());
    assert_eq!(ready["cursor"], "0");
    theirs.until_ready().await;

    let task = app.create(&alice, json!({"title": "milk"})).await;
    let path = format!("/api/tasks/{}", task["id"]);
    let event = mine.next_within(SOON).await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.id.as_deref()),
        ("upsert", Some("1"))
    );
    assert_eq!(
        event.data,
        json!({"op": "upsert", "version": 1, "task": task})
    );
    let (_, renamed) = send(
        app.request(Method::PUT, &path, &alice)
            .json(&json!({"title": "oat milk"})),
    )
    .await;
    let event = mine.next_within(SOON).await.unwrap();
    assert_eq!(event.data["task"], renamed);
    send(app.request(Method::PATCH, &format!("{path}/complete"), &alice)).await;
    let event = mine.next_within(SOON).await.unwrap();
    assert_eq!(event.data["task"]["completed"], true);
    send(app.request(Method::DELETE, &path, &alice)).await;
    let event = mine.next_within(SOON).await.unwrap();
    assert_eq!(event.event, "delete");
    assert_eq!(
        event.data,
        json!({"op": "delete", "version": 4, "id": task["id"]})
    );
    // Each tab reaches the same end, in order. A stream that reads after two
    // writes of one task gets it once, at its latest (the feed's rule), so
    // a tab that lagged may skip a version, never the last one.
    for tab in &mut tabs {
        let mut last = 0;
        loop {
            let event = tab.next_within(SOON).await.unwrap();
            let id: i64 = event.id.unwrap().parse().unwrap();
            assert!(id > last, "ascending: {id} after {last}");
            last = id;
            if id == 4 {
                assert_eq!(event.event, "delete");
                break;
            }
        }
    }
    // Bob's first event is his own change: none of Alice's reached him.
    let his = app.create(&bob, json!({"title": "bob's"})).await;
    let event = theirs.next_within(SOON).await.unwrap();
    assert_eq!(event.data["task"], his);
}

async fn streams_resume_after_their_last_event(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let token = app.token("resumer");
    for title in ["a", "b", "c"] {
        app.create(&token, json!({"title": title})).await;
    }
    let mut stream = Stream::open(&app, &token, "", Some("1")).await;
    let (missed, ready) = stream.until_ready().await;
    let ids: Vec<_> = missed.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids, ["2", "3"]);
    assert_eq!(ready["cursor"], "3");
    let mut stream = Stream::open(&app, &token, "?since=2", None).await;
    let (missed, _) = stream.until_ready().await;
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].data["task"]["title"], "c");
    // Then live, with no repeat of what came before.
    app.create(&token, json!({"title": "d"})).await;
    assert_eq!(
        stream.next_within(SOON).await.unwrap().id.as_deref(),
        Some("4")
    );
    // A cursor the feed refuses: 410 before any stream; a bad one: 422.
    let response = Stream::request(&app, &token, "?since=99", None).await;
    let (status, body) = crate::common::json(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::GONE, "cursor_expired")
    );
    let response = Stream::request(&app, &token, "", Some("x")).await;
    let (status, body) = crate::common::json(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&body), ["Last-Event-ID"]);
}

async fn streams_are_capped_and_authenticated(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("MAX_STREAMS_PER_USER", "2")
        .env("MAX_IN_FLIGHT_PER_USER", "1")
        .start()
        .await
    else {
        return;
    };
    let token = app.token("greedy");
    let _one = Stream::open(&app, &token, "", None).await;
    let _two = Stream::open(&app, &token, "", None).await;
    let response = Stream::request(&app, &token, "", None).await;
    let (status, body) = crate::common::json(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
    // Open streams take none of the user's in-flight slots (1 here).
    app.create(&token, json!({"title": "still served"})).await;
    // Another user is not affected; no token is 401 JSON.
    let _other = Stream::open(&app, &app.token("other"), "", None).await;
    let (status, body) = send(app.client.get(app.url("/api/tasks/events"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "not_authenticated")
    );
}

async fn a_stream_ends_when_its_token_does(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let token = todo_api::auth::mint_hs256(&app.secret, "brief", None, 2).unwrap();
    let mut stream = Stream::open(&app, &token, "", None).await;
    stream.until_ready().await;
    // Soon after the token's 2 s, well before the default 15 s heartbeat.
    let event = stream.next_within(Duration::from_secs(12)).await.unwrap();
    assert_eq!(event.event, "token_expired");
    assert!(
        stream.next_within(Duration::from_secs(5)).await.is_none(),
        "ended"
    );
}

async fn a_stream_ends_at_once_on_shutdown(backend: Backend) {
    let Some(mut app) = TestApp::start(backend).await else {
        return;
    };
    let token = app.token("leaving");
    let mut stream = Stream::open(&app, &token, "", None).await;
    stream.until_ready().await;
    let started = std::time::Instant::now();
    // The shutdown timeout (30 s) is not waited for: the stream ends first.
    app.stop().await;
    assert!(stream.next_within(Duration::from_secs(5)).await.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Two instances on one PostgreSQL: a change made on either reaches the
/// streams on the other; when the listener's connection is killed during a
/// burst of writes, the stream still receives every change once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_cross_instances_and_survive_a_lost_listener() {
    let Some(a) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let b = a
        .restart_builder(Backend::Postgres)
        .start()
        .await
        .expect("second instance");
    let (token, other) = (a.token("roamer"), a.token("bystander"));
    let mut on_b = Stream::open(&b, &token, "", None).await;
    // And one on the writing instance: its own writes reach it through its
    // listener too (see the next test).
    let mut on_a = Stream::open(&a, &token, "", None).await;
    let mut others = Stream::open(&b, &other, "", None).await;
    on_b.until_ready().await;
    on_a.until_ready().await;
    others.until_ready().await;
    let task = a.create(&token, json!({"title": "made on a"})).await;
    for stream in [&mut on_b, &mut on_a] {
        let event = stream.next_within(SOON).await.unwrap();
        assert_eq!(event.data["task"], task);
    }

    // Kill both instances' listeners while writing 50 changes on instance a.
    let admin = a.db.connect().await;
    until_listeners(&admin, SOON, |pids| pids.len() == 2).await;
    let writes = async {
        for i in 0..50 {
            a.create(&token, json!({"title": format!("burst {i}")}))
                .await;
            if i == 10 {
                use sea_orm::ConnectionTrait;
                let killed = admin
                    .execute_unprepared(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND application_name = '{LISTENER}'"
                    ))
                    .await
                    .unwrap();
                assert_eq!(killed.rows_affected(), 2, "both listeners killed");
            }
        }
    };
    writes.await;
    for stream in [&mut on_b, &mut on_a] {
        let mut ids = Vec::new();
        while ids.len() < 50 {
            let event = stream
                .next_within(Duration::from_secs(30))
                .await
                .expect("stream open");
            ids.push(event.id.unwrap().parse::<i64>().unwrap());
        }
        assert_eq!(
            ids,
            (2..=51).collect::<Vec<_>>(),
            "every change once, in order"
        );
    }
    // The other user's stream saw none of it: its first event is its own.
    let theirs = b.create(&other, json!({"title": "mine"})).await;
    assert_eq!(others.next_within(SOON).await.unwrap().data["task"], theirs);
    let _ = admin.close().await;
}

/// An idle stream gets a comment every `SSE_HEARTBEAT_SECONDS`; beyond
/// `MAX_STREAMS` on the instance, whoever asks gets 429.
async fn idle_streams_get_heartbeats_and_the_instance_cap_holds(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("SSE_HEARTBEAT_SECONDS", "1")
        .env("MAX_STREAMS", "2")
        .start()
        .await
    else {
        return;
    };
    let response = Stream::request(&app, &app.token("quiet"), "", None).await;
    let mut bytes = response.bytes_stream();
    let mut text = String::new();
    let started = std::time::Instant::now();
    while !text.lines().any(|l| l.starts_with(':')) {
        // Every second, and well before the default 15 s.
        let chunk = tokio::time::timeout(Duration::from_secs(10), bytes.next())
            .await
            .expect("a heartbeat within 10 s")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let _second = Stream::open(&app, &app.token("another"), "", None).await;
    let response = Stream::request(&app, &app.token("third"), "", None).await;
    let (status, body) = crate::common::json(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
}

/// A write wakes its user's streams on an instance to one read of the feed
/// between them: the streams share the read, and the write's own
/// notification, which this instance's listener hears too, is what wakes
/// them (waking them at the write as well made every write cost two reads,
/// the second for nothing). Counted by `live_feed_reads_total`, in a
/// process of its own (the metrics recorder is global).
#[test]
fn a_write_costs_its_users_streams_on_an_instance_one_feed_read() {
    use crate::common::process::Server;
    const SECRET: &str = "live-reads-test-secret-0123456789abcdef";
    const STREAMS: usize = 5;
    const WRITES: usize = 20;
    let rt = crate::common::runtime();
    let Some(db) = rt.block_on(crate::common::TestDb::create(Backend::Postgres)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", db.app_url.as_str()),
        ("BETTER_AUTH_SECRET", SECRET),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ];
    let server = Server::start(dir.path(), &env, &[]).expect("starts");
    let metrics_url = format!(
        "http://{}/metrics",
        server.log_value("metrics listening", "addr")
    );
    let token = todo_api::auth::mint_hs256(SECRET.as_bytes(), "reader", None, 600).unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let events = server.url("/api/tasks/events");
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let response = client.get(&events).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut stream = SseStream::new(response);
            stream.until_ready().await;
            streams.push(stream);
        }
        let reads = || async {
            let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
            metrics::value(&metrics::parse(&text), "live_feed_reads_total", &[])
        };
        // Counted from when the instance listens (until then a write wakes
        // the streams itself, and `LISTEN` makes every stream read once).
        let admin = db.connect().await;
        until_listeners(&admin, SOON, |pids| pids.len() == 1).await;
        let _ = admin.close().await;
        let before = reads().await;
        // One write at a time, each seen by every stream before the next.
        for version in 1..=WRITES {
            let (status, _) = send(
                client
                    .post(server.url("/api/tasks"))
                    .bearer_auth(&token)
                    .json(&json!({"title": format!("write {version}")})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            for stream in &mut streams {
                let event = stream.next_within(SOON).await.unwrap();
                assert_eq!(event.id, Some(version.to_string()), "every write, in order");
            }
        }
        let made = reads().await - before;
        assert!(
            // At most two more: the read every stream makes when the
            // listener starts (it may fall after `before`), and a first write
            // racing the listener's switch to hearing (woken twice).
            made >= WRITES as f64 && made <= (WRITES + 2) as f64,
            "{WRITES} writes seen by {STREAMS} streams took {made} feed reads (one per write expected)"
        );
    });
}

/// The listener's connection falls silent (no error, no notification): it
/// is found out by its checks (every `SSE_HEARTBEAT_SECONDS`, here 2) and
/// until a connection listens again the streams read the feed every
/// second, so a change made meanwhile, on this instance or another, still
/// arrives within seconds. Without the check a stream would wait for the
/// next write that happened to wake it. Once the network heals, a new
/// connection listens (a connection attempt stuck on the silent path is
/// given up, not waited on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_falls_silent_is_found_out_and_nothing_waits_for_it() {
    let Some(db) = crate::common::TestDb::create(Backend::Postgres).await else {
        return;
    };
    let (proxy, url) = crate::common::tcp_proxy::TcpProxy::in_front_of(&db.app_url).await;
    let admin = db.connect().await;
    let Some(app) = TestApp::builder(Backend::Postgres)
        .database(db)
        .env("LISTEN_DATABASE_URL", &url)
        .env("SSE_HEARTBEAT_SECONDS", "2")
        .start()
        .await
    else {
        return;
    };
    let token = app.token("listened-to");
    let mut stream = Stream::open(&app, &token, "", None).await;
    stream.until_ready().await;
    // The stream made the instance listen, through the proxy: wait until it
    // does, so that the writes below count on it to be woken.
    let first_listener = until_listeners(&admin, SOON, |pids| pids.len() == 1).await;
    let first = app.create(&token, json!({"title": "heard"})).await;
    assert_eq!(stream.next_within(SOON).await.unwrap().data["task"], first);

    proxy.fall_silent();
    let second = app.create(&token, json!({"title": "while deaf"})).await;
    let event = stream.next_within(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        event.data["task"], second,
        "a change while the listener is deaf"
    );
    let third = app.create(&token, json!({"title": "still deaf"})).await;
    let event = stream.next_within(Duration::from_secs(30)).await.unwrap();
    assert_eq!(event.data["task"], third, "every change, in order");

    // The network heals: an attempt stuck on the silent path gives up in
    // time (two heartbeats) and a new connection listens.
    proxy.speak_again();
    until_listeners(&admin, Duration::from_secs(20), |pids| {
        pids.iter().any(|pid| !first_listener.contains(pid))
    })
    .await;
    let fourth = app.create(&token, json!({"title": "heard again"})).await;
    let event = stream.next_within(SOON).await.unwrap();
    assert_eq!(event.data["task"], fourth);
    let _ = admin.close().await;
}
