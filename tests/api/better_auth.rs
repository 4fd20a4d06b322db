//! Interop with the real thing: a Better Auth server (npm `better-auth`,
//! JWT + bearer plugins) signs users up over HTTP as the frontend would; the
//! JWTs it issues drive this API.

use std::time::{Duration, Instant};

use crate::common::node::{BetterAuth, node_ready};
use crate::common::{Backend, TestApp, send};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use todo_api::auth::MIN_REFETCH_INTERVAL;

/// Signs a user up (email + password) and returns (user id, JWT from /api/auth/token).
async fn sign_up(client: &Client, auth: &BetterAuth, name: &str) -> (String, String) {
    let email = format!("{name}-{}@example.com", rand::random::<u32>());
    let response = client
        .post(auth.url("/api/auth/sign-up/email"))
        .header("origin", &auth.base_url)
        .json(&json!({"email": email, "password": "correct horse battery staple", "name": name}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "sign-up: {}",
        response.status()
    );
    let session = response
        .headers()
        .get("set-auth-token")
        .expect("bearer plugin's set-auth-token")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let user_id = body["user"]["id"].as_str().expect("user id").to_owned();
    (user_id, jwt_for(client, auth, &session).await)
}

async fn jwt_for(client: &Client, auth: &BetterAuth, session: &str) -> String {
    let response = client
        .get(auth.url("/api/auth/token"))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().expect("token").to_owned()
}

fn header(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

fn payload(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

async fn api_for(auth: &BetterAuth) -> TestApp {
    // As documented for production: the Better Auth URL, and iss/aud pinned to it.
    let origin = auth.base_url.trim_end_matches('/');
    TestApp::builder(Backend::Sqlite)
        .env("BETTER_AUTH_URL", &auth.base_url)
        .env("JWT_ISSUER", origin)
        .env("JWT_AUDIENCE", origin)
        .env("BETTER_AUTH_SECRET", "")
        .start()
        .await
        .expect("sqlite always runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_better_auth_tokens_drive_the_api() {
    if !node_ready() {
        return;
    }
    let auth = BetterAuth::start(&[("PORT", "0")]);
    let api = api_for(&auth).await;
    let client = Client::new();
    let (alice_id, alice) = sign_up(&client, &auth, "alice").await;
    let (bob_id, bob) = sign_up(&client, &auth, "bob").await;

    // What Better Auth really issues.
    assert_eq!(header(&alice)["alg"], "EdDSA");
    assert!(header(&alice)["kid"].is_string());
    let claims = payload(&alice);
    assert_eq!(claims["sub"], alice_id.as_str());
    assert_eq!(claims["iss"], auth.base_url.as_str());

    // CRUD as Alice.
    let task = api
        .create(&alice, json!({"title": "from better auth"}))
        .await;
    // The JWKS was fetched during that call, so before this instant.
    let keys_fetched_by = Instant::now();
    assert_eq!(task["user_id"], alice_id.as_str());
    let id = task["id"].as_i64().unwrap();
    let (status, toggled) =
        send(api.request(Method::PATCH, &format!("/api/tasks/{id}/complete"), &alice)).await;
    assert_eq!(
        (status, toggled["completed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, updated) = send(
        api.request(Method::PUT, &format!("/api/tasks/{id}"), &alice)
            .json(&json!({"title": "renamed"})),
    )
    .await;
    assert_eq!(
        (status, updated["title"].as_str()),
        (StatusCode::OK, Some("renamed"))
    );

    // Isolation between the two real users.
    let bobs = api.create(&bob, json!({"title": "bob's"})).await;
    assert_eq!(bobs["user_id"], bob_id.as_str());
    let (_, alice_list) = api.list(&alice, "").await;
    assert_eq!(alice_list, json!([updated]));
    let (status, _) = send(api.request(Method::GET, &format!("/api/tasks/{id}"), &bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(api.request(Method::DELETE, &format!("/api/tasks/{id}"), &bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A token whose payload was altered (Alice claims to be Bob) is refused.
    let mut forged_claims = payload(&alice);
    forged_claims["sub"] = json!(bob_id);
    let parts: Vec<&str> = alice.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(forged_claims.to_string()),
        parts[2]
    );
    let (status, _) = api.list(&forged, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // So is the session token itself (not a JWT).
    let (status, _) = api.list("not-a-jwt-session-token", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Key rotation on the Better Auth side: new tokens carry a new kid...
    let rotated: Value = client
        .post(auth.url("/test/rotate-keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, carol) = sign_up(&client, &auth, "carol").await;
    assert_eq!(header(&carol)["kid"], rotated["kid"]);
    assert_ne!(header(&carol)["kid"], header(&alice)["kid"]);
    // ...and verify without a restart, once our last fetch is 10 s old (the contract's refetch limit).
    tokio::time::sleep(
        MIN_REFETCH_INTERVAL.saturating_sub(keys_fetched_by.elapsed()) + Duration::from_millis(200),
    )
    .await;
    let (status, list) = api.list(&carol, "").await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    // Tokens signed before the rotation still verify while the old key is published.
    let (status, _) = api.list(&alice, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_better_auth_algorithm_is_accepted() {
    if !node_ready() {
        return;
    }
    let client = Client::new();
    for alg in ["ES256", "ES512", "RS256", "PS256"] {
        let auth = BetterAuth::start(&[("PORT", "0"), ("JWT_ALG", alg)]);
        let api = api_for(&auth).await;
        let (user_id, token) = sign_up(&client, &auth, "dana").await;
        assert_eq!(header(&token)["alg"], alg);
        let task = api.create(&token, json!({"title": alg})).await;
        assert_eq!(task["user_id"], user_id.as_str(), "{alg}");
        let (status, list) = api.list(&token, "").await;
        assert_eq!((status, list), (StatusCode::OK, json!([task])), "{alg}");
    }
}
