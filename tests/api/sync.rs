//! Versions, conditional requests (ETag, If-Match, If-None-Match) and the
//! changes feed, on every database setup: no edit silently overwrites
//! another, and a copy of the list catches up exactly.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use reqwest::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, error_code, error_fields, send};

on_each_database!(
    every_write_advances_the_users_version_by_one,
    concurrent_writes_get_consecutive_versions,
    conditional_reads_answer_304,
    stale_writes_are_412_and_change_nothing,
    listing_etags_answer_304_until_a_write,
    malformed_preconditions_match_nothing,
    replays_of_a_keyed_create_are_never_412,
    the_feed_returns_each_change_once_in_order,
    the_feed_refuses_cursors_it_cannot_answer,
    the_feed_and_versions_are_per_user,
    a_copy_plus_the_feed_equals_the_list,
    a_database_of_the_previous_release_keeps_every_task,
    tombstones_expire_then_are_purged_but_the_newest,
);

async fn start(backend: Backend) -> Option<TestApp> {
    TestApp::start(backend).await
}

/// The task's `ETag` header, and that it is its version.
fn etag(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(ETAG)
        .expect("ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn write(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = app.request(method, path, token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(tag) = if_match {
        request = request.header(IF_MATCH, tag);
    }
    let response = request.send().await.unwrap();
    let tag = response
        .headers()
        .get(ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = crate::common::json(response).await;
    (status, tag, body)
}

/// The feed from `since`, every page, with `limit` per page.
async fn feed(app: &TestApp, token: &str, since: &str, limit: u32) -> (Vec<Value>, String) {
    let mut changes = Vec::new();
    let mut cursor = since.to_owned();
    loop {
        let path = format!("/api/tasks/changes?since={cursor}&limit={limit}");
        let (status, page) = send(app.request(Method::GET, &path, token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = page["changes"].as_array().unwrap();
        assert!(got.len() <= limit as usize);
        changes.extend(got.iter().cloned());
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            return (changes, cursor);
        }
    }
}

async fn cursor(app: &TestApp, token: &str) -> i64 {
    let (_, cursor) = feed(app, token, "0", 1000).await;
    cursor.parse().unwrap()
}

async fn every_write_advances_the_users_version_by_one(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    assert_eq!(cursor(&app, &alice).await, 0);
    let a = app.create(&alice, json!({"title": "a"})).await;
    assert_eq!(a["version"], 1);
    let b = app.create(&alice, json!({"title": "b"})).await;
    assert_eq!(b["version"], 2);
    // Another user's writes never move it.
    app.create(&bob, json!({"title": "bob's"})).await;
    let id = a["id"].as_i64().unwrap();
    let path = format!("/api/tasks/{id}");
    let (status, tag, updated) = write(
        &app,
        &alice,
        Method::PUT,
        &path,
        Some(json!({"title": "a2"})),
        None,
    )
    .await;
    assert_eq!(
        (status, updated["version"].as_i64()),
        (StatusCode::OK, Some(3))
    );
    assert_eq!(tag.as_deref(), Some("\"3\""));
    let complete = format!("{path}/complete");
    let (_, _, toggled) = write(&app, &alice, Method::PATCH, &complete, None, None).await;
    assert_eq!(toggled["version"], 4);
    // Writes that do nothing move nothing: not found, invalid, stale.
    let (status, _, _) = write(
        &app,
        &alice,
        Method::PUT,
        "/api/tasks/999999",
        Some(json!({"title": "x"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = write(
        &app,
        &alice,
        Method::PUT,
        &path,
        Some(json!({"title": ""})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = write(&app, &alice, Method::DELETE, &path, None, Some("\"1\"")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(cursor(&app, &alice).await, 4);
    let (status, _, _) = write(&app, &alice, Method::DELETE, &path, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cursor(&app, &alice).await, 5);
    // The read of one task carries the same version and tag.
    let b_path = format!("/api/tasks/{}", b["id"]);
    let response = app
        .request(Method::GET, &b_path, &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(etag(&response), "\"2\"");
    assert_eq!(cursor(&app, &bob).await, 1);
}

async fn concurrent_writes_get_consecutive_versions(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("busy");
    let first = app.create(&token, json!({"title": "first"})).await;
    let path = format!("/api/tasks/{}/complete", first["id"]);
    let writes = (0..100).map(|i| {
        let (app, token, path) = (&app, &token, &path);
        async move {
            let (status, _, task) = match i % 2 {
                0 => {
                    write(
                        app,
                        token,
                        Method::POST,
                        "/api/tasks",
                        Some(json!({"title": format!("t{i}")})),
                        None,
                    )
                    .await
                }
                _ => write(app, token, Method::PATCH, path, None, None).await,
            };
            assert!(status.is_success(), "{status} {task}");
            task["version"].as_i64().unwrap()
        }
    });
    let mut versions = futures::future::join_all(writes).await;
    versions.sort_unstable();
    assert_eq!(versions, (2..=101).collect::<Vec<i64>>());
    assert_eq!(cursor(&app, &token).await, 101);
}

async fn conditional_reads_answer_304(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("reader");
    let task = app.create(&token, json!({"title": "t"})).await;
    let path = format!("/api/tasks/{}", task["id"]);
    let response = app
        .request(Method::GET, &path, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tag = etag(&response);
    assert_eq!(tag, format!("\"{}\"", task["version"]));
    for held in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"0\", {tag}"),
        "*".into(),
    ] {
        let response = app
            .request(Method::GET, &path, &token)
            .header(IF_NONE_MATCH, &held)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{held}");
        assert_eq!(etag(&response), tag);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let response = app
        .request(Method::GET, &path, &token)
        .header(IF_NONE_MATCH, "\"999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Another user's task: 404 whatever the condition.
    let other = app.token("other");
    let response = app
        .request(Method::GET, &path, &other)
        .header(IF_NONE_MATCH, "*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn stale_writes_are_412_and_change_nothing(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (laptop, phone) = (app.token("owner"), app.token("owner"));
    let task = app.create(&laptop, json!({"title": "milk"})).await;
    let path = format!("/api/tasks/{}", task["id"]);
    let seen = format!("\"{}\"", task["version"]);
    // The phone renames it.
    let (status, renamed_tag, renamed) = write(
        &app,
        &phone,
        Method::PUT,
        &path,
        Some(json!({"title": "oat milk"})),
        Some(&seen),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    // The laptop, still at the old version, writes each way: 412, nothing changes.
    let before = app.db.snapshot().await;
    let complete = format!("{path}/complete");
    for (method, path, body) in [
        (Method::PUT, path.as_str(), Some(json!({"completed": true}))),
        (Method::PATCH, complete.as_str(), None),
        (Method::DELETE, path.as_str(), None),
    ] {
        for held in [
            seen.clone(),
            format!("W/{}", renamed_tag.clone().unwrap()),
            "\"nonsense\"".into(),
        ] {
            let (status, tag, body) = write(
                &app,
                &laptop,
                method.clone(),
                path,
                body.clone(),
                Some(&held),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::PRECONDITION_FAILED,
                "{method} {held}: {body}"
            );
            assert_eq!(error_code(&body), "precondition_failed");
            assert_eq!(body["task"], renamed, "{method}: the current task");
            assert_eq!(tag, renamed_tag, "{method}: the current tag");
        }
    }
    assert_eq!(app.db.snapshot().await, before);
    // The current tag, one of a list, or `*`: the write goes ahead.
    let tag = renamed_tag.unwrap();
    let (status, tag, _) = write(
        &app,
        &laptop,
        Method::PATCH,
        &complete,
        None,
        Some(&format!("\"1\", {tag}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = write(
        &app,
        &laptop,
        Method::PUT,
        &path,
        Some(json!({"title": "x"})),
        Some("*"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = write(&app, &laptop, Method::DELETE, &path, None, tag.as_deref()).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    let current = body["task"]["version"].to_string();
    let (status, _, _) = write(
        &app,
        &laptop,
        Method::DELETE,
        &path,
        None,
        Some(&format!("\"{current}\"")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Gone, or another user's: 404, never 412.
    let (status, _, body) = write(
        &app,
        &laptop,
        Method::PUT,
        &path,
        Some(json!({"title": "y"})),
        Some("\"1\""),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let mine = app.create(&laptop, json!({"title": "mine"})).await;
    let mine_path = format!("/api/tasks/{}", mine["id"]);
    let stranger = app.token("stranger");
    for held in ["\"1\"", "*"] {
        let (status, _, body) = write(
            &app,
            &stranger,
            Method::DELETE,
            &mine_path,
            None,
            Some(held),
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{held}"
        );
    }
}

async fn listing_etags_answer_304_until_a_write(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (token, other) = (app.token("lister"), app.token("other"));
    // Even an empty list has a tag.
    let response = app
        .request(Method::GET, "/api/tasks", &token)
        .send()
        .await
        .unwrap();
    let empty = etag(&response);
    app.create(&token, json!({"title": "a"})).await;
    let conditional = |token: &str, query: &str, held: &str| {
        app.request(Method::GET, &format!("/api/tasks{query}"), token)
            .header(IF_NONE_MATCH, held.to_owned())
            .send()
    };
    assert_eq!(
        conditional(&token, "", &empty).await.unwrap().status(),
        StatusCode::OK
    );
    let response = app
        .request(Method::GET, "/api/tasks?status=pending", &token)
        .send()
        .await
        .unwrap();
    let pending = etag(&response);
    let response = conditional(&token, "?completed=false", &pending)
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_MODIFIED,
        "the same query, spelt otherwise"
    );
    assert_eq!(etag(&response), pending);
    // Another query, or another user with the same tag: a full answer.
    assert_eq!(
        conditional(&token, "?status=completed", &pending)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.create(&other, json!({"title": "b"})).await;
    let response = conditional(&other, "?status=pending", &pending)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Another user's write changes nothing; the caller's own does.
    assert_eq!(
        conditional(&token, "?status=pending", &pending)
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_MODIFIED
    );
    let created = app
        .create(&token, json!({"title": "c", "completed": true}))
        .await;
    let response = conditional(&token, "?status=pending", &pending)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(etag(&response), pending);
    let (_, body) = crate::common::json(response).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let _ = created;
}

/// RFC 9110's reading of a malformed precondition: it names no tag, so no
/// tag matches: `If-Match` fails (412, nothing changes), `If-None-Match`
/// holds (the full answer).
async fn malformed_preconditions_match_nothing(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("careless");
    let task = app.create(&token, json!({"title": "t"})).await;
    let path = format!("/api/tasks/{}", task["id"]);
    let complete = format!("{path}/complete");
    let before = app.db.snapshot().await;
    for bad in ["1", "\"1", "*, \"1\"", "w/\"1\"", "\"a b\"", "", "null"] {
        for (method, path) in [
            (Method::PUT, path.as_str()),
            (Method::PATCH, complete.as_str()),
            (Method::DELETE, path.as_str()),
        ] {
            let body = (method == Method::PUT).then(|| json!({"title": "changed"}));
            let (status, _, body) =
                write(&app, &token, method.clone(), path, body, Some(bad)).await;
            assert_eq!(
                status,
                StatusCode::PRECONDITION_FAILED,
                "{method} {path}: {bad:?}"
            );
            assert_eq!(error_code(&body), "precondition_failed");
            assert_eq!(body["task"], task);
        }
        for path in [path.as_str(), "/api/tasks"] {
            let response = app
                .request(Method::GET, path, &token)
                .header(IF_NONE_MATCH, bad)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "GET {path}: {bad:?}");
        }
    }
    assert_eq!(app.db.snapshot().await, before);
}

async fn replays_of_a_keyed_create_are_never_412(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("retrier");
    let create = || {
        app.request(Method::POST, "/api/tasks", &token)
            .header("Idempotency-Key", "k-1")
            .header(IF_MATCH, "\"12345\"")
            .json(&json!({"title": "once"}))
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_tag = etag(&first);
    let (_, first_body) = crate::common::json(first).await;
    // The task changes; the replay is still the first response.
    let path = format!("/api/tasks/{}", first_body["id"]);
    write(
        &app,
        &token,
        Method::PATCH,
        &format!("{path}/complete"),
        None,
        None,
    )
    .await;
    let again = create().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(etag(&again), first_tag);
    let (_, again_body) = crate::common::json(again).await;
    assert_eq!(again_body, first_body);
}

async fn the_feed_returns_each_change_once_in_order(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("feeder");
    let a = app.create(&token, json!({"title": "a"})).await;
    let b = app.create(&token, json!({"title": "b"})).await;
    let c = app.create(&token, json!({"title": "c"})).await;
    let since = cursor(&app, &token).await;
    assert_eq!(since, 3);
    let path = |t: &Value| format!("/api/tasks/{}", t["id"]);
    write(
        &app,
        &token,
        Method::PUT,
        &path(&a),
        Some(json!({"title": "a2"})),
        None,
    )
    .await;
    write(
        &app,
        &token,
        Method::PATCH,
        &format!("{}/complete", path(&a)),
        None,
        None,
    )
    .await;
    write(&app, &token, Method::DELETE, &path(&b), None, None).await;
    let d = app.create(&token, json!({"title": "d"})).await;
    write(&app, &token, Method::DELETE, &path(&d), None, None).await;
    let (changes, next) = feed(&app, &token, &since.to_string(), 500).await;
    let summary: Vec<(String, i64, i64)> = changes
        .iter()
        .map(|c| {
            let id = c["task"]["id"].as_i64().or(c["id"].as_i64()).unwrap();
            (
                c["op"].as_str().unwrap().to_owned(),
                c["version"].as_i64().unwrap(),
                id,
            )
        })
        .collect();
    let id = |t: &Value| t["id"].as_i64().unwrap();
    assert_eq!(
        summary,
        [
            ("upsert".into(), 5, id(&a)),
            ("delete".into(), 6, id(&b)),
            ("delete".into(), 8, id(&d)),
        ]
    );
    assert_eq!(changes[0]["task"]["title"], "a2");
    assert_eq!(changes[0]["task"]["completed"], true);
    assert_eq!(next, "8");
    // Nothing new: an empty page at the same cursor.
    let (changes, again) = feed(&app, &token, &next, 500).await;
    assert!(changes.is_empty());
    assert_eq!(again, next);
    // The snapshot: live tasks, ascending, paged one by one. Its first page
    // holds upserts only; later pages are the feed from the page before,
    // deletes after it included (a task sent on a page may go before the
    // last one).
    let (first, _) = feed(&app, &token, "0", 2).await;
    let upserts: Vec<i64> = first
        .iter()
        .filter(|c| c["op"] == "upsert")
        .map(|c| c["task"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(upserts, [id(&c), id(&a)]);
    let (snapshot, at) = feed(&app, &token, "0", 1).await;
    assert_eq!(snapshot[0]["task"]["id"], c["id"]);
    let mut copy = BTreeMap::new();
    apply(&mut copy, &snapshot);
    assert_eq!(copy.keys().copied().collect::<Vec<_>>(), {
        let mut ids = vec![id(&a), id(&c)];
        ids.sort_unstable();
        ids
    });
    assert_eq!(at, "8");
    // No `since` is the snapshot too.
    let (status, page) = send(app.request(Method::GET, "/api/tasks/changes", &token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["changes"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], false);
}

async fn the_feed_refuses_cursors_it_cannot_answer(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("lost");
    app.create(&token, json!({"title": "a"})).await;
    // Ahead of the user's version: 410.
    let (status, body) = send(app.request(Method::GET, "/api/tasks/changes?since=2", &token)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::GONE, "cursor_expired")
    );
    for (query, field) in [
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("since=1.0", "since"),
        ("since=", "since"),
        ("since=%00", "since"),
        ("since=99999999999999999999", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ] {
        let (status, body) =
            send(app.request(Method::GET, &format!("/api/tasks/changes?{query}"), &token)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(error_fields(&body), [field], "{query}");
    }
    // No token: 401 as every route.
    let (status, _) = send(app.client.get(app.url("/api/tasks/changes"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn the_feed_and_versions_are_per_user(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let mine = app.create(&alice, json!({"title": "alice's"})).await;
    let theirs = app.create(&bob, json!({"title": "bob's"})).await;
    write(
        &app,
        &bob,
        Method::DELETE,
        &format!("/api/tasks/{}", theirs["id"]),
        None,
        None,
    )
    .await;
    app.create(&bob, json!({"title": "bob's second"})).await;
    let (changes, cursor) = feed(&app, &alice, "0", 10).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["task"], mine);
    assert_eq!(cursor, "1");
    // Bob's cursor (3) is ahead of Alice's version: 410, nothing of Bob's.
    let (status, _) = send(app.request(Method::GET, "/api/tasks/changes?since=3", &alice)).await;
    assert_eq!(status, StatusCode::GONE);
    let (bobs, _) = feed(&app, &bob, "1", 10).await;
    assert_eq!(bobs.len(), 2);
    assert!(
        bobs.iter()
            .all(|c| c["task"]["user_id"] == "bob" || c["op"] == "delete")
    );
    assert!(
        !bobs
            .iter()
            .any(|c| c["task"]["id"] == mine["id"] || c["id"] == mine["id"])
    );
}

/// Random writes; copies of the list taken at random points, each with the
/// feed's cursor at that point; each copy brought up to date with the feed
/// (random page sizes) equals `GET /api/tasks`, every field.
async fn a_copy_plus_the_feed_equals_the_list(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let token = app.token("syncer");
    let noise = app.token("noise");
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut copies: Vec<(BTreeMap<i64, Value>, String)> = Vec::new();
    for step in 0..60 {
        let live: Vec<i64> = list(&app, &token).await.keys().copied().collect();
        let pick = (!live.is_empty()).then(|| live[rng.random_range(0..live.len())]);
        match (rng.random_range(0..6), pick) {
            (0 | 1, _) | (_, None) => {
                app.create(
                    &token,
                    json!({"title": format!("t{step}"), "completed": rng.random_bool(0.3)}),
                )
                .await;
            }
            (2, Some(id)) => {
                write(
                    &app,
                    &token,
                    Method::PUT,
                    &format!("/api/tasks/{id}"),
                    Some(json!({"title": format!("r{step}")})),
                    None,
                )
                .await;
            }
            (3, Some(id)) => {
                write(
                    &app,
                    &token,
                    Method::PATCH,
                    &format!("/api/tasks/{id}/complete"),
                    None,
                    None,
                )
                .await;
            }
            (_, Some(id)) => {
                write(
                    &app,
                    &token,
                    Method::DELETE,
                    &format!("/api/tasks/{id}"),
                    None,
                    None,
                )
                .await;
            }
        }
        if rng.random_bool(0.3) {
            app.create(&noise, json!({"title": "noise"})).await;
        }
        if rng.random_bool(0.2) {
            // A copy: the feed's snapshot (which gives its cursor), paged.
            let (snapshot, cursor) = feed(&app, &token, "0", rng.random_range(1..5)).await;
            let mut copy = BTreeMap::new();
            apply(&mut copy, &snapshot);
            assert_eq!(copy, list(&app, &token).await, "seed {seed}: the snapshot");
            copies.push((copy, cursor));
        }
    }
    let now = list(&app, &token).await;
    assert!(!copies.is_empty(), "seed {seed}");
    for (mut copy, cursor) in copies {
        let (changes, _) = feed(&app, &token, &cursor, rng.random_range(1..8)).await;
        let mut seen = std::collections::HashSet::new();
        let mut last = 0;
        for change in &changes {
            let id = change["task"]["id"]
                .as_i64()
                .or(change["id"].as_i64())
                .unwrap();
            assert!(seen.insert(id), "seed {seed}: task {id} twice");
            let version = change["version"].as_i64().unwrap();
            assert!(version > last, "seed {seed}: not ascending");
            last = version;
        }
        apply(&mut copy, &changes);
        assert_eq!(copy, now, "seed {seed}: copy at {cursor} plus the feed");
    }
}

async fn list(app: &TestApp, token: &str) -> BTreeMap<i64, Value> {
    let (status, tasks) = app.list(token, "").await;
    assert_eq!(status, StatusCode::OK);
    tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t.clone()))
        .collect()
}

fn apply(copy: &mut BTreeMap<i64, Value>, changes: &[Value]) {
    for change in changes {
        match change["op"].as_str().unwrap() {
            "upsert" => {
                let task = change["task"].clone();
                assert_eq!(task["version"], change["version"]);
                copy.insert(task["id"].as_i64().unwrap(), task);
            }
            "delete" => {
                copy.remove(&change["id"].as_i64().unwrap());
            }
            other => panic!("op {other}"),
        }
    }
}

/// A database as the previous release left it (migrations up to
/// `m20261204_000005`, rows of two users, a key of a keyed create) is
/// migrated at start-up: every task kept, versions 1..n per user in the
/// order of their last write, the users' versions after them.
async fn a_database_of_the_previous_release_keeps_every_task(backend: Backend) {
    use migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    let Some(db) = crate::common::TestDb::create(backend).await else {
        return;
    };
    let conn = db.connect().await;
    migration::Migrator::up(&conn, Some(5)).await.unwrap();
    for sql in [
        "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at) VALUES \
         ('u1', 'written last', NULL, false, '2026-01-01T00:00:00Z', '2026-03-01T00:00:00Z'), \
         ('u1', 'written first', 'd', true, '2026-01-02T00:00:00Z', '2026-01-02T00:00:00Z'), \
         ('u1', 'written second', NULL, false, '2026-01-03T00:00:00Z', '2026-02-01T00:00:00Z'), \
         ('u2', 'only', NULL, false, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        "INSERT INTO task_lists (user_id, task_count) VALUES ('u1', 3), ('u2', 1)",
    ] {
        conn.execute_unprepared(sql).await.unwrap();
    }
    let before = db.snapshot().await;
    let _ = conn.close().await;
    let Some(app) = TestApp::builder(backend).database(db).start().await else {
        return;
    };
    assert_eq!(app.db.snapshot().await, before, "every task kept as it was");
    let u1 = app.token("u1");
    let (_, tasks) = app.list(&u1, "?sort=updated_at&order=asc").await;
    let versions: Vec<(String, i64)> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["title"].as_str().unwrap().to_owned(),
                t["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("written first".into(), 1),
            ("written second".into(), 2),
            ("written last".into(), 3)
        ]
    );
    assert_eq!(cursor(&app, &u1).await, 3);
    assert_eq!(app.create(&u1, json!({"title": "new"})).await["version"], 4);
    let u2 = app.token("u2");
    assert_eq!(cursor(&app, &u2).await, 1);
    let (_, tasks) = app.list(&u2, "").await;
    assert_eq!(tasks.as_array().unwrap().len(), 1);
}

/// Tombstones older than `TOMBSTONE_RETENTION_DAYS`: a cursor before one is
/// 410 at once (whether purged or not); the purge (at start-up, then
/// hourly) deletes them but each user's newest, which keeps telling.
async fn tombstones_expire_then_are_purged_but_the_newest(backend: Backend) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let Some(mut first) = TestApp::builder(backend)
        .env("TOMBSTONE_RETENTION_DAYS", "1")
        .start()
        .await
    else {
        return;
    };
    let (token, other) = (first.token("forgetful"), first.token("other"));
    let mut ids = Vec::new();
    for title in ["a", "b", "c", "d"] {
        ids.push(first.create(&token, json!({"title": title})).await["id"].clone());
    }
    for id in &ids[..3] {
        write(
            &first,
            &token,
            Method::DELETE,
            &format!("/api/tasks/{id}"),
            None,
            None,
        )
        .await;
    }
    let theirs = first.create(&other, json!({"title": "theirs"})).await;
    write(
        &first,
        &other,
        Method::DELETE,
        &format!("/api/tasks/{}", theirs["id"]),
        None,
        None,
    )
    .await;
    // Versions: creates 1-4, deletes 5, 6, 7. All three deletes answered.
    let (changes, _) = feed(&first, &token, "4", 10).await;
    assert_eq!(changes.len(), 3);
    let db = Database::connect(&first.db.url).await.unwrap();
    let backend_kind = db.get_database_backend();
    let run = |sql: String| {
        let db = &db;
        async move {
            db.execute_raw(Statement::from_string(backend_kind, sql))
                .await
                .unwrap()
        }
    };
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    // The first two of the user's deletes, and the other user's, grow old.
    run(format!(
        "UPDATE task_tombstones SET deleted_at = '{two_days_ago}' WHERE version IN (5, 6) OR user_id = 'other'"
    ))
    .await;
    for since in ["4", "5"] {
        let (status, body) = send(first.request(
            Method::GET,
            &format!("/api/tasks/changes?since={since}"),
            &token,
        ))
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::GONE, "cursor_expired"),
            "since {since}"
        );
    }
    let (changes, _) = feed(&first, &token, "6", 10).await;
    assert_eq!(changes.len(), 1, "the delete still kept");
    // Purged at start-up: the user's version-5 tombstone goes, version 6
    // (the newest expired) and 7 stay; the other user's one stays too.
    first.stop().await;
    let second = first
        .restart_builder(backend)
        .env("TOMBSTONE_RETENTION_DAYS", "1")
        .start()
        .await
        .expect("restart");
    let count = || async {
        let rows = db
            .query_all_raw(Statement::from_string(
                backend_kind,
                "SELECT user_id, version FROM task_tombstones ORDER BY user_id, version",
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let user: String = r.try_get("", "user_id").unwrap();
                let version: i64 = r.try_get("", "version").unwrap();
                (user, version)
            })
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    while count().await.len() > 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "purged after start-up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        count().await,
        [
            ("forgetful".to_owned(), 6),
            ("forgetful".to_owned(), 7),
            ("other".to_owned(), 2)
        ]
    );
    for since in ["4", "5"] {
        let (status, _) = send(second.request(
            Method::GET,
            &format!("/api/tasks/changes?since={since}"),
            &token,
        ))
        .await;
        assert_eq!(status, StatusCode::GONE, "since {since}, after the purge");
    }
    let (changes, cursor) = feed(&second, &token, "6", 10).await;
    assert_eq!((changes.len(), cursor.as_str()), (1, "7"));
    let _ = db.close().await;
}
