//! The one error type of the API and its JSON rendering:
//! `{"detail": ..., "code": ...}` (+ `errors` for 422) on every route.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::DbErr;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A message a frontend can show as it is.
    #[schema(example = "Task not found")]
    pub detail: String,
    /// Stable, machine-readable error code.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// Present on 422 only: one entry per invalid field or query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

/// Every `code` an error body can carry (the schema of `ErrorBody.code`):
/// 400 `invalid_json`; 401 `not_authenticated` (no token) or `invalid_token`;
/// 404 `not_found`; 405 `method_not_allowed`; 408 `request_timeout`;
/// 409 `idempotency_conflict` or `task_limit_reached`; 413 `payload_too_large`;
/// 415 `unsupported_media_type`; 422 `validation_error`; 429 `too_many_requests`;
/// 500 `internal_error`; 503 `service_unavailable`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case", example = "not_found")]
pub enum ErrorCode {
    InvalidJson,
    NotAuthenticated,
    InvalidToken,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    IdempotencyConflict,
    TaskLimitReached,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct FieldError {
    /// The body field or query parameter at fault.
    #[schema(example = "title")]
    pub field: String,
    #[schema(example = "must not be empty")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a request was not authenticated. The reason goes to the client's
/// `detail`; it never includes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` credentials were sent.
    Missing,
    /// A token was sent and rejected, for the given reason.
    Invalid(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not authenticated: {0:?}")]
    Unauthorized(AuthFailure),
    #[error("task not found")]
    TaskNotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("malformed JSON: {0}")]
    BadJson(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Largest accepted request body, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

impl ApiError {
    pub fn invalid_token(reason: &'static str) -> Self {
        ApiError::Unauthorized(AuthFailure::Invalid(reason))
    }

    pub fn field(field: &str, message: &str) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TaskNotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadJson(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(AuthFailure::Missing) => "not_authenticated",
            ApiError::Unauthorized(AuthFailure::Invalid(_)) => "invalid_token",
            ApiError::TaskNotFound | ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BadJson(_) => "invalid_json",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_error",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Unauthorized(AuthFailure::Missing) => "Not authenticated".into(),
            ApiError::Unauthorized(AuthFailure::Invalid(reason)) => {
                format!("Invalid token: {reason}")
            }
            ApiError::TaskNotFound => "Task not found".into(),
            ApiError::RouteNotFound => "Not found".into(),
            ApiError::MethodNotAllowed => "Method not allowed".into(),
            ApiError::BadJson(why) => format!("Request body is not valid JSON: {why}"),
            ApiError::PayloadTooLarge => {
                format!("Request body is larger than {} KiB", BODY_LIMIT / 1024)
            }
            ApiError::UnsupportedMediaType => "Request body must be application/json".into(),
            ApiError::Validation(_) => "Validation failed".into(),
            ApiError::Unavailable(_) => "The database is unavailable; please retry shortly".into(),
            ApiError::Internal(_) => "Internal server error".into(),
        }
    }

    /// The error for a bare status produced outside our handlers (routing,
    /// layers), so those responses get the same JSON body too.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => ApiError::RouteNotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::BAD_REQUEST => ApiError::BadJson("bad request".into()),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
                ApiError::Unavailable("request timed out".into())
            }
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(AuthFailure::Missing),
            _ => ApiError::Internal(format!("unexpected status {status}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(why) => tracing::warn!(error = %why, "database unavailable"),
            ApiError::Internal(why) => tracing::error!(error = %why, "internal error"),
            _ => {}
        }
        let status = self.status();
        // RFC 6750: a bare challenge when no credentials came, `invalid_token` when one did.
        let extra_header = match &self {
            ApiError::Unauthorized(AuthFailure::Missing) => {
                Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            }
            ApiError::Unauthorized(AuthFailure::Invalid(_)) => Some((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            )),
            ApiError::Unavailable(_) => Some((header::RETRY_AFTER, HeaderValue::from_static("1"))),
            _ => None,
        };
        let body = ErrorBody {
            detail: self.detail(),
            code: self.code().to_owned(),
            errors: match self {
                ApiError::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some((name, value)) = extra_header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        if crate::db::is_unavailable(&err) {
            ApiError::Unavailable(err.to_string())
        } else {
            ApiError::Internal(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn render(err: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = err.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn internal_errors_disclose_nothing() {
        let (status, _, body) = render(ApiError::Internal(
            "SELECT secret FROM x: password=hunter2".into(),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            serde_json::json!({"detail": "Internal server error", "code": "internal_error"})
        );
    }

    #[tokio::test]
    async fn unavailable_asks_to_retry_without_details() {
        let (status, headers, body) = render(ApiError::Unavailable(
            "connection refused to 10.0.0.1".into(),
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(!body.to_string().contains("10.0.0.1"));
    }

    #[tokio::test]
    async fn unauthorized_challenges() {
        let (_, headers, body) = render(ApiError::Unauthorized(AuthFailure::Missing)).await;
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["code"], "not_authenticated");
        let (_, headers, body) = render(ApiError::invalid_token("token expired")).await;
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(body["detail"], "Invalid token: token expired");
    }

    #[tokio::test]
    async fn validation_lists_fields() {
        let (status, _, body) = render(ApiError::field("title", "must not be empty")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["errors"],
            serde_json::json!([{"field": "title", "message": "must not be empty"}])
        );
    }
}
