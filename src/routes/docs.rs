//! The OpenAPI document (generated from the handlers' annotations) and the
//! offline `/docs` page (Swagger UI shipped inside the binary by the
//! `vendored` feature of utoipa-swagger-ui).
//!
//! Error responses are added by one rule here instead of being repeated on
//! every handler: which statuses an operation can answer follows from what
//! it reads (a token, a path id, a body, a query).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, ErrorBody, ErrorCode, FieldError};
use crate::models::input::{CompleteRequest, NewTask, TaskChanges, TaskTitle};
use crate::models::output::{DeletedOut, HealthOut, TaskOut};

#[derive(OpenApi)]
#[openapi(
    info(title = "Todo API", description = "Multi-user Todo REST API for a Next.js + Better Auth frontend."),
    servers((url = "/", description = "The server that serves this document")),
    components(schemas(TaskOut, DeletedOut, HealthOut, NewTask, TaskChanges, TaskTitle, CompleteRequest, ErrorBody, ErrorCode, FieldError)),
    tags((name = "tasks", description = "The caller's tasks"), (name = "health", description = "Probes"))
)]
pub struct ApiDoc;

/// The document of the registered routes, with what one rule adds to every
/// operation (security, error responses).
pub fn complete(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    SecurityAndErrors.modify(&mut document);
    document
}

/// `/openapi.json`, and Swagger UI (files shipped inside the binary) at
/// `/docs`. Routed by hand rather than with `SwaggerUi`, whose `/docs`
/// answers with a redirect: here `GET /docs` is the page itself.
pub fn routes(document: utoipa::openapi::OpenApi) -> Router {
    // Serialised once: the document never changes while the process runs.
    let spec = Bytes::from(document.to_json().unwrap_or_default());
    let config = Arc::new(Config::from("/openapi.json"));
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], spec) }),
        )
        .route("/docs", get(docs_file))
        .route("/docs/", get(docs_file))
        .route("/docs/{*file}", get(docs_file))
        .layer(Extension(config))
}

async fn docs_file(
    file: Option<Path<String>>,
    Extension(config): Extension<Arc<Config<'static>>>,
) -> Response {
    let name = file.as_ref().map_or("", |Path(name)| name.as_str());
    match utoipa_swagger_ui::serve(name, config) {
        Ok(Some(found)) => {
            let mut bytes = found.bytes.into_owned();
            if name.is_empty() || name == "index.html" {
                // The page refers to its assets relatively: anchor them at /docs/
                // whether it was reached as /docs or /docs/.
                let html = String::from_utf8_lossy(&bytes).replacen(
                    "<head>",
                    r#"<head><base href="/docs/">"#,
                    1,
                );
                bytes = html.into_bytes();
            }
            let mut response =
                ([(header::CONTENT_TYPE, found.content_type)], bytes).into_response();
            if found.gzpipped {
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        Ok(None) => ApiError::RouteNotFound.into_response(),
        Err(e) => ApiError::internal(format!("docs: {e}")).into_response(),
    }
}

struct SecurityAndErrors;

impl Modify for SecurityAndErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A Better Auth JWT (JWT plugin, EdDSA by default) or an HS256 token signed with BETTER_AUTH_SECRET"))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            for method in [
                HttpMethod::Get,
                HttpMethod::Post,
                HttpMethod::Put,
                HttpMethod::Delete,
                HttpMethod::Patch,
            ] {
                let operation = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    HttpMethod::Put => item.put.as_mut(),
                    HttpMethod::Delete => item.delete.as_mut(),
                    HttpMethod::Patch => item.patch.as_mut(),
                    _ => None,
                };
                if let Some(operation) = operation {
                    body_may_be_absent_not_null(operation);
                    add_errors(path, operation);
                }
            }
        }
    }
}

/// utoipa renders an optional body (`Option<T>`) as "T or JSON null"; ours
/// means "T, or no body at all" (`required` is already left out).
fn body_may_be_absent_not_null(op: &mut Operation) {
    let Some(RefOr::T(body)) = op.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else { continue };
        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
            let mut not_null = one_of.items.iter().filter(|item| !is_null_schema(item));
            if let (Some(only), None) = (not_null.next(), not_null.next()) {
                content.schema = Some(only.clone());
            }
        }
    }
}

