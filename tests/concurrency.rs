//! Concurrent writes: toggles are atomic, creates all persist.

mod common;

use common::{Backend, TestApp, json};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn concurrent_toggles_keep_parity(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "flip me"})).await;
    let path = format!("/api/tasks/{}/complete", task["id"]);
    let toggles = (0..50).map(|_| app.request(Method::PATCH, &path, &alice).send());
    let results = join_all(toggles).await;
    let ok = results
        .into_iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
        .count();
    assert_eq!(ok, 50, "every toggle succeeded");
    let (_, after) = json(
        app.request(Method::GET, &format!("/api/tasks/{}", task["id"]), &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        after["completed"], false,
        "50 toggles (even) return to the start: none was lost"
    );

    // And once more with an odd count.
    let results = join_all((0..51).map(|_| app.request(Method::PATCH, &path, &alice).send())).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
    );
    let (_, after) = json(
        app.request(Method::GET, &format!("/api/tasks/{}", task["id"]), &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(after["completed"], true);
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

on_both_backends!(
    concurrent_toggles_keep_parity,
    concurrent_creates_all_persist
);
