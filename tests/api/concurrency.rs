//! Concurrent writes: toggles are atomic, creates all persist.

use crate::common::{Backend, TestApp, json, send};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Sends `n` toggles at once; all must succeed. Returns `completed` afterwards.
async fn toggle_concurrently(
    app: &TestApp,
    token: &str,
    id: &serde_json::Value,
    n: usize,
) -> serde_json::Value {
    let path = format!("/api/tasks/{id}/complete");
    let results = join_all((0..n).map(|_| app.request(Method::PATCH, &path, token).send())).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
        .count();
    assert_eq!(ok, n, "every toggle succeeded");
    let (_, after) = send(app.request(Method::GET, &format!("/api/tasks/{id}"), token)).await;
    after["completed"].clone()
}

async fn concurrent_toggles_keep_parity(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "flip me"})).await;
    // An even number of toggles returns to the start, an odd one flips: none was lost.
    assert_eq!(
        toggle_concurrently(&app, &alice, &task["id"], 50).await,
        false
    );
    assert_eq!(
        toggle_concurrently(&app, &alice, &task["id"], 51).await,
        true
    );
}

async fn concurrent_creates_all_persist(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let tokens = [app.token("alice"), app.token("bob")];
    let creates = (0..100).map(|i| {
        app.request(Method::POST, "/api/tasks", &tokens[i % 2])
            .json(&json!({"title": format!("task {i}")}))
            .send()
    });
    let results = join_all(creates).await;
    let mut ids = Vec::new();
    for r in results {
        let (status, task) = json(r.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        ids.push(task["id"].as_i64().unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "ids are unique");
    for token in &tokens {
        let response = app
            .request(Method::GET, "/api/tasks", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-total-count"], "50");
        let (_, list) = json(response).await;
        assert_eq!(list.as_array().unwrap().len(), 50);
    }
    assert_eq!(app.db.snapshot().await.len(), 100);
}

on_each_database!(
    concurrent_toggles_keep_parity,
    concurrent_creates_all_persist
);
