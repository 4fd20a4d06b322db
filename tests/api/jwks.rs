//! Better Auth JWT-plugin tokens verified through the JWKS: every algorithm,
//! every rejection rule with each key type, algorithm confusion, key
//! rotation, single-flight and rate-limited refetches, an unreachable JWKS.

use std::time::Duration;

use crate::common::jwks_server::JwksServer;
use crate::common::keys::{TestKey, claims_for, hs_token, hs_token_with_header, now};
use crate::common::{Backend, TestApp, send};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use todo_api::auth::{MIN_REFETCH_INTERVAL, Verifier};
use todo_api::config::AuthSettings;

const ORIGIN: &str = "http://localhost:3000";

/// Every key type, with the algorithms Better Auth can sign with.
fn all_keys() -> Vec<(TestKey, &'static str)> {
    vec![
        (TestKey::ed25519(), "EdDSA"),
        (TestKey::p256(), "ES256"),
        (TestKey::p521(), "ES512"),
        (TestKey::rsa(), "RS256"),
        (TestKey::rsa(), "PS256"),
    ]
}

/// A JWKS server publishing every key, the i-th as `kid-{i}`.
async fn publish(keys: &[(TestKey, &str)]) -> JwksServer {
    JwksServer::start(
        keys.iter()
            .enumerate()
            .map(|(i, (k, _))| k.jwk(&format!("kid-{i}")))
            .collect(),
    )
    .await
}

async fn app_with_jwks(jwks: &JwksServer, extra: &[(&str, &str)]) -> TestApp {
    let mut builder = TestApp::builder(Backend::Sqlite).env("BETTER_AUTH_URL", &jwks.base_url);
    for (k, v) in extra {
        builder = builder.env(k, v);
    }
    builder.start().await.expect("sqlite always runs")
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    let response = app
        .request(Method::GET, "/api/tasks", token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
    }
    status
}

