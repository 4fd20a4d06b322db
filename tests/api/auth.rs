//! Authentication, through HTTP: every 401 rule of the contract, and that
//! authentication answers before anything else about the request.

use crate::common::keys::{self, claims_for, now};
use crate::common::{Backend, TestApp, error_code, json, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Sends `GET /api/tasks` with this Authorization header value (or none).
async fn list_with(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/api/tasks"));
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.send().await.unwrap()
}

async fn assert_401(response: reqwest::Response, token_sent: bool) -> Value {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let expected = if token_sent {
        r#"Bearer error="invalid_token""#
    } else {
        "Bearer"
    };
    assert_eq!(challenge.as_deref(), Some(expected), "{body}");
    error_code(&body);
    body
}

async fn rejects_missing_or_malformed_credentials(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let good = app.token("alice");
    assert_401(list_with(&app, None).await, false).await;
    assert_401(list_with(&app, Some(&format!("Basic {good}"))).await, false).await;
    assert_401(list_with(&app, Some(&format!("Token {good}"))).await, false).await;
    assert_401(list_with(&app, Some("Bearer")).await, false).await;
    assert_401(list_with(&app, Some("Bearer ")).await, false).await;
    for garbage in [
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        &format!("{good}x"),
        &"a".repeat(20_000),
    ] {
        assert_401(
            list_with(&app, Some(&format!("Bearer {garbage}"))).await,
            true,
        )
        .await;
    }
    // The scheme is case-insensitive; the token itself works.
    let (status, _) = json(list_with(&app, Some(&format!("bearer {good}"))).await).await;
    assert_eq!(status, StatusCode::OK);
}

async fn rejects_bad_signatures_and_algorithms(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let claims = claims_for("alice");
    let wrong_secret = keys::hs_token("HS256", b"not-the-secret", &claims);
    assert_401(
        list_with(&app, Some(&format!("Bearer {wrong_secret}"))).await,
        true,
    )
    .await;

    // alg: none, with and without a signature part.
    let input = keys::signing_input(&json!({"alg": "none", "typ": "JWT"}), &claims);
    for token in [format!("{input}."), format!("{input}.c2ln")] {
        assert_401(
            list_with(&app, Some(&format!("Bearer {token}"))).await,
            true,
        )
        .await;
    }
    for alg in ["None", "NONE", "HS1", "ES384", "RS512"] {
        let token = keys::hs_token_with_header(&json!({"alg": alg}), &app.secret, &claims);
        assert_401(
            list_with(&app, Some(&format!("Bearer {token}"))).await,
            true,
        )
        .await;
    }
    // An asymmetric token with no JWKS configured.
    let ed = keys::TestKey::ed25519();
    assert_401(
        list_with(&app, Some(&format!("Bearer {}", ed.token("k1", &claims)))).await,
        true,
    )
    .await;

    // A valid token whose payload was altered after signing.
    let good = app.token("alice");
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = keys::signing_input(&json!({"alg": "HS256"}), &claims_for("mallory"));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        forged_payload.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_401(
        list_with(&app, Some(&format!("Bearer {forged}"))).await,
        true,
    )
    .await;

    // HS384 and HS512 with the secret are accepted.
    for alg in ["HS256", "HS384", "HS512"] {
        let token = keys::hs_token(alg, &app.secret, &claims);
        let (status, body) = json(list_with(&app, Some(&format!("Bearer {token}"))).await).await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
    }
}

async fn rejects_bad_claims(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = now();
    let cases = [
        ("expired", json!({"sub": "alice", "exp": t - 1})),
        (
            "expired long ago",
            json!({"sub": "alice", "exp": t - 86_400}),
        ),
        ("exp is now", json!({"sub": "alice", "exp": t})),
        ("no exp", json!({"sub": "alice"})),
        (
            "exp not a number",
            json!({"sub": "alice", "exp": "tomorrow"}),
        ),
        (
            "nbf in the future",
            json!({"sub": "alice", "exp": t + 600, "nbf": t + 300}),
        ),
        ("no sub", json!({"exp": t + 600})),
        ("empty sub", json!({"sub": "", "exp": t + 600})),
        ("blank sub", json!({"sub": "   ", "exp": t + 600})),
        ("sub not a string", json!({"sub": 42, "exp": t + 600})),
        ("null sub", json!({"sub": null, "exp": t + 600})),
        (
            "session-cache audience",
            json!({"sub": "alice", "exp": t + 600, "aud": "better-auth:session-cache"}),
        ),
    ];
    for (what, claims) in cases {
        let token = app.token_with_claims(&claims);
        let body = assert_401(
            list_with(&app, Some(&format!("Bearer {token}"))).await,
            true,
        )
        .await;
        assert_eq!(body["code"], "invalid_token", "{what}");
    }
    // nbf in the past and an unrelated audience are fine when nothing is configured.
    let ok = app.token_with_claims(
        &json!({"sub": "alice", "exp": t + 600, "nbf": t - 5, "aud": "x", "iss": "y"}),
    );
    assert_eq!(
        list_with(&app, Some(&format!("Bearer {ok}")))
            .await
            .status(),
        StatusCode::OK
    );
    // A session-cache `typ` is refused even with a valid signature and claims.
    let cookie_like = keys::hs_token_with_header(
        &json!({"alg": "HS256", "typ": "better-auth.session-cache+jwt"}),
        &app.secret,
        &claims_for("alice"),
    );
    assert_401(
        list_with(&app, Some(&format!("Bearer {cookie_like}"))).await,
        true,
    )
    .await;
}

async fn checks_issuer_and_audience_when_configured(backend: Backend) {
    let Some(app) = TestApp::builder(backend)
        .env("JWT_ISSUER", "http://localhost:3000")
        .env("JWT_AUDIENCE", "http://localhost:3000")
        .start()
        .await
    else {
        return;
    };
    let t = now();
    let origin = "http://localhost:3000";
    let good = app
        .token_with_claims(&json!({"sub": "alice", "exp": t + 600, "iss": origin, "aud": origin}));
    assert_eq!(
        list_with(&app, Some(&format!("Bearer {good}")))
            .await
            .status(),
        StatusCode::OK
    );
    let good_list = app.token_with_claims(
        &json!({"sub": "alice", "exp": t + 600, "iss": origin, "aud": ["other", origin]}),
    );
    assert_eq!(
        list_with(&app, Some(&format!("Bearer {good_list}")))
            .await
            .status(),
        StatusCode::OK
    );
    for claims in [
        json!({"sub": "alice", "exp": t + 600, "iss": "http://evil", "aud": origin}),
        json!({"sub": "alice", "exp": t + 600, "aud": origin}),
        json!({"sub": "alice", "exp": t + 600, "iss": origin, "aud": "http://evil"}),
        json!({"sub": "alice", "exp": t + 600, "iss": origin}),
        json!({"sub": "alice", "exp": t + 600, "iss": origin, "aud": ["a", "b"]}),
    ] {
        let token = app.token_with_claims(&claims);
        assert_401(
            list_with(&app, Some(&format!("Bearer {token}"))).await,
            true,
        )
        .await;
    }
}

/// An unauthenticated caller learns nothing: not whether a task exists, not
/// whether its body or query would be valid.
async fn authentication_comes_first(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "secret plans"})).await;
    let id = task["id"].as_i64().unwrap();
    let bad = "Bearer not-a-token";
    let requests = [
        (Method::GET, format!("/api/tasks/{id}"), None, None),
        (Method::GET, "/api/tasks/999999".to_string(), None, None),
        (
            Method::GET,
            "/api/tasks/not-a-number".to_string(),
            None,
            None,
        ),
        (
            Method::GET,
            "/api/tasks?limit=0&status=bogus".to_string(),
            None,
            None,
        ),
        (
            Method::POST,
            "/api/tasks".to_string(),
            Some("{not json"),
            Some("application/json"),
        ),
        (
            Method::POST,
            "/api/tasks".to_string(),
            Some("title=x"),
            Some("text/plain"),
        ),
        (
            Method::POST,
            "/api/tasks".to_string(),
            Some(r#"{"title": ""}"#),
            Some("application/json"),
        ),
        (
            Method::PUT,
            format!("/api/tasks/{id}"),
            Some("{}"),
            Some("application/json"),
        ),
        (
            Method::PUT,
            "/api/tasks/0".to_string(),
            Some(r#"{"title":"x"}"#),
            Some("application/json"),
        ),
        (Method::DELETE, format!("/api/tasks/{id}"), None, None),
        (Method::DELETE, "/api/tasks/424242".to_string(), None, None),
        (
            Method::PATCH,
            format!("/api/tasks/{id}/complete"),
            Some(r#"{"completed": null}"#),
            Some("application/json"),
        ),
    ];
    for (method, path, body, content_type) in requests {
        for auth in [None, Some(bad)] {
            let mut req = app.client.request(method.clone(), app.url(&path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            if let Some(body) = body {
                req = req.body(body.to_owned());
            }
            let response = req.send().await.unwrap();
            assert_401(response, auth.is_some()).await;
        }
    }
    // Nothing was changed by any of it.
    let (_, list) = app.list(&alice, "").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0], task);
}

/// Identity comes from the token only: a user id in the query, the body or
/// another header changes nothing.
async fn identity_only_from_the_token(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    let bob = app.token("bob");
    app.create(&bob, json!({"title": "bob's"})).await;
    let task = app.create(&alice, json!({"title": "mine", "user_id": "bob", "id": 999, "created_at": "2000-01-01T00:00:00Z"})).await;
    assert_eq!(task["user_id"], "alice");
    assert_ne!(task["id"], 999);
    assert_ne!(task["created_at"], "2000-01-01T00:00:00Z");

    let (status, list) = app.list(&alice, "?user_id=bob&sub=bob").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["user_id"] == "alice"),
        "{list}"
    );

    // A token in the query string or a cookie is not a credential.
    let resp = app
        .client
        .get(app.url(&format!("/api/tasks?token={bob}&access_token={bob}")))
        .header("cookie", format!("token={bob}"))
        .send()
        .await
        .unwrap();
    assert_401(resp, false).await;

    let (status, updated) = send(
        app.request(Method::PUT, &format!("/api/tasks/{}", task["id"]), &alice)
            .json(&json!({"user_id": "bob", "title": "still mine"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["user_id"], "alice");
}

/// A correctly signed token whose `sub` the database could not take (a NUL,
/// or longer than its index allows) is a 401, never a 500; 1 to 255
/// characters without control characters are a user id.
async fn subjects_that_cannot_hurt_the_database(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = now();
    for (what, sub) in [
        ("NUL", "ali\u{0}ce".to_owned()),
        ("256 characters", "a".repeat(256)),
        ("3,000 characters", "b".repeat(3000)),
        ("newline", "alice\nbob".to_owned()),
        ("DEL", "alice\u{7f}".to_owned()),
        ("C1 control", "alice\u{85}".to_owned()),
        ("empty", String::new()),
    ] {
        let token = app.token_with_claims(&json!({"sub": sub, "exp": t + 600}));
        let body = assert_401(
            list_with(&app, Some(&format!("Bearer {token}"))).await,
            true,
        )
        .await;
        assert_eq!(body["code"], "invalid_token", "{what}");
        let why = if sub.is_empty() {
            "missing subject"
        } else {
            "invalid subject"
        };
        assert_eq!(body["detail"], format!("Invalid token: {why}"), "{what}");
        let response = app
            .client
            .post(app.url("/api/tasks"))
            .bearer_auth(&token)
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    }
    // Exactly 255 characters (of four bytes each): a user like any other.
    let longest = "😀".repeat(255);
    let token = app.token_with_claims(&json!({"sub": longest, "exp": t + 600}));
    let task = app.create(&token, json!({"title": "mine"})).await;
    assert_eq!(task["user_id"], longest.as_str());
    let (status, list) = app.list(&token, "").await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    assert_eq!(app.db.snapshot().await.len(), 1);
}

on_each_database!(
    subjects_that_cannot_hurt_the_database,
    rejects_missing_or_malformed_credentials,
    rejects_bad_signatures_and_algorithms,
    rejects_bad_claims,
    checks_issuer_and_audience_when_configured,
    authentication_comes_first,
    identity_only_from_the_token,
);
