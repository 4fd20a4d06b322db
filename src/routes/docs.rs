//! The OpenAPI document (generated from the handlers' annotations) and the
//! offline `/docs` page (Swagger UI shipped inside the binary by the
//! `vendored` feature of utoipa-swagger-ui).
//!
//! Each operation declares its own error responses (see `errors`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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

/// The document of the registered routes, with the bearer scheme.
pub fn complete(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    BearerScheme.modify(&mut document);
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

/// The bearer scheme every `/api` operation names (`security(("bearer" = []))`).
struct BearerScheme;

impl Modify for BearerScheme {
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
        for item in openapi.paths.paths.values_mut() {
            if let Some(op) = item.patch.as_mut() {
                body_may_be_absent_not_null(op);
            }
        }
    }
}

/// utoipa renders an optional body (`Option<T>`) as "T or JSON null"; ours
/// (`PATCH .../complete`) means "T, or no body at all" (`required` is
/// already left out).
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
