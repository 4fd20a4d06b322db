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

/// A database file the server's user cannot write (started as `nobody`; as
/// root, file permissions would not apply): it starts and serves reads, is
/// not ready, answers writes 503 with `Retry-After` and the cause in its
/// log, keeps nothing of them, and is ready again within seconds of the file
/// becoming writable.
#[test]
fn sqlite_read_only_file_is_503_until_writable() {
    use std::os::unix::fs::PermissionsExt;

    use crate::common::process::Server;

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !crate::common::in_ci(),
            "CI=true: this test needs root to run the server as nobody"
        );
        eprintln!(
            "\n!!!!! SKIPPED: read-only database test: needs root (to start the server as nobody) !!!!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let db = dir.path().join("todo.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let secret = "read-only-secret-0123456789abcdef";
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("DATABASE_URL", url.as_str()),
    ];
    // Migrated, with one task, then made read-only.
    let server = Server::start(dir.path(), &env, &[]).expect("first start");
    let token = todo_api::auth::mint_hs256(secret.as_bytes(), "alice", None, 600).unwrap();
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(server.url("/api/tasks"))
        .bearer_auth(&token)
        .json(&json!({"title": "kept"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(server.terminate().0.success());
    let set_mode = |mode: u32| {
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("todo.db{suffix}"));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    };
    set_mode(0o444);

    const NOBODY: u32 = 65534;
    let server =
        Server::start_as(dir.path(), &env, NOBODY, NOBODY).expect("starts on a read-only file");
    let status = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = client.request(method, server.url(path)).bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let retry_after = response.headers().contains_key("retry-after");
        (response.status(), retry_after)
    };
    assert_eq!(
        client.get(server.url("/health")).send().unwrap().status(),
        200
    );
    let ready = client.get(server.url("/health/ready")).send().unwrap();
    assert_eq!(ready.status(), 503);
    let (list_status, _) = status(reqwest::Method::GET, "/api/tasks", None);
    assert_eq!(list_status, 200, "reads still work");
    let id = created["id"].as_i64().unwrap();
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/tasks".to_owned(),
            Some(json!({"title": "lost?"})),
        ),
        (
            reqwest::Method::PUT,
            format!("/api/tasks/{id}"),
            Some(json!({"title": "changed?"})),
        ),
        (
            reqwest::Method::PATCH,
            format!("/api/tasks/{id}/complete"),
            None,
        ),
        (reqwest::Method::DELETE, format!("/api/tasks/{id}"), None),
    ] {
        assert_eq!(
            status(method.clone(), &path, body),
            (reqwest::StatusCode::SERVICE_UNAVAILABLE, true),
            "{method} {path}"
        );
    }
    server.wait_for_log("readonly database");

    // The operator makes the files writable: ready again, without a restart.
    set_mode(0o666);
    let started = std::time::Instant::now();
    while client
        .get(server.url("/health/ready"))
        .send()
        .unwrap()
        .status()
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ready again within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status_after, _) = status(
        reqwest::Method::POST,
        "/api/tasks",
        Some(json!({"title": "after"})),
    );
    assert_eq!(status_after, 201);
    let list: Value = client
        .get(server.url("/api/tasks?sort=id&order=asc"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["kept", "after"], "the refused writes left nothing");
    assert_eq!(list[0]["completed"], false);
    server.terminate();
}