fn is_null_schema(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

fn add_errors(path: &str, op: &mut Operation) {
    let protected = path.starts_with("/api/");
    let has_body = op.request_body.is_some();
    let has_id = path.contains("{id}");
    let has_query = op.parameters.as_ref().is_some_and(|p| {
        p.iter()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query))
    });
    if protected {
        op.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    } else {
        // Said, not left to a default: this operation needs no token.
        op.security = Some(Vec::new());
    }
    let mut errors: Vec<(u16, &str)> = Vec::new();
    if has_body {
        errors.push((400, "The body is not valid JSON"));
    }
    if protected {
        errors.push((
            401,
            "Missing or invalid bearer token (`WWW-Authenticate: Bearer`)",
        ));
    }
    if has_id {
        errors.push((
            404,
            "No such task for this caller (another user's task looks exactly the same)",
        ));
    }
    if has_body {
        errors.push((
            408,
            "The body did not arrive within 30 s of the request head (`HTTP_BODY_TIMEOUT`)",
        ));
    }
    if protected && op.request_body.is_some() && path == "/api/tasks" {
        errors.push((
            409,
            "`idempotency_conflict`: the `Idempotency-Key` was used with another body, or its first request is still running (`Retry-After`); \
             `task_limit_reached`: the caller has `MAX_TASKS_PER_USER` tasks",
        ));
    }
    if has_body {
        errors.push((413, "The body is larger than 64 KiB"));
        errors.push((415, "The body is not application/json"));
    }
    if has_body || has_query {
        errors.push((
            422,
            "A field, query parameter or header is invalid; `errors` lists each",
        ));
    }
    if protected {
        errors.push((
            429,
            "Too many requests of this user waiting, or over its rate limit; retry after `Retry-After` seconds",
        ));
    }
    errors.push((500, "Unexpected error (no details are disclosed)"));
    if protected || path == "/health/ready" {
        errors.push((
            503,
            "The database cannot be reached; retry shortly (`Retry-After`)",
        ));
    }
    for (status, description) in errors {
        let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody")));
        content = match error_examples(status, has_query, path).as_slice() {
            [(_, only)] => content.example(Some(only.clone())),
            several => content.examples_from_iter(several.iter().map(|(name, value)| {
                (
                    *name,
                    ExampleBuilder::new().value(Some(value.clone())).build(),
                )
            })),
        };
        let mut response = ResponseBuilder::new()
            .description(description)
            .content("application/json", content.build());
        for (name, header) in error_headers(status) {
            response = response.header(name, header);
        }
        let response = response.build();
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(response.into());
    }
}

/// The bodies the API really sends with `status` (named by their `code`),
/// for an operation reading a query (`has_query`) or a body on `path`. The
/// tests below render the real errors and compare; they also require one
/// for every declared error status.
fn error_examples(status: u16, has_query: bool, path: &str) -> Vec<(&'static str, Value)> {
    let error = |code: &'static str, detail: &str| (code, json!({"detail": detail, "code": code}));
    match status {
        400 => vec![error(
            "invalid_json",
            "Request body is not valid JSON: key must be a string at line 1 column 2",
        )],
        401 => vec![
            error("not_authenticated", "Not authenticated"),
            error("invalid_token", "Invalid token: token expired"),
        ],
        404 => vec![error("not_found", "Task not found")],
        408 => vec![error(
            "request_timeout",
            "The request body did not arrive in time",
        )],
        409 => vec![
            error(
                "idempotency_conflict",
                "This Idempotency-Key was already used with a different request body",
            ),
            error(
                "task_limit_reached",
                "You have reached the limit of 10000 tasks; delete some to add more",
            ),
        ],
        413 => vec![error(
            "payload_too_large",
            "Request body is larger than 64 KiB",
        )],
        415 => vec![error(
            "unsupported_media_type",
            "Request body must be application/json",
        )],
        422 => {
            // A typical mistake with this very operation.
            let (field, message) = if has_query {
                ("limit", "must be a whole number from 1 to 1000")
            } else if path.ends_with("/complete") {
                ("completed", "must be a boolean (true or false)")
            } else {
                ("title", "must not be empty")
            };
            vec![(
                "validation_error",
                json!({
                    "detail": "Validation failed",
                    "code": "validation_error",
                    "errors": [{"field": field, "message": message}],
                }),
            )]
        }
        429 => vec![error(
            "too_many_requests",
            "Too many requests at once; retry after the time in Retry-After",
        )],
        500 => vec![error("internal_error", "Internal server error")],
        503 => vec![error(
            "service_unavailable",
            "The service is temporarily unavailable; please retry shortly",
        )],
        _ => Vec::new(),
    }
}