fn sign(key: &TestKey, alg: &str, kid: &str, claims: &Value) -> String {
    key.token_with_header(&json!({"alg": alg, "kid": kid}), claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_every_algorithm_and_keeps_users_apart() {
    let keys = all_keys();
    let jwks = publish(&keys).await;
    let app = app_with_jwks(&jwks, &[]).await;
    for (i, (key, alg)) in keys.iter().enumerate() {
        let user = format!("user-{alg}");
        let token = sign(key, alg, &format!("kid-{i}"), &claims_for(&user));
        let (status, task) = send(
            app.request(Method::POST, "/api/tasks", &token)
                .json(&json!({"title": alg})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{alg}: {task}");
        assert_eq!(task["user_id"], user.as_str());
        let (_, list) = app.list(&token, "").await;
        assert_eq!(list, json!([task]), "{alg} sees only its own task");
    }
    // The HS256 secret still works beside the JWKS.
    let (status, _) = app.list(&app.token("hs-user"), "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_rules_hold_for_every_key_type() {
    let keys = all_keys();
    let jwks = publish(&keys).await;
    let app = app_with_jwks(&jwks, &[("JWT_ISSUER", ORIGIN), ("JWT_AUDIENCE", ORIGIN)]).await;
    let t = now();
    let good =
        |sub: &str| json!({"sub": sub, "iss": ORIGIN, "aud": ORIGIN, "iat": t, "exp": t + 900});
    let impostor = TestKey::ed25519();
    for (i, (key, alg)) in keys.iter().enumerate() {
        let kid = format!("kid-{i}");
        assert_eq!(
            status_with(&app, &sign(key, alg, &kid, &good("u"))).await,
            StatusCode::OK,
            "{alg}"
        );
        let mut cases: Vec<(&str, String)> = vec![
            (
                "expired",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "u", "iss": ORIGIN, "aud": ORIGIN, "exp": t - 10}),
                ),
            ),
            (
                "nbf ahead",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "u", "iss": ORIGIN, "aud": ORIGIN, "exp": t + 900, "nbf": t + 60}),
                ),
            ),
            (
                "no exp",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "u", "iss": ORIGIN, "aud": ORIGIN}),
                ),
            ),
            (
                "no sub",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"iss": ORIGIN, "aud": ORIGIN, "exp": t + 900}),
                ),
            ),
            (
                "empty sub",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "", "iss": ORIGIN, "aud": ORIGIN, "exp": t + 900}),
                ),
            ),
            (
                "wrong iss",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "u", "iss": "http://evil", "aud": ORIGIN, "exp": t + 900}),
                ),
            ),
            (
                "wrong aud",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "u", "iss": ORIGIN, "aud": "http://evil", "exp": t + 900}),
                ),
            ),
            (
                "session-cache typ",
                key.token_with_header(
                    &json!({"alg": alg, "kid": kid, "typ": "better-auth.session-cache+jwt"}),
                    &good("u"),
                ),
            ),
            (
                "session-cache aud",
                sign(
                    key,
                    alg,
                    &kid,
                    &json!({"sub": "u", "sid": "s", "iss": ORIGIN, "aud": [ORIGIN, "better-auth:session-cache"], "exp": t + 900}),
                ),
            ),
            (
                "crit header",
                key.token_with_header(
                    &json!({"alg": alg, "kid": kid, "crit": ["exp"]}),
                    &good("u"),
                ),
            ),
            ("unknown kid", sign(key, alg, "no-such-kid", &good("u"))),
            (
                "someone else's key, our kid",
                impostor.token_with_header(&json!({"alg": "EdDSA", "kid": kid}), &good("u")),
            ),
        ];
        // The same token with its payload altered after signing.
        let genuine = sign(key, alg, &kid, &good("alice"));
        let forged_payload = crate::common::keys::signing_input(&json!({}), &good("mallory"));
        let parts: Vec<&str> = genuine.split('.').collect();
        cases.push((
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                forged_payload.split('.').nth(1).unwrap(),
                parts[2]
            ),
        ));
        cases.push((
            "truncated signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() / 2]
            ),
        ));
        cases.push(("no signature", format!("{}.{}.", parts[0], parts[1])));
        for (what, token) in cases {
            assert_eq!(
                status_with(&app, &token).await,
                StatusCode::UNAUTHORIZED,
                "{alg}: {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_confusion_is_impossible() {
    let ed = TestKey::ed25519();
    let ec = TestKey::p256();
    let rsa = TestKey::rsa();
    let mut rs_only = rsa.jwk("rsa-rs256-only");
    rs_only["alg"] = json!("RS256");
    let jwks = JwksServer::start(vec![ed.jwk("ed"), ec.jwk("ec"), rsa.jwk("rsa"), rs_only]).await;
    // JWKS only, no shared secret.
    let app = TestApp::builder(Backend::Sqlite)
        .env("BETTER_AUTH_URL", &jwks.base_url)
        .env("BETTER_AUTH_SECRET", "")
        .start()
        .await
        .unwrap();
    let claims = claims_for("mallory");
    let cases: Vec<(&str, String)> = vec![
        // HMAC "signed" with the public key, naming the key.
        (
            "HS256 with Ed25519 public key",
            hs_token_with_header(
                &json!({"alg": "HS256", "kid": "ed"}),
                &ed.public_bytes(),
                &claims,
            ),
        ),
        (
            "HS256 with P-256 public key",
            hs_token_with_header(
                &json!({"alg": "HS256", "kid": "ec"}),
                &ec.public_bytes(),
                &claims,
            ),
        ),
        (
            "HS256 with RSA modulus",
            hs_token_with_header(
                &json!({"alg": "HS256", "kid": "rsa"}),
                &rsa.public_bytes(),
                &claims,
            ),
        ),
        (
            "HS256, no secret configured",
            hs_token("HS256", b"", &claims),
        ),
        // A key used for another family's algorithm.
        (
            "ES256 claimed on an Ed25519 key",
            ec.token_with_header(&json!({"alg": "ES256", "kid": "ed"}), &claims),
        ),
        (
            "EdDSA claimed on an RSA key",
            ed.token_with_header(&json!({"alg": "EdDSA", "kid": "rsa"}), &claims),
        ),
        (
            "RS256 claimed on an EC key",
            rsa.token_with_header(&json!({"alg": "RS256", "kid": "ec"}), &claims),
        ),
        (
            "ES512 claimed on a P-256 key",
            ec.token_with_header(&json!({"alg": "ES512", "kid": "ec"}), &claims),
        ),
        // A key whose JWK pins RS256 is not used for PS256.
        (
            "PS256 on an RS256-only key",
            rsa.token_with_header(&json!({"alg": "PS256", "kid": "rsa-rs256-only"}), &claims),
        ),
        (
            "alg none",
            format!(
                "{}.",
                crate::common::keys::signing_input(&json!({"alg": "none", "kid": "ed"}), &claims)
            ),
        ),
    ];
    for (what, token) in cases {
        assert_eq!(
            status_with(&app, &token).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    // The honest combinations work.
    for token in [
        ed.token("ed", &claims),
        ec.token("ec", &claims),
        rsa.token("rsa", &claims),
        rsa.token_with_header(&json!({"alg": "PS256", "kid": "rsa"}), &claims),
        rsa.token("rsa-rs256-only", &claims),
    ] {
        assert_eq!(status_with(&app, &token).await, StatusCode::OK);
    }
}

/// 1,000 concurrent verifications of a token with a never-seen kid cause one
/// fetch; a flood of made-up kids causes none; a rotated key verifies without
/// a restart once the rate-limit window has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refetch_is_single_flight_rate_limited_and_follows_rotation() {
    let old = TestKey::ed25519();
    let jwks = JwksServer::start(vec![old.jwk("old")]).await;
    let settings = AuthSettings {
        better_auth_jwks_url: Some(format!("{}/api/auth/jwks", jwks.base_url).parse().unwrap()),
        ..Default::default()
    };
    let verifier = Verifier::new(&settings);

    let token = old.token("old", &claims_for("alice"));
    let results = join_all((0..1000).map(|_| verifier.verify(&token))).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|id| id.user_id == "alice"))
    );
    assert_eq!(jwks.fetches(), 1, "one fetch for 1,000 concurrent requests");

    // A flood of made-up kids: at most one refetch (none if the last fetch is
    // under 10 s old), however many requests.
    let verifier = &verifier;
    let flood_tokens: Vec<String> = (0..500)
        .map(|i| old.token(&format!("random-{i}"), &claims_for("alice")))
        .collect();
    let flood = join_all(flood_tokens.iter().map(|t| verifier.verify(t))).await;
    assert!(
        flood
            .iter()
            .all(|r| r == &Err(todo_api::auth::TokenRejection::UnknownKey))
    );
    assert!(
        jwks.fetches() <= 2,
        "made-up kids do not make us hammer the auth server: {} fetches",
        jwks.fetches()
    );

    // Rotation on the Better Auth side: a new key, the old one still listed.
    let new = TestKey::ed25519();
    jwks.set_keys(vec![new.jwk("new"), old.jwk("old")]);
    let rotated = new.token("new", &claims_for("bob"));
    let since_last = || jwks.last_fetch().unwrap().elapsed();
    // Within the window (checked with a wide margin) an unknown kid is not refetched...
    if since_last() < MIN_REFETCH_INTERVAL / 2 {
        let fetches = jwks.fetches();
        assert_eq!(
            verifier.verify(&rotated).await,
            Err(todo_api::auth::TokenRejection::UnknownKey)
        );
        assert_eq!(jwks.fetches(), fetches);
    }
    // ...and once it has passed, the new key is fetched at once, once.
    tokio::time::sleep(
        MIN_REFETCH_INTERVAL.saturating_sub(since_last()) + Duration::from_millis(100),
    )
    .await;
    let fetches = jwks.fetches();
    let results = join_all((0..1000).map(|_| verifier.verify(&rotated))).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|id| id.user_id == "bob")),
        "{:?}",
        results[0]
    );
    assert_eq!(jwks.fetches(), fetches + 1);
    // The old key keeps working while it is published.
    assert!(verifier.verify(&token).await.is_ok());
}

