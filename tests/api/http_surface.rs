//! What every route shares: JSON errors, 404/405, CORS, public routes,
//! the OpenAPI document and the docs page.

use crate::common::{Backend, FRONTEND_ORIGIN, TestApp, error_code, json, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn unknown_routes_and_methods_are_json(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for path in [
        "/",
        "/api",
        "/api/task",
        "/api/tasks/",
        "/api/tasks/1/completed",
        "/api/tasks/1/complete/x",
        "/nope?x=1",
    ] {
        let (status, body) = send(app.client.get(app.url(path))).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    for (method, path) in [
        (Method::DELETE, "/api/tasks"),
        (Method::PUT, "/api/tasks"),
        (Method::PATCH, "/api/tasks"),
        (Method::POST, "/api/tasks/1"),
        (Method::PATCH, "/api/tasks/1"),
        (Method::GET, "/api/tasks/1/complete"),
        (Method::PUT, "/api/tasks/1/complete"),
        (Method::POST, "/health"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("allow"), "{method} {path}");
        let (status, body) = json(response).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            "{method} {path}"
        );
    }
}

async fn cors_for_the_frontend_only(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    // Preflight, without a token.
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/tasks/1"))
        .header("origin", FRONTEND_ORIGIN)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], FRONTEND_ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    let allowed_headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));

    // Actual requests, success and errors alike, carry the headers.
    let create = app
        .request(Method::POST, "/api/tasks", &alice)
        .header("origin", FRONTEND_ORIGIN)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    let unauthorized = app
        .client
        .get(app.url("/api/tasks"))
        .header("origin", FRONTEND_ORIGIN)
        .send()
        .await
        .unwrap();
    let not_found = app
        .request(Method::GET, "/api/tasks/999", &alice)
        .header("origin", FRONTEND_ORIGIN)
        .send()
        .await
        .unwrap();
    let invalid = app
        .request(Method::GET, "/api/tasks?limit=0", &alice)
        .header("origin", FRONTEND_ORIGIN)
        .send()
        .await
        .unwrap();
    for response in [create, unauthorized, not_found, invalid] {
        let h = response.headers();
        assert_eq!(
            h["access-control-allow-origin"],
            FRONTEND_ORIGIN,
            "{}",
            response.status()
        );
        assert_eq!(h["access-control-allow-credentials"], "true");
        let exposed = h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            exposed.contains("x-total-count") && exposed.contains("location"),
            "{exposed}"
        );
    }

    // Other origins get no Access-Control-* header at all, preflight included.
    for origin in [
        "http://evil.example",
        "http://localhost:3001",
        "null",
        "http://localhost:3000.evil.example",
    ] {
        let preflight = app
            .client
            .request(Method::OPTIONS, app.url("/api/tasks"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        let actual = app
            .request(Method::GET, "/api/tasks", &alice)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        for response in [preflight, actual] {
            let leaked: Vec<_> = response
                .headers()
                .keys()
                .filter(|k| k.as_str().starts_with("access-control-"))
                .collect();
            assert!(leaked.is_empty(), "{origin}: {leaked:?}");
        }
    }
}

async fn public_routes(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (status, body) = send(app.client.get(app.url("/health"))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = send(app.client.get(app.url("/health/ready"))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let (status, doc) = send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let ops = [
        (
            "/api/tasks",
            "get",
            vec!["200", "304", "401", "422", "429", "500", "503"],
        ),
        (
            "/api/tasks/changes",
            "get",
            vec!["200", "401", "410", "422", "429", "500", "503"],
        ),
        (
            "/api/tasks",
            "post",
            vec![
                "201", "400", "401", "408", "409", "413", "415", "422", "429", "500", "503",
            ],
        ),
        (
            "/api/tasks/{id}",
            "get",
            vec!["200", "304", "401", "404", "429", "500", "503"],
        ),
        (
            "/api/tasks/{id}",
            "put",
            vec![
                "200", "400", "401", "404", "408", "412", "413", "415", "422", "428", "429", "500",
                "503",
            ],
        ),
        (
            "/api/tasks/{id}",
            "delete",
            vec!["200", "401", "404", "412", "428", "429", "500", "503"],
        ),
        (
            "/api/tasks/{id}/complete",
            "patch",
            vec![
                "200", "400", "401", "404", "408", "412", "413", "415", "422", "428", "429", "500",
                "503",
            ],
        ),
    ];
    for (path, method, statuses) in ops {
        let op = &doc["paths"][path][method];
        let declared: Vec<&String> = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}"))
            .keys()
            .collect();
        assert_eq!(declared, statuses, "{method} {path}");
        assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        for status in statuses
            .iter()
            .filter(|s| !s.starts_with('2') && !s.starts_with('3'))
        {
            assert_eq!(
                op["responses"][*status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "TaskOut",
        "NewTask",
        "TaskChanges",
        "CompleteRequest",
        "ErrorBody",
        "FieldError",
        "DeletedOut",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    for public in ["/health", "/health/ready"] {
        assert_eq!(
            doc["paths"][public]["get"]["security"],
            json!([]),
            "{public}"
        );
    }
    // The PATCH body may be absent, but it is never JSON null; PUT needs a field.
    let patch_body = &doc["paths"]["/api/tasks/{id}/complete"]["patch"]["requestBody"];
    assert_ne!(patch_body["required"], true);
    assert_eq!(
        patch_body["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CompleteRequest"
    );
    assert_eq!(
        doc["paths"]["/api/tasks"]["post"]["requestBody"]["required"],
        true
    );
    let changes = &doc["components"]["schemas"]["TaskChanges"];
    assert_eq!(changes["minProperties"], 1);
    assert_eq!(changes["properties"]["completed"]["type"], "boolean");
    // Both bodies take their title rule from one component: a string, never null.
    for body in ["NewTask", "TaskChanges"] {
        let title = &doc["components"]["schemas"][body]["properties"]["title"];
        assert_eq!(title["$ref"], "#/components/schemas/TaskTitle", "{body}");
    }
    let title = &doc["components"]["schemas"]["TaskTitle"];
    assert_eq!(title["type"], "string");
    assert!(
        title["pattern"]
            .as_str()
            .is_some_and(|p| p.contains(r"\u0000")),
        "{title}"
    );
    assert_eq!(
        changes["properties"]["description"]["type"],
        json!(["string", "null"])
    );

    // The docs page, and everything it loads, is served by us (works offline),
    // at /docs itself (no redirect) and at /docs/.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for page in ["/docs", "/docs/"] {
        let response = no_redirects.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = response.text().await.unwrap();
        assert!(
            html.contains("swagger-ui") && html.contains(r#"<base href="/docs/">"#),
            "{html:.300}"
        );
        assert!(
            !html.contains("https://") && !html.contains("http://"),
            "no CDN: {html:.400}"
        );
    }
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ] {
        let response = no_redirects
            .get(app.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let text = response.text().await.unwrap();
        assert!(text.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(text.contains("/openapi.json"), "{text}");
        }
    }
    let (status, body) = send(no_redirects.get(app.url("/docs/nope.js"))).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

/// The OpenAPI document committed under specs/ is the one the code generates.
#[test]
fn committed_openapi_matches_the_code() {
    let generated: Value =
        serde_json::from_str(&todo_api::routes::openapi().to_pretty_json().unwrap()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/api/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("specs/api/openapi.json"))
            .unwrap();
    assert!(
        committed == generated,
        "specs/api/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test api committed_openapi`"
    );
}

on_each_database!(
    unknown_routes_and_methods_are_json,
    cors_for_the_frontend_only,
    public_routes
);
