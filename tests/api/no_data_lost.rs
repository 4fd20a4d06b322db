//! Every rejected request (400, 401, 404, 413, 415, 422) leaves the database
//! exactly as it was, for each write endpoint.

use crate::common::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// (method, path, token, content type, body, expected status)
type Case<'a> = (
    Method,
    &'a str,
    &'a str,
    Option<&'a str>,
    String,
    StatusCode,
);

async fn rejected_writes_change_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let bob = app.token("bob");
    let task = app
        .create(&alice, json!({"title": "keep", "description": "as is"}))
        .await;
    app.create(&bob, json!({"title": "bob's", "completed": true}))
        .await;
    let id = task["id"].as_i64().unwrap();
    let before = app.db.snapshot().await;
    assert_eq!(before.len(), 2);

    let expired = app.token_with_claims(&json!({"sub": "alice", "exp": 1}));
    let big = json!({"title": "x", "description": "y".repeat(80 * 1024)}).to_string();
    let item = format!("/api/tasks/{id}");
    let complete = format!("/api/tasks/{id}/complete");
    let cases: Vec<Case> = vec![
        // 401
        (
            Method::POST,
            "/api/tasks",
            "junk",
            Some("application/json"),
            r#"{"title":"x"}"#.into(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PUT,
            &item,
            &expired,
            Some("application/json"),
            r#"{"title":"x"}"#.into(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PATCH,
            &complete,
            "",
            None,
            String::new(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::DELETE,
            &item,
            &expired,
            None,
            String::new(),
            StatusCode::UNAUTHORIZED,
        ),
        // 400
        (
            Method::POST,
            "/api/tasks",
            &alice,
            Some("application/json"),
            "{oops".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            &item,
            &alice,
            Some("application/json"),
            r#"{"title": "x""#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            &complete,
            &alice,
            Some("application/json"),
            "{,}".into(),
            StatusCode::BAD_REQUEST,
        ),
        // 413
        (
            Method::POST,
            "/api/tasks",
            &alice,
            Some("application/json"),
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            &item,
            &alice,
            Some("application/json"),
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PATCH,
            &complete,
            &alice,
            Some("application/json"),
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // 415
        (
            Method::POST,
            "/api/tasks",
            &alice,
            Some("text/plain"),
            r#"{"title":"x"}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::PUT,
            &item,
            &alice,
            Some("application/xml"),
            "<title>x</title>".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::PATCH,
            &complete,
            &alice,
            Some("text/plain"),
            "true".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        // 422
        (
            Method::POST,
            "/api/tasks",
            &alice,
            Some("application/json"),
            r#"{"title":"  "}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/tasks",
            &alice,
            Some("application/json"),
            r#"{"title":"ok","completed":"yes"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/tasks",
            &alice,
            Some("application/json"),
            r#"{"title":"a\u0000"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            &item,
            &alice,
            Some("application/json"),
            r#"{"title":"new","completed":"no"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            &item,
            &alice,
            Some("application/json"),
            r#"{"description":"\u0000"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            &item,
            &alice,
            Some("application/json"),
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PATCH,
            &complete,
            &alice,
            Some("application/json"),
            r#"{"completed":null}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // 404: another user's task, and ids that name nothing
        (
            Method::PUT,
            &item,
            &bob,
            Some("application/json"),
            r#"{"title":"mine now"}"#.into(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PATCH,
            &complete,
            &bob,
            None,
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            &item,
            &bob,
            None,
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/api/tasks/0",
            &alice,
            None,
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            "/api/tasks/abc",
            &alice,
            Some("application/json"),
            r#"{"title":"x"}"#.into(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, token, content_type, body, expected) in cases {
        let mut req = app.client.request(method.clone(), app.url(path));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let status = req.body(body).send().await.unwrap().status();
        assert_eq!(status, expected, "{method} {path}");
        assert_eq!(
            app.db.snapshot().await,
            before,
            "{method} {path} ({expected}) changed the database"
        );
    }
}

on_each_database!(rejected_writes_change_nothing);

/// A write whose statement the driver refuses before sending it (a
/// parameter missing) stores none of the statements before it: the
/// pipelined transaction ends in `ROLLBACK`, not `COMMIT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_refused_before_it_is_sent_rolls_back_the_ones_before_it() {
    use sea_orm::ConnectionTrait;
    use todo_api::db::{Caller, Db, Stmt};
    let Some(test_db) = crate::common::TestDb::create(Backend::Postgres).await else {
        return;
    };
    let conn = test_db.connect().await;
    conn.execute_unprepared("CREATE TABLE refusals (n int)")
        .await
        .unwrap();
    let env = |k: &str| match k {
        "DATABASE_URL" => Some(test_db.url.clone()),
        "BETTER_AUTH_SECRET" => Some("5".repeat(64)),
        "DB_ROW_LEVEL_SECURITY" => Some("off".to_owned()),
        _ => None,
    };
    let settings = todo_api::Settings::from_lookup(env).expect("settings");
    let db = Db::open(&settings.database, Default::default()).expect("a pool");
    let insert = |n: i32| Stmt::new(&format!("INSERT INTO refusals (n) VALUES ({n})"), []);
    let no_value = Vec::<sea_orm::Value>::new();
    let refused = db
        .write(
            Caller::Service,
            &[insert(1), Stmt::new("SELECT $1::int", no_value)],
        )
        .await;
    assert!(refused.is_err(), "a missing parameter is refused");
    // The same with its value: both committed (so the check below can fail).
    let stored = db
        .write(
            Caller::Service,
            &[insert(2), Stmt::new("SELECT $1::int", [5.into()])],
        )
        .await;
    assert!(stored.as_ref().err().is_none(), "{:?}", stored.err());
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT n FROM refusals ORDER BY n",
        ))
        .await
        .unwrap();
    let stored: Vec<i32> = rows.iter().map(|r| r.try_get("", "n").unwrap()).collect();
    assert_eq!(stored, vec![2], "the refused write's insert is not stored");
    let _ = conn.close().await;
}
