//! The JSON body extractor: content type, size, syntax, in that order.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A JSON object body; `None` when the request has no body at all.
/// 413 over the limit (set with `DefaultBodyLimit`), 415 when a body is not
/// `application/json`, 400 when it does not parse, 422 when it is not an object.
pub struct JsonObject(pub Option<Map<String, Value>>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::BadJson("the body could not be read".into()),
            }
        })?;
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

/// `application/json`, or any `application/*+json`, with optional parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
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
