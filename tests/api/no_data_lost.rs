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
