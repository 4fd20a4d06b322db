//! The request extractors (FastAPI's dependencies): the verified caller,
//! the caller's store, the task id of the path, the JSON body. A handler
//! takes [`UserTasks`] first: extractors run in order, so the caller is
//! authenticated before the path or the body is looked at.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};
use utoipa::IntoParams;

use crate::auth::{Identity, TokenRejection};
use crate::error::{ApiError, AuthFailure, BODY_LIMIT};
use crate::http::RequestContext;
use crate::state::AppState;
use crate::store::UserTasks;

/// The verified caller. Put it (or [`crate::store::UserTasks`], which uses it)
/// first in a handler's arguments: extractors run in order, so
/// authentication answers before the path or the body is looked at.
pub struct AuthUser(pub Identity);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        let identity = state
            .verifier()
            .verify(token)
            .await
            .map_err(ApiError::invalid_token)?;
        // For the request log line and metrics.
        if let Some(context) = parts.extensions.get::<Arc<RequestContext>>() {
            context.set_user(&identity.user_id);
        }
        Ok(AuthUser(identity))
    }
}

/// The token of the one `Authorization: Bearer <token>` header.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(match parts.headers.contains_key(AUTHORIZATION) {
            true => ApiError::invalid_token(TokenRejection::DuplicateHeader),
            false => ApiError::Unauthorized(AuthFailure::Missing),
        });
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token(TokenRejection::MalformedHeader))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(AuthFailure::Missing));
    }
    match token.trim() {
        "" => Err(ApiError::Unauthorized(AuthFailure::Missing)),
        token => Ok(token),
    }
}

/// Extracting the store authenticates first, then waits for the user's turn
/// (held until the response is sent), then scopes the store to the caller.
impl FromRequestParts<AppState> for UserTasks {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Boxed: their states would otherwise be copied by every layer above.
        let AuthUser(identity) = Box::pin(AuthUser::from_request_parts(parts, state)).await?;
        if !state.readiness().is_started() {
            return Err(ApiError::unavailable(
                "starting: the database is not reached or migrated yet",
            ));
        }
        let admission = Box::pin(state.limits().admit(&identity.user_id)).await?;
        if let Some(context) = parts.extensions.get::<Arc<RequestContext>>() {
            context.hold(admission);
        }
        Ok(state.store_for(&identity))
    }
}

/// The `{id}` path segment, declared once for every route that has one.
/// Anything but a positive 64-bit integer names no task, so it is a 404 like
/// any other missing task.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskId {
    /// Task id
    #[param(minimum = 1)]
    pub id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::TaskNotFound)?;
        let digits_only = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
        match raw.parse::<i64>() {
            Ok(id) if digits_only && id > 0 => Ok(TaskId { id }),
            _ => Err(ApiError::TaskNotFound),
        }
    }
}

/// A JSON object body; `None` when the request has no body at all.
/// 415 when a body is not `application/json` (told by the headers, before
/// anything is read), 413 over the limit, 400 when it does not parse, 422 when
/// it is not an object, 408 when it does not arrive in time.
pub struct JsonObject(pub Option<Map<String, Value>>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(req.headers());
        let declared = declared_length(req.headers());
        if declared == Some(0) {
            return Ok(JsonObject(None));
        }
        if declared.is_some() && !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let bytes = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            // A chunked body of another type is a 415 even when it is also too large.
            Err(_) if !is_json => return Err(ApiError::UnsupportedMediaType),
            Err(err) => return Err(read_error(err)),
        };
        if bytes.is_empty() {
            return Ok(JsonObject(None));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(Some(map))),
            Ok(_) => Err(ApiError::field("body", "must be a JSON object")),
            Err(e) => Err(ApiError::BadJson(e.to_string())),
        }
    }
}

impl JsonObject {
    /// The object, or a 422 when the body was missing.
    pub fn required(self) -> Result<Map<String, Value>, ApiError> {
        self.0
            .ok_or_else(|| ApiError::field("body", "a JSON object is required"))
    }
}

/// What a failed body read means: too large, too slow, or a broken upload.
fn read_error(err: Box<dyn std::error::Error + Send + Sync>) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            return ApiError::PayloadTooLarge;
        }
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::RequestTimeout;
        }
        cause = e.source();
    }
    ApiError::BadJson("the body could not be read".into())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `application/json`, or any `application/*+json`, with optional parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
