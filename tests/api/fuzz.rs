//! Property tests of the parsers a hostile client reaches first: the bearer
//! token, request bodies, the listing query, the `Idempotency-Key` header,
//! and, over HTTP, arbitrary bytes as a body. Never a panic, always an error
//! of the contract. The budget is bounded (`FUZZ_CASES`, default 1000 per
//! parser and 100 over HTTP), so it runs in CI on every change.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use todo_api::auth::{TokenRejection, Verifier};
use todo_api::config::AuthSettings;
use todo_api::error::Invalid;
use todo_api::idempotency::IdempotencyKey;
use todo_api::models::input::{CompleteRequest, NewTask, TaskChanges};
use todo_api::models::list::ListQuery;

use crate::common::{Backend, TestApp};

fn cases(default: u32) -> Config {
    let n = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(&AuthSettings {
            better_auth_secret: Some("fuzz-secret".into()),
            ..AuthSettings::default()
        })
    })
}

/// Base64url of arbitrary JSON-ish text: tokens that get past the first checks.
fn segment() -> impl Strategy<Value = String> {
    use base64::Engine;
    let json_text = prop_oneof![
        any::<String>(),
        Just(r#"{"alg":"HS256","typ":"JWT"}"#.to_owned()),
        Just(r#"{"alg":"none"}"#.to_owned()),
        Just(r#"{"alg":"EdDSA","kid":"x"}"#.to_owned()),
        Just(r#"{"alg":"HS256","crit":["exp"]}"#.to_owned()),
        Just(r#"{"sub":"alice","exp":99999999999}"#.to_owned()),
        "\\{\"(alg|sub|exp|kid|typ)\":(\"[A-Za-z0-9]{0,8}\"|[0-9]{1,12}|null|\\[\\]|\\{\\})\\}",
    ];
    prop_oneof![
        json_text.prop_map(|t| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)),
        "[A-Za-z0-9_=+/-]{0,64}",
    ]
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (segment(), segment(), segment()).prop_map(|(h, p, s)| format!("{h}.{p}.{s}")),
        (segment(), segment()).prop_map(|(h, p)| format!("{h}.{p}.")),
        prop::collection::vec(segment(), 0..6).prop_map(|parts| parts.join(".")),
    ]
}

/// Arbitrary JSON, biased towards the fields the bodies have.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        "[ \\t\\n]{0,3}[^\\u{0}]{0,210}[ \\t\\n]{0,3}".prop_map(Value::from),
        Just(Value::from("x".repeat(1001))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Map<String, Value>> {
    let field = prop_oneof![
        Just("title".to_owned()),
        Just("description".to_owned()),
        Just("completed".to_owned()),
        Just("user_id".to_owned()),
        "[a-z_]{0,10}",
    ];
    prop::collection::btree_map(field, json_value(), 0..5).prop_map(|m| m.into_iter().collect())
}

/// A body is either accepted or refused field by field, never anything else.
fn assert_validation<T>(result: Result<T, Invalid>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(Invalid(errors)) => {
            assert!(!errors.is_empty());
            None
        }
    }
}

fn title_is_clean(title: &str) {
    let chars = title.chars().count();
    assert!((1..=200).contains(&chars), "{title:?}");
    assert_eq!(title.trim(), title);
    assert!(!title.contains('\0'));
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn tokens_are_verified_or_refused(token in token()) {
        let result = runtime().block_on(verifier().verify(&token));
        // Nothing this strategy makes carries a valid signature.
        prop_assert!(result.is_err(), "{token:?} was accepted");
        let _: TokenRejection = result.unwrap_err();
    }

    #[test]
    fn bodies_are_valid_or_refused_field_by_field(body in body()) {
        if let Some(new) = assert_validation(NewTask::from_json(&body)) {
            title_is_clean(new.title.as_str());
            prop_assert!(new.description.as_ref().is_none_or(|d| d.chars().count() <= 1000 && !d.contains('\0')));
        }
        if let Some(changes) = assert_validation(TaskChanges::from_json(&body)) {
            prop_assert!(changes.title.is_some() || changes.description.is_some() || changes.completed.is_some());
            if let Some(title) = &changes.title {
                title_is_clean(title.as_str());
            }
        }
        assert_validation(CompleteRequest::from_json(Some(&body)));
    }

    #[test]
    fn list_queries_parse_or_name_the_parameter(raw in prop_oneof![
        any::<String>(),
        "((status|completed|q|sort|order|limit|offset|x)=[%A-Za-z0-9_+-]{0,6}&){0,6}",
    ]) {
        match ListQuery::parse(Some(&raw)) {
            Ok(query) => {
                prop_assert!(query.limit.is_none_or(|l| (1..=1000).contains(&l)));
                prop_assert!(query.q.as_ref().is_none_or(|q| !q.contains('\0') && q.chars().count() <= 1000));
            }
            Err(Invalid(errors)) => {
                for e in errors {
                    prop_assert!(["status", "completed", "q", "sort", "order", "limit", "offset"].contains(&e.field.as_str()), "{}", e.field);
                }
            }
        }
    }

    #[test]
    fn idempotency_keys_are_visible_ascii(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let Ok(value) = reqwest::header::HeaderValue::from_bytes(&bytes) else {
            return Ok(());
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("idempotency-key", value);
        let valid = (1..=255).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic);
        match IdempotencyKey::from_headers(&headers) {
            Ok(Some(key)) => prop_assert!(valid && key.as_str().as_bytes() == bytes.as_slice()),
            Ok(None) => prop_assert!(false, "a sent key is never ignored"),
            Err(e) => prop_assert!(!valid && e.field == "Idempotency-Key"),
        }
    }
}

/// Arbitrary bytes and content types to the write endpoints of a real
/// server: only the contract's answers, and nothing stored unless 2xx.
#[test]
fn arbitrary_bodies_over_http_get_contract_answers() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(app) = runtime.block_on(TestApp::start(Backend::Sqlite)) else {
        return;
    };
    let alice = app.token("alice");
    let task = runtime.block_on(app.create(&alice, json!({"title": "target"})));
    let id = task["id"].as_i64().unwrap();
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        body().prop_map(|b| Value::Object(b).to_string().into_bytes()),
    ];
    let content_type = prop_oneof![
        Just(Some("application/json")),
        Just(Some("application/merge-patch+json")),
        Just(Some("text/plain")),
        Just(None),
    ];
    let endpoint = prop_oneof![Just(0u8), Just(1), Just(2)];
    let mut runner = proptest::test_runner::TestRunner::new(cases(100));
    runner
        .run(
            &(bytes, content_type, endpoint),
            |(bytes, content_type, endpoint)| {
                let (method, path) = match endpoint {
                    0 => (Method::POST, "/api/tasks".to_owned()),
                    1 => (Method::PUT, format!("/api/tasks/{id}")),
                    _ => (Method::PATCH, format!("/api/tasks/{id}/complete")),
                };
                let mut request = app.request(method, &path, &alice).body(bytes);
                if let Some(ct) = content_type {
                    request = request.header("content-type", ct);
                }
                let (status, body) = runtime.block_on(async {
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    (status, response.json::<Value>().await.unwrap())
                });
                let allowed = [200, 201, 400, 413, 415, 422];
                prop_assert!(allowed.contains(&status.as_u16()), "{status}: {body}");
                if !status.is_success() {
                    prop_assert!(
                        body["detail"].is_string() && body["code"].is_string(),
                        "{body}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    // The target survived whatever was thrown at it.
    let (status, _) = runtime.block_on(crate::common::send(app.request(
        Method::GET,
        &format!("/api/tasks/{id}"),
        &alice,
    )));
    assert_eq!(status, StatusCode::OK);
    runtime.block_on(async move { drop(app) });
}
