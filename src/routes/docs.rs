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
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, ErrorBody, FieldError};
use crate::models::input::{CompleteRequest, NewTask, TaskChanges, TaskTitle};
use crate::models::output::{DeletedOut, HealthOut, TaskOut};

#[derive(OpenApi)]
#[openapi(
    info(title = "Todo API", description = "Multi-user Todo REST API for a Next.js + Better Auth frontend."),
    paths(
        super::tasks::list_tasks,
        super::tasks::create_task,
        super::tasks::get_task,
        super::tasks::update_task,
        super::tasks::delete_task,
        super::tasks::complete_task,
        super::health::health,
        super::health::ready,
    ),
    components(schemas(TaskOut, DeletedOut, HealthOut, NewTask, TaskChanges, TaskTitle, CompleteRequest, ErrorBody, FieldError)),
    modifiers(&SecurityAndErrors),
    tags((name = "tasks", description = "The caller's tasks"), (name = "health", description = "Probes"))
)]
pub struct ApiDoc;

/// `/openapi.json`, and Swagger UI (files shipped inside the binary) at
/// `/docs`. Routed by hand rather than with `SwaggerUi`, whose `/docs`
/// answers with a redirect: here `GET /docs` is the page itself.
pub fn routes() -> Router {
    // Serialised once: the document never changes while the process runs.
    let spec = Bytes::from(ApiDoc::openapi().to_json().unwrap_or_default());
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
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(response.into());
    }
}
