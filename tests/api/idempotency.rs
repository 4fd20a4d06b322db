//! Safe retries: `POST /api/tasks` with an `Idempotency-Key`. For one user
//! and key, a repeat with the same body gets the first response again and
//! creates nothing; another body, or a repeat while the first still runs, is
//! 409 `idempotency_conflict`. Keys live in the database: they hold across a
//! restart, and are forgotten (and purged) after 24 hours.

use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use reqwest::header::HeaderValue;
use reqwest::{Method, Response, StatusCode};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Database, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use todo_api::models::idempotency_key::{Column, Entity as Keys};

use crate::common::{Backend, TestApp, error_code, error_fields};

const KEY: &str = "Idempotency-Key";

/// Status, `Location`, `Retry-After` and the raw body text.
async fn parts(response: Response) -> (StatusCode, Option<String>, Option<String>, String) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (location, retry_after) = (header("location"), header("retry-after"));
    (
        response.status(),
        location,
        retry_after,
        response.text().await.unwrap(),
    )
}

async fn post(
    app: &TestApp,
    token: &str,
    key: &str,
    body: &str,
) -> (StatusCode, Option<String>, Option<String>, String) {
    let response = app
        .request(Method::POST, "/api/tasks", token)
        .header(KEY, key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    parts(response).await
}

async fn repeats_replay_the_first_response(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let body = r#"{"title": "Buy milk", "description": "2 l"}"#;
    let first = post(&app, &alice, "order-17", body).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.3);
    let task: Value = serde_json::from_str(&first.3).unwrap();
    assert_eq!(first.1, Some(format!("/api/tasks/{}", task["id"])));

    // The same request again, and the same JSON written differently.
    for repeat in [body, r#"{"description":"2 l","title":"Buy milk"}"#] {
        let again = post(&app, &alice, "order-17", repeat).await;
        assert_eq!(
            (again.0, &again.1, &again.3),
            (first.0, &first.1, &first.3),
            "the first response again"
        );
    }
    // The task changes afterwards; a repeat still gets the first response.
    let (status, _) = crate::common::send(
        app.request(Method::PUT, &format!("/api/tasks/{}", task["id"]), &alice)
            .json(&json!({"completed": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(post(&app, &alice, "order-17", body).await.3, first.3);

    // Another body with the key: a conflict, nothing created.
    let other = post(&app, &alice, "order-17", r#"{"title": "Buy bread"}"#).await;
    assert_eq!(other.0, StatusCode::CONFLICT);
    assert_eq!(
        error_code(&serde_json::from_str(&other.3).unwrap()),
        "idempotency_conflict"
    );

    // Keys are per user: bob's "order-17" is his own.
    let bob = app.token("bob");
    let bobs = post(&app, &bob, "order-17", body).await;
    assert_eq!(bobs.0, StatusCode::CREATED);
    assert_ne!(bobs.3, first.3);
    assert_eq!(app.db.snapshot().await.len(), 2);

    // A repeat after the task was deleted creates nothing (and says so).
    let (status, _) = crate::common::send(app.request(
        Method::DELETE,
        &format!("/api/tasks/{}", task["id"]),
        &alice,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let after_delete = post(&app, &alice, "order-17", body).await;
    assert_eq!(after_delete.0, StatusCode::CONFLICT, "{}", after_delete.3);
    assert_eq!(app.db.snapshot().await.len(), 1, "only bob's task");

    // Without a key every POST creates.
    for _ in 0..2 {
        app.create(&alice, json!({"title": "no key"})).await;
    }
    assert_eq!(app.db.snapshot().await.len(), 3);
}

async fn bad_keys_are_422(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let long = "k".repeat(256);
    let bad: Vec<HeaderValue> = vec![
        HeaderValue::from_static(""),
        HeaderValue::from_str(&long).unwrap(),
        HeaderValue::from_static("has space"),
        HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        HeaderValue::from_bytes(b"tab\there").unwrap(),
    ];
    for value in bad {
        let response = app
            .request(Method::POST, "/api/tasks", &alice)
            .header(KEY, value.clone())
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap();
        let (status, body) = crate::common::json(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value:?}");
        assert_eq!(error_fields(&body), [KEY], "{value:?}");
    }
    // Twice is once too many; a bad key and a bad title are reported together.
    let response = app
        .request(Method::POST, "/api/tasks", &alice)
        .header(KEY, "a")
        .header(KEY, "b")
        .json(&json!({"title": ""}))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::common::json(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&body), [KEY, "title"]);
    // The longest and the most varied valid keys.
    for key in ["k".repeat(255), "!~0aZ-_.:/{}[]".into()] {
        assert_eq!(
            post(&app, &alice, &key, r#"{"title": "ok"}"#).await.0,
            StatusCode::CREATED
        );
    }
    assert_eq!(app.db.snapshot().await.len(), 2);
}

async fn concurrent_repeats_create_one_task(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        // Let all 100 in at once.
        .env("MAX_IN_FLIGHT_PER_USER", "100")
        .start()
        .await
    else {
        return;
    };
    let alice = app.token("alice");
    let responses =
        join_all((0..100).map(|_| post(&app, &alice, "burst", r#"{"title": "once"}"#))).await;
    let mut created = Vec::new();
    for (status, _, retry_after, body) in &responses {
        match *status {
            StatusCode::CREATED => created.push(body.clone()),
            StatusCode::CONFLICT => {
                let body: Value = serde_json::from_str(body).unwrap();
                assert_eq!(error_code(&body), "idempotency_conflict");
                assert!(retry_after.is_some(), "in progress: retry shortly");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!created.is_empty());
    created.dedup();
    assert_eq!(created.len(), 1, "every 201 is the same response");
    assert_eq!(app.db.snapshot().await.len(), 1, "exactly one task");
    // Once the first has finished, every repeat is a replay.
    assert_eq!(
        post(&app, &alice, "burst", r#"{"title": "once"}"#).await.3,
        created[0]
    );
}

async fn keys_survive_a_restart(backend: Backend) {
    let Some(mut first) = TestApp::start(backend).await else {
        return;
    };
    let alice = first.token("alice");
    let created = post(&first, &alice, "across-restart", r#"{"title": "t"}"#).await;
    assert_eq!(created.0, StatusCode::CREATED);
    first.stop().await;

    let second = first
        .restart_builder(backend)
        .start()
        .await
        .expect("restart");
    let replay = post(&second, &alice, "across-restart", r#"{"title": "t"}"#).await;
    assert_eq!(
        (replay.0, replay.1, replay.3),
        (created.0, created.1, created.3)
    );
    assert_eq!(first.db.snapshot().await.len(), 1);
}

async fn old_keys_are_forgotten_and_purged(backend: Backend) {
    let Some(mut first) = TestApp::start(backend).await else {
        return;
    };
    let alice = first.token("alice");
    let body = r#"{"title": "daily"}"#;
    let day_one = post(&first, &alice, "daily", body).await;
    assert_eq!(day_one.0, StatusCode::CREATED);

    let db = Database::connect(&first.db.url).await.unwrap();
    let age_keys = async || {
        Keys::update_many()
            .col_expr(
                Column::CreatedAt,
                Expr::value(Utc::now() - chrono::Duration::hours(25)),
            )
            .exec(&db)
            .await
            .unwrap();
    };
    // Over 24 hours old: no longer replayed, the key is used afresh.
    age_keys().await;
    let day_two = post(&first, &alice, "daily", body).await;
    assert_eq!(day_two.0, StatusCode::CREATED);
    assert_ne!(day_two.3, day_one.3, "a new task");
    assert_eq!(first.db.snapshot().await.len(), 2);
    assert_eq!(
        post(&first, &alice, "daily", body).await.3,
        day_two.3,
        "and replayed from then on"
    );

    // Old keys are deleted: at start-up (and hourly).
    age_keys().await;
    first.stop().await;
    let _second = first
        .restart_builder(backend)
        .start()
        .await
        .expect("restart");
    let remaining = async || {
        Keys::find()
            .filter(Column::UserId.eq("alice"))
            .count(&db)
            .await
            .unwrap()
    };
    let started = std::time::Instant::now();
    while remaining().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "expired keys purged after start-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = db.close().await;
}

on_each_database!(
    repeats_replay_the_first_response,
    bad_keys_are_422,
    concurrent_repeats_create_one_task,
    keys_survive_a_restart,
    old_keys_are_forgotten_and_purged,
);
