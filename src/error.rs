//! The one error type of the API and its JSON rendering:
//! `{"detail": ..., "code": ...}` (+ `errors` for 422) on every route.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::TokenRejection;
use crate::limits::Refused;
pub use crate::models::invalid::{FieldError, Invalid};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// Present on 412 only: the task as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::models::output::TaskOut>, nullable = false)]
    pub task: Option<serde_json::Value>,
}

/// Every `code` an error body can carry (the schema of `ErrorBody.code`):
/// 400 `invalid_json`; 401 `not_authenticated` (no token) or `invalid_token`; 404 `not_found`; 405 `method_not_allowed`;
/// 408 `request_timeout`; 409 `idempotency_conflict` or `task_limit_reached`;
/// 410 `cursor_expired`; 412 `precondition_failed`; 413 `payload_too_large`;
/// 415 `unsupported_media_type`; 422 `validation_error`; 428
/// `precondition_required`; 429 `too_many_requests`; 500 `internal_error`;
/// 503 `service_unavailable`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case", example = "not_found")]
pub enum ErrorCode {
    InvalidJson,
    CursorExpired,
    PreconditionFailed,
    PreconditionRequired,
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

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` credentials were sent.
    Missing,
    /// A token was sent and refused.
    Invalid(TokenRejection),
}

/// Why the same `Idempotency-Key` cannot be answered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyConflict {
    /// The key was first used with another body.
    DifferentBody,
    /// The first request with the key has not finished.
    InProgress,
    /// The task the first request created has been deleted since.
    TaskDeleted,
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
    #[error("the task is not at the version the request expected")]
    PreconditionFailed(Box<crate::models::output::TaskOut>),
    #[error("writes must carry If-Match")]
    PreconditionRequired,
    #[error("the cursor cannot be answered")]
    CursorExpired,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("idempotency conflict: {0:?}")]
    IdempotencyConflict(IdempotencyConflict),
    #[error("task limit of {limit} reached")]
    TaskLimitReached { limit: u64 },
    #[error(transparent)]
    TooManyRequests(#[from] Refused),
    #[error("service unavailable")]
    Unavailable(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// Largest accepted request body, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

impl ApiError {
    pub fn invalid_token(reason: TokenRejection) -> Self {
        ApiError::Unauthorized(AuthFailure::Invalid(reason))
    }

    pub fn field(field: &str, message: &str) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// 503: retry later; `cause` goes to the log only.
    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        ApiError::Unavailable(cause.into())
    }

    /// 500; `cause` goes to the log only.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        ApiError::Internal(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TaskNotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadJson(_) => StatusCode::BAD_REQUEST,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::CursorExpired => StatusCode::GONE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::IdempotencyConflict(_) | ApiError::TaskLimitReached { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
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
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::PreconditionRequired => "precondition_required",
            ApiError::CursorExpired => "cursor_expired",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_error",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::IdempotencyConflict(_) => "idempotency_conflict",
            ApiError::TaskLimitReached { .. } => "task_limit_reached",
            ApiError::TooManyRequests(_) => "too_many_requests",
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
            ApiError::PreconditionFailed(_) => {
                "The task was changed since you read it; this is its current state".into()
            }
            ApiError::PreconditionRequired => {
                "This write needs an If-Match header with the task's ETag".into()
            }
            ApiError::CursorExpired => {
                "This cursor is too old or unknown; reload the list and continue from its cursor".into()
            }
            ApiError::PayloadTooLarge => {
                format!("Request body is larger than {} KiB", BODY_LIMIT / 1024)
            }
            ApiError::UnsupportedMediaType => "Request body must be application/json".into(),
            ApiError::Validation(_) => "Validation failed".into(),
            ApiError::RequestTimeout => "The request body did not arrive in time".into(),
            ApiError::IdempotencyConflict(IdempotencyConflict::DifferentBody) => {
                "This Idempotency-Key was already used with a different request body".into()
            }
            ApiError::IdempotencyConflict(IdempotencyConflict::InProgress) => {
                "A request with this Idempotency-Key is still being processed; retry shortly".into()
            }
            ApiError::IdempotencyConflict(IdempotencyConflict::TaskDeleted) => {
                "The task created with this Idempotency-Key has been deleted since; use a new key to create another".into()
            }
            ApiError::TaskLimitReached { limit } => {
                format!("You have reached the limit of {limit} tasks; delete some to add more")
            }
            ApiError::TooManyRequests(_) => {
                "Too many requests at once; retry after the time in Retry-After".into()
            }
            ApiError::Unavailable(_) => "The service is temporarily unavailable; please retry shortly".into(),
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
            StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout,
            StatusCode::SERVICE_UNAVAILABLE => ApiError::unavailable("the request took too long"),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(AuthFailure::Missing),
            _ => ApiError::internal(format!("unexpected status {status}")),
        }
    }
}

/// Why a response is a 5xx, for the request's log line.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// The error and each of its sources, for a log line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Many errors already print their source in their own message.
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The cause of a 5xx goes to the log, in the request's line (see
        // `http::context`), never to the client.
        let cause = match &self {
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => {
                Some(ErrorCause(error_chain(cause.as_ref())))
            }
            ApiError::TooManyRequests(_) | ApiError::TaskLimitReached { .. } => {
                crate::metrics::refused(self.code());
                None
            }
            _ => None,
        };
        let status = self.status();
        let extra_header = match &self {
            // RFC 6750: a bare challenge when no credentials came, `invalid_token` when one did.
            ApiError::Unauthorized(AuthFailure::Missing) => {
                Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            }
            ApiError::Unauthorized(AuthFailure::Invalid(_)) => Some((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            )),
            ApiError::Unavailable(_)
            | ApiError::IdempotencyConflict(IdempotencyConflict::InProgress) => {
                Some((header::RETRY_AFTER, HeaderValue::from_static("1")))
            }
            ApiError::PreconditionFailed(task) => {
                Some((header::ETAG, crate::etag::task_tag(task.version)))
            }
            ApiError::TooManyRequests(Refused { retry_after, .. }) => Some((
                header::RETRY_AFTER,
                // Whole seconds, rounded up, at least 1.
                HeaderValue::from(
                    (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1),
                ),
            )),
            _ => None,
        };
        let body = ErrorBody {
            detail: self.detail(),
            code: self.code().to_owned(),
            task: match &self {
                ApiError::PreconditionFailed(task) => serde_json::to_value(task).ok(),
                _ => None,
            },
            errors: match self {
                ApiError::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some((name, value)) = extra_header {
            response.headers_mut().insert(name, value);
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(Invalid(errors): Invalid) -> Self {
        ApiError::Validation(errors)
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
        let (status, _, body) =
            render(ApiError::internal("SELECT secret FROM x: password=hunter2")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            serde_json::json!({"detail": "Internal server error", "code": "internal_error"})
        );
    }

    #[tokio::test]
    async fn unavailable_asks_to_retry_without_details() {
        let (status, headers, body) =
            render(ApiError::unavailable("connection refused to 10.0.0.1")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(!body.to_string().contains("10.0.0.1"));
    }

    #[tokio::test]
    async fn unauthorized_challenges() {
        let (_, headers, body) = render(ApiError::Unauthorized(AuthFailure::Missing)).await;
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["code"], "not_authenticated");
        let (_, headers, body) = render(ApiError::invalid_token(TokenRejection::Expired)).await;
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

    #[tokio::test]
    async fn limits_say_when_to_retry() {
        let (status, headers, body) = render(ApiError::TooManyRequests(Refused {
            reason: crate::limits::Refusal::RateLimited,
            retry_after: std::time::Duration::from_millis(1500),
        }))
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "2");
        assert_eq!(body["code"], "too_many_requests");
        let (status, _, body) = render(ApiError::TaskLimitReached { limit: 3 }).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["code"], "task_limit_reached");
        let (status, headers, body) = render(ApiError::IdempotencyConflict(
            IdempotencyConflict::InProgress,
        ))
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["code"], "idempotency_conflict");
    }

    #[test]
    fn chains_keep_their_sources() {
        let err = ApiError::internal("disk I/O error");
        let shown = error_chain(&err);
        assert!(shown.contains("disk I/O error"), "{shown}");
    }
}
