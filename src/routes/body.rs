//! The JSON body extractor: content type, then size, then syntax, in that order.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use crate::error::{ApiError, BODY_LIMIT};

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
