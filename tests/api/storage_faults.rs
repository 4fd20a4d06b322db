//! Acknowledged means committed, when storage fails: on a SQLite database on
//! a disk that is full, every 2xx to a write is in the database afterwards,
//! every 503 (with `Retry-After`) left nothing, readiness says 503 while
//! writes fail and 200 again within seconds of space coming back.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::tmpfs::Tmpfs;
use crate::common::{Backend, TestApp, error_code, json, snapshot};

/// What one write during the fault did, and what it must have left.
struct Outcome {
    what: &'static str,
    id: Option<i64>,
    title: String,
    status: StatusCode,
}

async fn write(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.request(method, path, token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let retry_after = response.headers().get("retry-after").cloned();
    let (status, body) = json(response).await;
    assert!(
        status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
        "only 2xx or 503 while the disk is full, got {status}: {body}"
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(error_code(&body), "service_unavailable");
        assert!(retry_after.is_some(), "503 says when to retry");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_acknowledges_only_committed_writes() {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let url = format!("sqlite://{}/todo.db?mode=rwc", disk.path().display());
    let app = TestApp::builder(Backend::Sqlite)
        .database_url(url.clone())
        .start()
        .await
        .expect("server on the tmpfs");
    let alice = app.token("alice");
    let mut before = Vec::new();
    for i in 0..12 {
        before.push(
            app.create(&alice, json!({"title": format!("before {i}")}))
                .await,
        );
    }

    let filler = disk.fill();
    let long = "d".repeat(1000);
    let mut outcomes = Vec::new();
    for i in 0..30 {
        let title = format!("during {i}");
        let (status, body) = write(
            &app,
            &alice,
            Method::POST,
            "/api/tasks",
            Some(json!({"title": title, "description": long})),
        )
        .await;
        outcomes.push(Outcome {
            what: "create",
            id: body["id"].as_i64(),
            title,
            status,
        });
    }
    for (i, task) in before.iter().enumerate() {
        let id = task["id"].as_i64().unwrap();
        let (what, method, path, body) = match i % 3 {
            0 => (
                "update",
                Method::PUT,
                format!("/api/tasks/{id}"),
                Some(json!({"title": "updated", "description": long})),
            ),
            1 => (
                "toggle",
                Method::PATCH,
                format!("/api/tasks/{id}/complete"),
                None,
            ),
            _ => ("delete", Method::DELETE, format!("/api/tasks/{id}"), None),
        };
        let (status, _) = write(&app, &alice, method, &path, body).await;
        outcomes.push(Outcome {
            what,
            id: Some(id),
            title: task["title"].as_str().unwrap().to_owned(),
            status,
        });
    }
    let refused = outcomes
        .iter()
        .filter(|o| o.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let statuses: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} {}", o.what, o.status.as_u16()))
        .collect();
    eprintln!("outcomes: {statuses:?}");
    assert!(
        refused > 0,
        "the disk was really full: some writes were refused"
    );

    // Reads still work; readiness reports the failure.
    let (status, _) = app.list(&alice, "").await;
    assert_eq!(status, StatusCode::OK);
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Space comes back: ready again within 10 s, without a restart.
    std::fs::remove_file(filler).unwrap();
    let took = app
        .wait_for_readiness(StatusCode::OK, Duration::from_secs(10))
        .await;
    eprintln!(
        "ready again {took:?} after space came back; {refused} of {} writes refused",
        outcomes.len()
    );

    let rows = snapshot(&url).await;
    let row = |id: i64| rows.iter().find(|r| r["id"] == id);
    for o in &outcomes {
        let ok = o.status.is_success();
        match o.what {
            "create" => {
                let stored: Vec<&Value> = rows
                    .iter()
                    .filter(|r| r["title"] == o.title.as_str())
                    .collect();
                if ok {
                    assert_eq!(
                        stored.len(),
                        1,
                        "acknowledged create {:?} is stored once",
                        o.title
                    );
                    assert_eq!(stored[0]["id"], json!(o.id), "under the id it was given");
                } else {
                    assert!(
                        stored.is_empty(),
                        "refused create {:?} left nothing",
                        o.title
                    );
                }
            }
            "update" => {
                let title = &row(o.id.unwrap()).expect("updated task exists")["title"];
                assert_eq!(title == "updated", ok, "update {:?}: {}", o.id, o.status);
            }
            "toggle" => {
                let done = &row(o.id.unwrap()).expect("toggled task exists")["completed"];
                // SQLite hands booleans back as 0/1.
                assert_eq!(
                    done == &json!(true) || done == &json!(1),
                    ok,
                    "toggle {:?}: {}",
                    o.id,
                    o.status
                );
            }
            _ => assert_eq!(
                row(o.id.unwrap()).is_none(),
                ok,
                "delete {:?}: {}",
                o.id,
                o.status
            ),
        }
    }
    app.create(&alice, json!({"title": "after"})).await;
}
