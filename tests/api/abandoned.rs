//! Clients that go away mid-request (a closed tab, a load tool stopping, a
//! proxy's timeout) leave nothing behind. Their requests are cancelled at any
//! point, including between the database running a create's `BEGIN` and the
//! service reading its answer: that connection must not go back to the pool
//! inside a transaction. (It did: on SQLite every later create on it failed
//! with "cannot start a transaction within a transaction" and its open
//! transaction held the write lock, so other writes got 503 after the busy
//! timeout; on PostgreSQL later statements on it would have run in a
//! transaction no one commits.)

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{Backend, TestApp, send};

/// Abandoning clients per round, rounds, and writers working meanwhile.
const ABANDONERS: usize = 8;
const ROUNDS: usize = 60;
const WRITERS: usize = 4;
const POOL: usize = 3;

/// Sends `request` whole, `rounds` times on new connections, and closes each
/// after a varying number of scheduler turns (`i` varies it between
/// clients), so the server is cancelled at every stage of its work.
async fn abandon(addr: String, request: String, i: usize, rounds: usize) {
    for round in 0..rounds {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            continue;
        };
        if stream.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        for _ in 0..((round * 7 + i * 13) % 40) {
            tokio::task::yield_now().await;
        }
        drop(stream);
    }
}

async fn abandoned_requests_leave_no_transaction_open(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("DB_MAX_CONNECTIONS", &POOL.to_string())
        // A lock left held fails fast instead of after 10 s.
        .env("DB_STATEMENT_TIMEOUT", "2")
        .start()
        .await
    else {
        return;
    };
    let addr = app.addr();
    let ghosts: Vec<String> = (0..ABANDONERS)
        .map(|i| app.token(&format!("ghost{i}")))
        .collect();

    // Writers toggle their own task throughout: every answer must be a 200.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let token = app.token(&format!("writer{w}"));
        let task = app.create(&token, json!({"title": "toggled"})).await;
        let path = format!("/api/tasks/{}/complete", task["id"]);
        let client = app.client.clone();
        let url = app.url(&path);
        writers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..ROUNDS {
                let status = client
                    .patch(&url)
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(status);
            }
            statuses
        }));
    }

    // Abandoners send a whole create and close the connection after a
    // varying number of scheduler turns, so the server is cancelled at
    // every stage: before the token check, waiting for a connection or the
    // write lock, after BEGIN, during the insert, during COMMIT.
    let abandoners: Vec<_> = ghosts
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let body = r#"{"title":"abandoned"}"#;
            let request = format!(
                "POST /api/tasks HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            tokio::spawn(abandon(addr.clone(), request, i, ROUNDS))
        })
        .collect();
    for a in abandoners {
        a.await.unwrap();
    }
    for w in writers {
        let statuses = w.await.unwrap();
        assert!(
            statuses.iter().all(|&s| s == 200),
            "a writer got other answers than 200 while clients abandoned creates: {statuses:?}"
        );
    }

    // Every connection of the pool works, and writes through each commit:
    // more rounds than connections, each a create (with the abandoning
    // user's lock on PostgreSQL) and a toggle, checked over a connection of
    // the test's own (which sees only committed rows).
    for round in 0..3 * POOL {
        for (i, token) in ghosts.iter().enumerate() {
            let (status, task) = send(
                app.request(Method::POST, "/api/tasks", token)
                    .timeout(Duration::from_secs(30))
                    .json(&json!({"title": format!("after {round}")})),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::CREATED,
                "ghost{i}, round {round}: {task}"
            );
            let (status, toggled) = send(app.request(
                Method::PATCH,
                &format!("/api/tasks/{}/complete", task["id"]),
                token,
            ))
            .await;
            assert_eq!(status, StatusCode::OK, "ghost{i}, round {round}: {toggled}");
        }
    }
    let stored = app.db.snapshot().await;
    let after: Vec<&Value> = stored
        .iter()
        .filter(|t| t["title"].as_str().is_some_and(|t| t.starts_with("after ")))
        .collect();
    assert_eq!(
        after.len(),
        3 * POOL * ABANDONERS,
        "every acknowledged create is committed"
    );
    assert!(
        // SQLite's rows read as JSON give booleans as 0 and 1.
        after
            .iter()
            .all(|t| t["completed"] == json!(true) || t["completed"] == json!(1)),
        "every acknowledged toggle is committed"
    );
}

/// Long lists abandoned mid-stream leave no rows behind on a connection, and
/// with every connection of the pool kept between requests (PostgreSQL keeps
/// them out of sqlx's pool, see `db/leases.rs`) readiness still gets one.
async fn abandoned_lists_leave_clean_connections_and_readiness(backend: Backend) {
    const TASKS: usize = 150; // over the 100 answered in one piece: streamed
    let Some(app) = TestApp::builder(backend)
        .env("DB_MAX_CONNECTIONS", "2")
        .start()
        .await
    else {
        return;
    };
    let addr = app.addr();
    let token = app.token("lister");
    for k in 0..TASKS {
        app.create(
            &token,
            json!({"title": format!("task {k}"), "description": "d".repeat(200)}),
        )
        .await;
    }
    let request =
        format!("GET /api/tasks HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n");
    let abandoners: Vec<_> = (0..ABANDONERS)
        .map(|i| tokio::spawn(abandon(addr.clone(), request.clone(), i, ROUNDS / 2)))
        .collect();
    for a in abandoners {
        a.await.unwrap();
    }

    // Both connections busy at once, then idle (kept): readiness gets one.
    let lists: Vec<_> = (0..8)
        .map(|_| send(app.request(Method::GET, "/api/tasks", &token)))
        .collect();
    for (status, list) in futures::future::join_all(lists).await {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().map(Vec::len), Some(TASKS));
    }
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "ready with every connection idle"
    );

    // Each connection answers exactly its own statement's rows.
    let expected: Vec<String> = (0..TASKS).rev().map(|k| format!("task {k}")).collect();
    for round in 0..6 {
        let (status, list) = send(app.request(Method::GET, "/api/tasks", &token)).await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        let titles: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(titles, expected, "round {round}");
        let (status, one) = send(app.request(Method::GET, "/api/tasks?limit=1", &token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one[0]["title"], json!(format!("task {}", TASKS - 1)));
    }
}

on_each_database!(
    abandoned_requests_leave_no_transaction_open,
    abandoned_lists_leave_clean_connections_and_readiness
);
