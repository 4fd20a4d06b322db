//! Fair share: at most `MAX_TASKS_PER_USER` tasks; at most
//! `MAX_IN_FLIGHT_PER_USER` requests of a user at once, the rest waiting in
//! order up to `MAX_QUEUED_PER_USER`, beyond that 429; optional
//! `RATE_LIMIT_PER_USER`. Other users are never held up by one.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

use crate::common::{Backend, TestApp, error_code, json, send};

async fn task_limit_is_exact(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("MAX_TASKS_PER_USER", "10")
        .env("MAX_IN_FLIGHT_PER_USER", "20")
        .start()
        .await
    else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    for i in 0..5 {
        app.create(&alice, json!({"title": format!("t{i}")})).await;
    }
    // 20 at once with room for 5: exactly 5 get in.
    let results = join_all((0..20).map(|i| {
        send(
            app.request(Method::POST, "/api/tasks", &alice)
                .json(&json!({"title": format!("race {i}")})),
        )
    }))
    .await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 5, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*status, StatusCode::CONFLICT);
        assert_eq!(error_code(body), "task_limit_reached");
    }
    assert_eq!(app.db.snapshot().await.len(), 10);

    // A keyed create at the limit stores nothing under its key either.
    let keyed = || {
        app.request(Method::POST, "/api/tasks", &alice)
            .header("Idempotency-Key", "at-the-limit")
            .json(&json!({"title": "later"}))
    };
    assert_eq!(send(keyed()).await.0, StatusCode::CONFLICT);
    // Bob is not affected; after a delete, alice has room again.
    app.create(&bob, json!({"title": "bob's"})).await;
    let (_, list) = app.list(&alice, "?limit=1").await;
    let (status, _) = send(app.request(
        Method::DELETE,
        &format!("/api/tasks/{}", list[0]["id"]),
        &alice,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(send(keyed()).await.0, StatusCode::CREATED);
    assert_eq!(app.db.snapshot().await.len(), 11);
}

/// PostgreSQL: a create that has to wait for the user's list row (locked
/// here by another transaction, which adds the user's last allowed task)
/// counts that task once it gets the row, and is refused: the count is the
/// row's latest, not the one the statement's snapshot saw.
async fn a_create_counts_what_committed_while_it_waited_for_the_lock(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("MAX_TASKS_PER_USER", "3")
        .start()
        .await
    else {
        return;
    };
    let alice = app.token("alice");
    for i in 0..2 {
        app.create(&alice, json!({"title": format!("t{i}")})).await;
    }
    let db = app.db.connect().await;
    let other = db.begin().await.unwrap();
    other
        .execute_unprepared(
            "UPDATE task_lists SET task_count = task_count + 1 WHERE user_id = 'alice'",
        )
        .await
        .unwrap();
    other
        .execute_unprepared(
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) \
             VALUES ('alice', 'third', false, now(), now())",
        )
        .await
        .unwrap();
    let create = tokio::spawn(send(
        app.request(Method::POST, "/api/tasks", &alice)
            .json(&json!({"title": "fourth"})),
    ));
    // The create is waiting for the row once PostgreSQL says so.
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND datname = current_database()";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let row = db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, waiting))
            .await
            .unwrap()
            .unwrap();
        if row.try_get::<i64>("", "n").unwrap() > 0 {
            break;
        }
        assert!(
            !create.is_finished(),
            "the create did not wait for the lock"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the create never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    other.commit().await.unwrap();
    let (status, body) = create.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body:?}");
    assert_eq!(error_code(&body), "task_limit_reached");
    assert_eq!(app.db.snapshot().await.len(), 3);
}

mod lock_then_count {
    use crate::common::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_create_counts_what_committed_while_it_waited_for_the_lock(Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgbouncer() {
        super::a_create_counts_what_committed_while_it_waited_for_the_lock(Backend::PgBouncer).await
    }
}

async fn a_burst_from_one_browser_is_served(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    // 100 at once, with the defaults (4 at a time, 128 waiting): all served.
    let results = join_all((0..100).map(|i| {
        send(
            app.request(Method::POST, "/api/tasks", &alice)
                .json(&json!({"title": format!("burst {i}")})),
        )
    }))
    .await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::CREATED),
        "{:?}",
        results.iter().map(|(s, _)| s.as_u16()).collect::<Vec<_>>()
    );
    assert_eq!(app.db.snapshot().await.len(), 100);
}

