//! Cross-cutting HTTP: the server itself ([`server`]), and the layers every
//! request goes through: CORS, request ids, the request log line and context
//! ([`context`]), body deadline and draining ([`body`]), timeouts, panics, and
//! the rule that every error response is our JSON.

pub mod body;
mod context;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

pub use context::RequestContext;

use crate::config::ServerSettings;
use crate::error::ApiError;

/// Wraps the routes in the layers every response goes through.
pub fn with_layers(routes: Router, server: &ServerSettings) -> Router {
    let cors_origins = &server.cors_origins.0[..];
    let allowed: Arc<[HeaderValue]> = cors_origins.into();
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(cors_origins.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(crate::idempotency::HEADER),
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
        ])
        .allow_credentials(true)
        .expose_headers([
            HeaderName::from_static("x-total-count"),
            header::LOCATION,
            header::RETRY_AFTER,
            header::ETAG,
            request_id.clone(),
        ])
        .max_age(Duration::from_secs(600));

    // One `Router::layer` call, so each route holds the whole stack as one
    // boxed service (one call per layer boxes each level, and every request
    // clones each box). `ServiceBuilder` lists the outermost first.
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(middleware::from_fn(context::track))
        .layer(middleware::from_fn_with_state(
            allowed,
            cors_only_for_allowed_origins,
        ))
        // CORS inside the request log and metrics: the CORS layer answers
        // preflights itself, which outside `track` would be neither logged
        // nor counted (nor given a request id).
        .layer(cors)
        .layer(middleware::map_response(json_errors))
        // Outside the request timeout: the body's deadline is never the later one.
        .layer(middleware::from_fn_with_state(
            server.http_body_timeout,
            body::deadline_and_drain,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            server.http_request_timeout,
        ));
    routes
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(stack)
}

/// tower-http's CORS layer sends `Allow-Methods`, `Allow-Headers`,
/// `Expose-Headers`, `Allow-Credentials` whatever the origin; the contract
/// wants no `Access-Control-*` header at all for an origin not allowed.
async fn cors_only_for_allowed_origins(
    State(allowed): State<Arc<[HeaderValue]>>,
    request: Request,
    next: Next,
) -> Response {
    let origin_allowed = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| allowed.contains(o));
    let mut response = next.run(request).await;
    if !origin_allowed {
        let names: Vec<HeaderName> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            response.headers_mut().remove(name);
        }
    }
    response
}

/// Error responses made outside our handlers (405 from routing, 503 from the
/// timeout, ...) get the same JSON body as ours; their headers (`Allow`) stay.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let rendered = ApiError::from_status(status).into_response();
    let (rendered_parts, body) = rendered.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in rendered_parts.headers.iter() {
        parts.headers.insert(name, value.clone());
    }
    parts.extensions.extend(rendered_parts.extensions);
    Response::from_parts(parts, body)
}
