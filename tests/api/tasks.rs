//! The six task endpoints: success paths, validation and bad input, as the
//! frontend would call them.

use crate::common::{Backend, TestApp, error_code, error_fields, json, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn crud_round_trip(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");

    let (status, empty) = app.list(&alice, "").await;
    assert_eq!((status, empty), (StatusCode::OK, json!([])));

    let response = app
        .request(Method::POST, "/api/tasks", &alice)
        .json(&json!({"title": "  Buy milk  "}))
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, task) = json(response).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = task["id"].as_i64().unwrap();
    assert!(id > 0);
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/tasks/{id}").as_str())
    );
    assert_eq!(task["user_id"], "alice");
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["description"], Value::Null);
    assert_eq!(task["completed"], false);
    assert_eq!(task["created_at"], task["updated_at"]);
    let keys: Vec<&String> = task.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8, "{task}");
    assert_eq!(task["version"], 1);
    let created = chrono::DateTime::parse_from_rfc3339(task["created_at"].as_str().unwrap())
        .expect("RFC 3339");
    assert_eq!(created.offset().local_minus_utc(), 0);
    assert!(task["created_at"].as_str().unwrap().ends_with('Z'));

    // Every endpoint returns the same instant for the task.
    let (status, fetched) =
        send(app.request(Method::GET, &format!("/api/tasks/{id}"), &alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, task);
    let (_, list) = app.list(&alice, "").await;
    assert_eq!(list, json!([task.clone()]));

    // Partial PUT: absent fields keep their value.
    let (status, updated) = send(
        app.request(Method::PUT, &format!("/api/tasks/{id}"), &alice)
            .json(&json!({"description": "2 litres"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["title"], "Buy milk");
    assert_eq!(updated["description"], "2 litres");
    assert_eq!(updated["completed"], false);
    assert_eq!(updated["created_at"], task["created_at"]);
    assert!(
        updated["updated_at"].as_str() > task["updated_at"].as_str(),
        "updated_at moves: {updated}"
    );

    let (_, updated2) = send(
        app.request(Method::PUT, &format!("/api/tasks/{id}"), &alice)
            .json(&json!({"title": " Buy oat milk ", "completed": true})),
    )
    .await;
    assert_eq!(
        (
            updated2["title"].as_str(),
            updated2["description"].as_str(),
            updated2["completed"].as_bool()
        ),
        (Some("Buy oat milk"), Some("2 litres"), Some(true))
    );

    // "description": null clears it.
    let (_, cleared) = send(
        app.request(Method::PUT, &format!("/api/tasks/{id}"), &alice)
            .json(&json!({"description": null})),
    )
    .await;
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["title"], "Buy oat milk");

    // GET agrees with the last write.
    let (_, fetched) = send(app.request(Method::GET, &format!("/api/tasks/{id}"), &alice)).await;
    assert_eq!(fetched, cleared);

    let (status, deleted) =
        send(app.request(Method::DELETE, &format!("/api/tasks/{id}"), &alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted, json!({"id": id, "deleted": true}));
    let (status, body) = send(app.request(Method::GET, &format!("/api/tasks/{id}"), &alice)).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"detail": "Task not found", "code": "not_found"})
        )
    );
    let (status, _) = send(app.request(Method::DELETE, &format!("/api/tasks/{id}"), &alice)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn create_accepts_every_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app
        .create(
            &alice,
            json!({"title": "t", "description": "d", "completed": true}),
        )
        .await;
    assert_eq!(
        (task["description"].as_str(), task["completed"].as_bool()),
        (Some("d"), Some(true))
    );
    let task = app
        .create(&alice, json!({"title": "t", "description": null}))
        .await;
    assert_eq!(task["description"], Value::Null);
    // Lengths count Unicode code points, after trimming for the title.
    let long_title = "é".repeat(200);
    let task = app
        .create(
            &alice,
            json!({"title": format!("  {long_title}  "), "description": "😀".repeat(1000)}),
        )
        .await;
    assert_eq!(task["title"], long_title);
    assert_eq!(task["description"].as_str().unwrap().chars().count(), 1000);
    // Hostile-looking but valid text is stored verbatim.
    let text = "Robert'); DROP TABLE tasks;-- <script>alert(1)</script> %_\\ \u{202e}";
    let task = app
        .create(&alice, json!({"title": text, "description": text}))
        .await;
    let (_, fetched) =
        send(app.request(Method::GET, &format!("/api/tasks/{}", task["id"]), &alice)).await;
    assert_eq!(fetched["title"], text.trim());
    assert_eq!(fetched["description"], text);
}