/// Cached keys keep working while the JWKS server is down; tokens needing a
/// key we do not have get 401, never 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_jwks_keeps_cached_keys() {
    let key = TestKey::ed25519();
    let jwks = JwksServer::start(vec![key.jwk("k1")]).await;
    let app = app_with_jwks(&jwks, &[]).await;
    let token = key.token("k1", &claims_for("alice"));
    assert_eq!(status_with(&app, &token).await, StatusCode::OK);
    jwks.set_down(true);
    assert_eq!(
        status_with(&app, &token).await,
        StatusCode::OK,
        "cached key still verifies"
    );
    let other = TestKey::p256();
    let (status, body) = send(app.request(
        Method::GET,
        "/api/tasks",
        &other.token("k2", &claims_for("alice")),
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A JWKS that never answered at all: 401, not 500.
    let dead = TestApp::builder(Backend::Sqlite)
        .env("BETTER_AUTH_JWKS_URL", "http://127.0.0.1:1/jwks")
        .start()
        .await
        .unwrap();
    assert_eq!(status_with(&dead, &token).await, StatusCode::UNAUTHORIZED);
    // Garbage from the JWKS endpoint: still 401.
    let garbage = JwksServer::start(vec![
        json!({"kty": "OKP", "crv": "Ed25519", "x": "!!!", "kid": "k1"}),
        json!("nonsense"),
    ])
    .await;
    let app = app_with_jwks(&garbage, &[]).await;
    assert_eq!(status_with(&app, &token).await, StatusCode::UNAUTHORIZED);
}

/// Verified tokens are remembered (an Ed25519 check per request would cost
/// more than the rest of it), but never trusted past what verification
/// said: an expired token, a tampered copy of a remembered one, and a token
/// whose key was removed from the JWKS are refused, remembered or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_tokens_are_refused_once_expired_tampered_or_their_key_is_gone() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let kept = TestKey::ed25519();
    let dropped = TestKey::ed25519();
    let jwks = JwksServer::start(vec![kept.jwk("kept"), dropped.jwk("dropped")]).await;
    let verifier = Verifier::new(&AuthSettings {
        better_auth_jwks_url: Some(format!("{}/api/auth/jwks", jwks.base_url).parse().unwrap()),
        better_auth_secret: Some("remembered-secret".into()),
        ..Default::default()
    });

    // Expired: valid for a second or two, verified (and so remembered), then not.
    for hmac in [false, true] {
        let short = now() + 2;
        let claims = json!({"sub": "alice", "exp": short});
        let token = if hmac {
            hs_token("HS256", b"remembered-secret", &claims)
        } else {
            kept.token("kept", &claims)
        };
        assert!(verifier.verify(&token).await.is_ok());
        assert!(verifier.verify(&token).await.is_ok(), "remembered");
        while now() < short {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            verifier.verify(&token).await,
            Err(todo_api::auth::TokenRejection::Expired)
        );
    }

    // Tampered: the payload of a remembered token changed, its signature kept.
    let good = kept.token("kept", &claims_for("alice"));
    assert_eq!(verifier.verify(&good).await.unwrap().user_id, "alice");
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims_for("mallory").to_string());
    let forged = parts.join(".");
    assert_eq!(
        verifier.verify(&forged).await,
        Err(todo_api::auth::TokenRejection::BadSignature)
    );

    // Key removed: once the JWKS is fetched again without it, a remembered
    // token it signed is refused.
    let victim = dropped.token("dropped", &claims_for("bob"));
    assert!(verifier.verify(&victim).await.is_ok());
    assert!(verifier.verify(&victim).await.is_ok(), "remembered");
    let newcomer = TestKey::ed25519();
    jwks.set_keys(vec![kept.jwk("kept"), newcomer.jwk("new")]);
    // An unknown kid makes the set be fetched again, at most every 10 s.
    while jwks.last_fetch().unwrap().elapsed() < MIN_REFETCH_INTERVAL {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let fetches = jwks.fetches();
    assert!(
        verifier
            .verify(&newcomer.token("new", &claims_for("carol")))
            .await
            .is_ok()
    );
    assert_eq!(jwks.fetches(), fetches + 1);
    assert_eq!(
        verifier.verify(&victim).await,
        Err(todo_api::auth::TokenRejection::UnknownKey)
    );
    assert!(
        verifier.verify(&good).await.is_ok(),
        "the kept key still verifies"
    );
}