/// The headers that come with an error status.
fn error_headers(status: u16) -> Vec<(&'static str, Header)> {
    let header = |schema_type: Type, description: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(schema_type)))
            .description(Some(description))
            .build()
    };
    match status {
        401 => vec![(
            "WWW-Authenticate",
            header(
                Type::String,
                "`Bearer` when no token was sent, `Bearer error=\"invalid_token\"` when one was refused",
            ),
        )],
        409 => vec![(
            "Retry-After",
            header(
                Type::Integer,
                "With `idempotency_conflict` while the first request with the key still runs: seconds to wait",
            ),
        )],
        429 | 503 => vec![(
            "Retry-After",
            header(Type::Integer, "Seconds to wait before retrying"),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use serde_json::{Map, Value, json};

    use crate::auth::TokenRejection;
    use crate::error::{ApiError, AuthFailure, IdempotencyConflict, Refusal};
    use crate::models::input::{CompleteRequest, NewTask, TaskChanges};
    use crate::models::list::ListQuery;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    /// One error of each kind, made the way the API makes them.
    fn one_of_each_kind() -> Vec<ApiError> {
        let bad_json = serde_json::from_str::<Value>("{oops}").unwrap_err();
        let all = vec![
            ApiError::BadJson(bad_json.to_string()),
            ApiError::Unauthorized(AuthFailure::Missing),
            ApiError::invalid_token(TokenRejection::Expired),
            ApiError::TaskNotFound,
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ListQuery::parse(Some("limit=0")).unwrap_err(),
            NewTask::from_json(&object(json!({"title": ""}))).unwrap_err(),
            TaskChanges::from_json(&object(json!({"title": ""}))).unwrap_err(),
            CompleteRequest::from_json(Some(&object(json!({"completed": "yes"})))).unwrap_err(),
            ApiError::RequestTimeout,
            ApiError::IdempotencyConflict(IdempotencyConflict::DifferentBody),
            ApiError::TaskLimitReached { limit: 10_000 },
            ApiError::TooManyRequests {
                reason: Refusal::QueueFull,
                retry_after: std::time::Duration::from_secs(1),
            },
            ApiError::internal("SELECT ..."),
            ApiError::unavailable("connection refused"),
        ];
        // No wildcard: a new kind of error fails to compile here until it is
        // added above (and its code to `ErrorCode`).
        for error in &all {
            match error {
                ApiError::Unauthorized(_)
                | ApiError::TaskNotFound
                | ApiError::RouteNotFound
                | ApiError::MethodNotAllowed
                | ApiError::BadJson(_)
                | ApiError::PayloadTooLarge
                | ApiError::UnsupportedMediaType
                | ApiError::Validation(_)
                | ApiError::RequestTimeout
                | ApiError::IdempotencyConflict(_)
                | ApiError::TaskLimitReached { .. }
                | ApiError::TooManyRequests { .. }
                | ApiError::Unavailable(_)
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    fn document() -> Value {
        serde_json::to_value(super::super::openapi()).unwrap()
    }

    #[test]
    fn every_code_the_api_sends_is_in_the_enumeration() {
        let doc = document();
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .clone();
        assert_eq!(
            doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
        for error in one_of_each_kind() {
            assert!(codes.contains(&json!(error.code())), "{}", error.code());
        }
    }

    /// Each example of an error response is a body the API really sends
    /// with that status.
    #[tokio::test]
    async fn error_examples_are_real_responses() {
        let mut real = Vec::new();
        for error in one_of_each_kind() {
            let response = error.into_response();
            let status = response.status().as_u16().to_string();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            real.push((status, serde_json::from_slice::<Value>(&bytes).unwrap()));
        }
        let doc = document();
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('2') {
                        continue;
                    }
                    let content = &response["content"]["application/json"];
                    let examples: Vec<&Value> = match content["examples"].as_object() {
                        Some(named) => named.values().map(|e| &e["value"]).collect(),
                        None => vec![&content["example"]],
                    };
                    assert!(
                        examples.iter().all(|e| e.is_object()),
                        "{method} {path} {status}: no example (add one to error_examples)"
                    );
                    for example in examples {
                        assert!(
                            real.contains(&(status.clone(), example.clone())),
                            "{method} {path} {status}: {example} is not what the API sends"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 40, "{seen}");
    }
}
