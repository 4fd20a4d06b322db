//! Two users: neither can see, change or detect the other's tasks. Another
//! user's task answers exactly like one that never existed.

use crate::common::{Backend, TestApp, json};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Status, body and the headers that could leak something, of a request.
async fn answer(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = app.request(method, path, token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    let length = response
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = json(response).await;
    (status, body, length)
}

async fn users_cannot_see_or_touch_each_other(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    users_cannot_see_or_touch_each_other_in(&app, "alice", "bob").await;
}

/// The checks, for two users new to `app` (also run with row-level
/// security alone: `row_security`).
pub async fn users_cannot_see_or_touch_each_other_in(app: &TestApp, alice: &str, bob: &str) {
    let (app, users) = (app, [alice, bob]);
    let alice = app.token(alice);
    let bob = app.token(bob);
    let alices = app
        .create(
            &alice,
            json!({"title": "alice's secret", "description": "private"}),
        )
        .await;
    let bobs = app.create(&bob, json!({"title": "bob's task"})).await;
    let a_id = alices["id"].as_i64().unwrap();
    // An id that never existed, larger than any real one.
    let ghost = a_id + 1_000_000;

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/tasks/{id}".into(), None),
        (
            Method::PUT,
            "/api/tasks/{id}".into(),
            Some(json!({"title": "pwned", "completed": true})),
        ),
        (Method::PATCH, "/api/tasks/{id}/complete".into(), None),
        (
            Method::PATCH,
            "/api/tasks/{id}/complete".into(),
            Some(json!({"completed": true})),
        ),
        (Method::DELETE, "/api/tasks/{id}".into(), None),
    ];
    for (method, template, body) in attempts {
        let foreign = answer(
            app,
            method.clone(),
            &template.replace("{id}", &a_id.to_string()),
            &bob,
            body.clone(),
        )
        .await;
        let missing = answer(
            app,
            method.clone(),
            &template.replace("{id}", &ghost.to_string()),
            &bob,
            body.clone(),
        )
        .await;
        assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{method} {template}");
        assert_eq!(
            foreign, missing,
            "{method} {template}: another user's task must look exactly like a missing one"
        );
    }

    // Listing: each sees only their own, with counts to match.
    for (token, mine) in [(&alice, &alices), (&bob, &bobs)] {
        let response = app
            .request(Method::GET, "/api/tasks", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-total-count"], "1");
        let (_, list) = json(response).await;
        assert_eq!(list, json!([mine]));
        let (_, searched) = app.list(token, "?q=secret").await;
        assert!(
            searched
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["user_id"] == mine["user_id"])
        );
    }

    // Alice's task is exactly as she left it.
    let (status, still, _) = answer(
        app,
        Method::GET,
        &format!("/api/tasks/{a_id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!((status, still), (StatusCode::OK, alices));
    let snapshot = app.db.snapshot().await;
    let theirs = snapshot
        .iter()
        .filter(|row| users.iter().any(|u| row["user_id"] == *u))
        .count();
    assert_eq!(theirs, 2);
}

async fn same_title_different_users(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    same_title_different_users_in(&app, "alice", "bob").await;
}

pub async fn same_title_different_users_in(app: &TestApp, alice: &str, bob: &str) {
    let alice = app.token(alice);
    let bob = app.token(bob);
    let a = app.create(&alice, json!({"title": "shared name"})).await;
    let b = app.create(&bob, json!({"title": "shared name"})).await;
    assert_ne!(a["id"], b["id"]);
    // Bob deleting "his" copy leaves Alice's.
    app.request(Method::DELETE, &format!("/api/tasks/{}", b["id"]), &bob)
        .send()
        .await
        .unwrap();
    let (_, list) = app.list(&alice, "").await;
    assert_eq!(list, json!([a]));
}

on_each_database!(
    users_cannot_see_or_touch_each_other,
    same_title_different_users
);