async fn post(
    app: &TestApp,
    token: &str,
    body: &str,
    content_type: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app
        .request(Method::POST, "/api/tasks", token)
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    send(req).await
}

async fn create_rejects_bad_input(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (r#"{}"#, vec!["title"]),
        (r#"{"title": ""}"#, vec!["title"]),
        (r#"{"title": "   \n\t "}"#, vec!["title"]),
        (r#"{"title": null}"#, vec!["title"]),
        (r#"{"title": 5}"#, vec!["title"]),
        (r#"{"title": ["a"]}"#, vec!["title"]),
        (r#"{"title": {"a": 1}}"#, vec!["title"]),
        (r#"{"title": "ok", "completed": "true"}"#, vec!["completed"]),
        (r#"{"title": "ok", "completed": 1}"#, vec!["completed"]),
        (r#"{"title": "ok", "completed": null}"#, vec!["completed"]),
        (r#"{"title": "ok", "description": 5}"#, vec!["description"]),
        (
            r#"{"title": "ok", "description": false}"#,
            vec!["description"],
        ),
        (r#"{"title": "a\u0000b"}"#, vec!["title"]),
        (
            r#"{"title": "ok", "description": "\u0000"}"#,
            vec!["description"],
        ),
        (
            r#"{"title": "", "description": 1, "completed": "no"}"#,
            vec!["title", "description", "completed"],
        ),
        (r#"[]"#, vec!["body"]),
        (r#"[{"title": "x"}]"#, vec!["body"]),
        (r#""title""#, vec!["body"]),
        (r#"42"#, vec!["body"]),
        (r#"null"#, vec!["body"]),
    ];
    for (body, fields) in cases {
        let (status, err) = post(&app, &alice, body, json_ct).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(error_fields(&err), fields, "{body}");
        assert_eq!(err["detail"], "Validation failed");
        assert!(
            err["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let too_long_title = json!({"title": "x".repeat(201)}).to_string();
    let too_long_description = json!({"title": "x", "description": "y".repeat(1001)}).to_string();
    for body in [too_long_title, too_long_description] {
        let (status, _) = post(&app, &alice, &body, json_ct).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Empty body.
    let (status, err) = post(&app, &alice, "", json_ct).await;
    assert_eq!(
        (status, error_fields(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["body".to_string()])
    );

    // Not JSON: 400.
    for body in [
        "{",
        "{\"title\": }",
        "not json",
        "{\"title\": \"x\",}",
        "\u{feff}{}",
        &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    ] {
        let (status, err) = post(&app, &alice, body, json_ct).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:.40}: {err}");
        assert_eq!(error_code(&err), "invalid_json");
    }
    // Another content type: 415, whatever the body.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        let (status, err) = post(&app, &alice, r#"{"title": "x"}"#, ct).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(error_code(&err), "unsupported_media_type");
    }
    // The type is checked before the size: a large body of another type is
    // 415, not 413 (specs/api: content type, size, syntax, in that order).
    let large = "x".repeat(70 * 1024);
    for ct in [Some("text/plain"), None] {
        let (status, err) = post(&app, &alice, &large, ct).await;
        assert_eq!(
            (status, error_code(&err)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{ct:?}"
        );
    }
    // JSON with parameters or a +json type is fine.
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        let (status, _) = post(&app, &alice, r#"{"title": "x"}"#, Some(ct)).await;
        assert_eq!(status, StatusCode::CREATED, "{ct}");
    }
    // Too big: 413, even when it is otherwise valid JSON.
    let big = json!({"title": "x", "description": "y".repeat(70 * 1024)}).to_string();
    let (status, err) = post(&app, &alice, &big, json_ct).await;
    assert_eq!(
        (status, error_code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Just under the limit is read (and then fails validation, not size).
    let padded = format!(
        r#"{{"title": "x", "pad": "{}"}}"#,
        "p".repeat(64 * 1024 - 40)
    );
    assert!(padded.len() < 64 * 1024);
    let (status, _) = post(&app, &alice, &padded, json_ct).await;
    assert_eq!(status, StatusCode::CREATED);

    // Only the 4 valid creates above exist.
    let (_, list) = app.list(&alice, "").await;
    assert_eq!(list.as_array().unwrap().len(), 4);
}

async fn update_rejects_bad_input(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app
        .create(&alice, json!({"title": "keep", "description": "me"}))
        .await;
    let path = format!("/api/tasks/{}", task["id"]);
    for (body, fields) in [
        (json!({}), vec!["body"]),
        (json!({"user_id": "bob", "id": 3}), vec!["body"]),
        (json!({"title": ""}), vec!["title"]),
        (json!({"title": null}), vec!["title"]),
        (json!({"title": "x".repeat(201)}), vec!["title"]),
        (json!({"completed": "false"}), vec!["completed"]),
        (json!({"completed": null}), vec!["completed"]),
        (
            json!({"description": 1, "title": "ok"}),
            vec!["description"],
        ),
        (
            json!({"description": "x".repeat(1001)}),
            vec!["description"],
        ),
        (json!({"title": "a\u{0}"}), vec!["title"]),
    ] {
        let (status, err) = send(app.request(Method::PUT, &path, &alice).json(&body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error_fields(&err), fields, "{body}");
    }
    let (status, _) = send(
        app.request(Method::PUT, &path, &alice)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(
        app.request(Method::PUT, &path, &alice)
            .header("content-type", "text/plain")
            .body(r#"{"title":"x"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = send(app.request(Method::PUT, &path, &alice)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The task is untouched.
    let (_, now) = send(app.request(Method::GET, &path, &alice)).await;
    assert_eq!(now, task);
}

async fn complete_toggles_and_sets(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "t"})).await;
    let path = format!("/api/tasks/{}/complete", task["id"]);
    let patch = |body: Option<(&'static str, &'static str)>| {
        let mut req = app.request(Method::PATCH, &path, &alice);
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        req.send()
    };
    // (content type and body, or none; `completed` afterwards)
    let steps: [(Option<(&'static str, &'static str)>, bool); 8] = [
        (None, true), // no body toggles, whatever the content type
        (Some(("application/json", "")), false),
        (Some(("text/plain", "")), true),
        (Some(("application/json", "{}")), false), // {} toggles
        (Some(("application/json", r#"{"unknown": 1}"#)), true),
        (Some(("application/json", r#"{"completed": true}"#)), true), // sets
        (Some(("application/json", r#"{"completed": false}"#)), false),
        (Some(("application/json", r#"{"completed": false}"#)), false),
    ];
    let mut t = task.clone();
    for (body, expected) in steps {
        let (status, after) = json(patch(body).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body:?}: {after}");
        assert_eq!(after["completed"], expected, "{body:?}");
        assert!(
            after["updated_at"].as_str() > t["updated_at"].as_str(),
            "updated_at moves"
        );
        assert_eq!(after["created_at"], task["created_at"]);
        t = after;
    }
    // Bad bodies.
    for (ct, body, status) in [
        (
            "application/json",
            r#"{"completed": null}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"completed": "true"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"completed": 0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"[true]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"completed": tru"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            r#"{"completed": false}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let (got, err) = json(patch(Some((ct, body))).await.unwrap()).await;
        assert_eq!(got, status, "{body}: {err}");
    }
    let (_, t) =
        send(app.request(Method::GET, &format!("/api/tasks/{}", task["id"]), &alice)).await;
    assert_eq!(t["completed"], false, "bad bodies changed nothing");
}

async fn bad_ids_are_not_found(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "t"})).await;
    let id = task["id"].as_i64().unwrap();
    for bad in [
        "0",
        "-1",
        "abc",
        "1.5",
        "+1",
        " 1",
        "1e3",
        "9223372036854775808",
        "99999999999999999999999",
        "9223372036854775807",
        "%00",
        "1%00",
        "0x1",
        &format!("0{id}x"),
    ] {
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::PUT, ""),
            (Method::DELETE, ""),
            (Method::PATCH, "/complete"),
        ] {
            let mut req = app.request(method.clone(), &format!("/api/tasks/{bad}{suffix}"), &alice);
            if method == Method::PUT {
                req = req.json(&json!({"title": "x"}));
            }
            let (status, body) = send(req).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {bad}: {body}");
            assert_eq!(
                body,
                json!({"detail": "Task not found", "code": "not_found"})
            );
        }
    }
    let (_, list) = app.list(&alice, "").await;
    assert_eq!(list, json!([task]));
}

on_each_database!(
    crud_round_trip,
    create_accepts_every_field,
    create_rejects_bad_input,
    update_rejects_bad_input,
    complete_toggles_and_sets,
    bad_ids_are_not_found,
);