/// A POST whose head is in and whose body is held back, holding one of its
/// user's turns: `Expect: 100-continue` makes the server say when the
/// handler (past authentication and the per-user gate) starts reading it.
struct HeldRequest {
    stream: TcpStream,
    body: String,
}

impl HeldRequest {
    async fn open(app: &TestApp, token: &str, title: &str) -> HeldRequest {
        let addr = app.addr();
        let mut stream = TcpStream::connect(addr.as_str()).await.unwrap();
        let body = json!({"title": title}).to_string();
        let head = format!(
            "POST /api/tasks HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            seen.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&seen).into_owned();
        assert!(line.starts_with("HTTP/1.1 100"), "{line}");
        HeldRequest { stream, body }
    }

    /// Sends the body; the status of the response.
    async fn finish(mut self) -> u16 {
        self.stream.write_all(self.body.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        self.stream.read_exact(&mut head).await.unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }
}

async fn a_flood_beyond_the_queue_gets_429(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("MAX_IN_FLIGHT_PER_USER", "2")
        .env("MAX_QUEUED_PER_USER", "10")
        .start()
        .await
    else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let held = [
        HeldRequest::open(&app, &alice, "held 1").await,
        HeldRequest::open(&app, &alice, "held 2").await,
    ];
    // Both of alice's turns are taken: of 30 more, 10 wait and 20 are refused.
    let flood = (0..30).map(|_| {
        let request = app.request(Method::GET, "/api/tasks", &alice);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let (status, body) = json(response).await;
            (status, retry_after, body)
        })
    });
    let flood: Vec<_> = flood.collect();
    // Bob is served meanwhile.
    let (status, _) = app.list(&bob, "").await;
    assert_eq!(status, StatusCode::OK);
    // The refusals come back at once; the other ten wait.
    let started = std::time::Instant::now();
    while flood.iter().filter(|r| r.is_finished()).count() < 20 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "20 refusals"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (done, waiting): (Vec<_>, Vec<_>) = flood.into_iter().partition(|r| r.is_finished());
    assert_eq!(waiting.len(), 10);
    for request in done {
        let (status, retry_after, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(error_code(&body), "too_many_requests");
        assert!(retry_after.is_some());
    }
    // Alice's held requests finish; the waiting ten are served in turn.
    for status in join_all(held.into_iter().map(HeldRequest::finish)).await {
        assert_eq!(status, 201);
    }
    for request in waiting {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn rate_limit_refuses_beyond_bursts(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("RATE_LIMIT_PER_USER", "1")
        .env("MAX_IN_FLIGHT_PER_USER", "20")
        .start()
        .await
    else {
        return;
    };
    let alice = app.token("alice");
    // One a second, bursts of two: of 10 at once, about 8 are refused.
    let results = join_all((0..10).map(|_| async {
        let response = app
            .request(Method::GET, "/api/tasks", &alice)
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        (json(response).await, retry_after)
    }))
    .await;
    let refused: Vec<_> = results
        .iter()
        .filter(|((s, _), _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!((5..=8).contains(&refused.len()), "{}", refused.len());
    for ((_, body), retry_after) in &refused {
        assert_eq!(error_code(body), "too_many_requests");
        let seconds: u64 = retry_after
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&seconds), "{seconds}");
    }
    // Others have their own allowance.
    let (status, _) = app.list(&app.token("bob"), "").await;
    assert_eq!(status, StatusCode::OK);
}

on_each_database!(
    task_limit_is_exact,
    a_burst_from_one_browser_is_served,
    a_flood_beyond_the_queue_gets_429,
    rate_limit_refuses_beyond_bursts,
);
