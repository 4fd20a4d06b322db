//! The error answers of the routes: what the store's and the database's
//! errors become, and the error responses each operation declares in the
//! OpenAPI document (`responses(..., Unauthorized, NoSuchTask, ...)`), each
//! with the body the API really sends (checked by the tests below).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::IntoResponses;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};

use crate::db::DbError;
use crate::error::{ApiError, IdempotencyConflict};
use crate::store::StoreError;

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        if err.failure().is_some() {
            ApiError::unavailable(err)
        } else {
            ApiError::internal(err)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Db(err) => err.into(),
            StoreError::TaskLimitReached { limit } => ApiError::TaskLimitReached { limit },
            StoreError::IdempotencyMismatch => {
                ApiError::IdempotencyConflict(IdempotencyConflict::DifferentBody)
            }
            StoreError::IdempotencyInProgress => {
                ApiError::IdempotencyConflict(IdempotencyConflict::InProgress)
            }
            StoreError::IdempotentTaskDeleted => {
                ApiError::IdempotencyConflict(IdempotencyConflict::TaskDeleted)
            }
            StoreError::Stale(task) => ApiError::PreconditionFailed(Box::new((*task).into())),
            StoreError::CursorExpired => ApiError::CursorExpired,
        }
    }
}

/// One error response: its status, description, the bodies it may carry
/// (named by their `code`) and the header that comes with it.
fn error(
    status: u16,
    description: &str,
    examples: &[(&'static str, Value)],
    header: Option<(&str, Type, &str)>,
) -> (String, RefOr<Response>) {
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody")));
    content = match examples {
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
    if let Some((name, schema_type, description)) = header {
        let schema = ObjectBuilder::new().schema_type(schema_type);
        let header = HeaderBuilder::new()
            .schema(Some(schema))
            .description(Some(description));
        response = response.header(name, header.build());
    }
    (status.to_string(), response.build().into())
}

/// `{"detail", "code"}` as the API sends it.
fn body(code: &'static str, detail: &str) -> (&'static str, Value) {
    (code, json!({"detail": detail, "code": code}))
}

/// A 422 naming `field`.
fn invalid(field: &str, message: &str) -> (&'static str, Value) {
    let errors = json!([{"field": field, "message": message}]);
    let body = json!({"detail": "Validation failed", "code": "validation_error", "errors": errors});
    ("validation_error", body)
}

const RETRY_AFTER: &str = "Retry-After";

/// A 412 as the API sends it, for the example task.
fn stale() -> (&'static str, Value) {
    let body = json!({
        "detail": "The task was changed since you read it; this is its current state",
        "code": "precondition_failed",
        "task": crate::models::output::TaskOut::example(),
    });
    ("precondition_failed", body)
}

/// 304: the representation the client holds is current.
fn not_modified(what: &str) -> (String, RefOr<Response>) {
    let etag = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some("The current entity tag"));
    let response = ResponseBuilder::new()
        .description(format!("`If-None-Match` names the current {what}: no body"))
        .header("ETag", etag.build());
    ("304".to_owned(), response.build().into())
}

macro_rules! responses {
    ($($(#[$doc:meta])* $name:ident => [$($response:expr),* $(,)?];)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$($response),*])
            }
        }
    )*};
}

responses! {
    /// 401: every `/api` operation.
    Unauthorized => [error(
        401,
        "Missing or invalid bearer token (`WWW-Authenticate: Bearer`)",
        &[body("not_authenticated", "Not authenticated"), body("invalid_token", "Invalid token: token expired")],
        Some(("WWW-Authenticate", Type::String, "`Bearer` when no token was sent, `Bearer error=\"invalid_token\"` when one was refused")),
    )];
    /// 429: every `/api` operation (the per-user limits).
    TooManyRequests => [error(
        429,
        "Too many requests of this user waiting, or over its rate limit; retry after `Retry-After` seconds",
        &[body("too_many_requests", "Too many requests at once; retry after the time in Retry-After")],
        Some((RETRY_AFTER, Type::Integer, "Seconds to wait before retrying")),
    )];
    /// 503: every operation that reaches the database.
    Unavailable => [error(
        503,
        "The database cannot be reached; retry shortly (`Retry-After`)",
        &[body("service_unavailable", "The service is temporarily unavailable; please retry shortly")],
        Some((RETRY_AFTER, Type::Integer, "Seconds to wait before retrying")),
    )];
    /// 500: any operation.
    Unexpected => [error(500, "Unexpected error (no details are disclosed)", &[body("internal_error", "Internal server error")], None)];
    /// 404: an operation on one task.
    NoSuchTask => [error(
        404,
        "No such task for this caller (another user's task looks exactly the same)",
        &[body("not_found", "Task not found")],
        None,
    )];
    /// 409: a create.
    CreateConflict => [error(
        409,
        "`idempotency_conflict`: the `Idempotency-Key` was used with another body, or its first request is still running (`Retry-After`); \
         `task_limit_reached`: the caller has `MAX_TASKS_PER_USER` tasks",
        &[
            body("idempotency_conflict", "This Idempotency-Key was already used with a different request body"),
            body("task_limit_reached", "You have reached the limit of 10000 tasks; delete some to add more"),
        ],
        Some((RETRY_AFTER, Type::Integer, "With `idempotency_conflict` while the first request with the key still runs: seconds to wait")),
    )];
    /// 422: the listing's query.
    BadQuery => [error(
        422,
        "A field, query parameter or header is invalid; `errors` lists each",
        &[invalid("limit", "must be a whole number from 1 to 1000")],
        None,
    )];
    /// 412 and 428: a write of one task (`If-Match`).
    WriteConditions => [
        error(
            412,
            "`If-Match` names no current tag of the task: nothing changed; `task` is the task as it is (its `ETag` too)",
            &[stale()],
            Some(("ETag", Type::String, "The task's current entity tag")),
        ),
        error(
            428,
            "`REQUIRE_IF_MATCH=true` and the write has no `If-Match`",
            &[body("precondition_required", "This write needs an If-Match header with the task's ETag")],
            None,
        ),
    ];
    /// 304: reading one task.
    TaskNotModified => [not_modified("task")];
    /// 304: a listing.
    ListNotModified => [not_modified("answer to this query (the caller has made no write since)")];
    /// 410 and 422: the changes feed.
    FeedCursor => [
        error(
            410,
            "The cursor is older than the tombstones kept (`TOMBSTONE_RETENTION_DAYS`) or ahead of the caller's version: reload from `since=0`",
            &[body("cursor_expired", "This cursor is too old or unknown; reload the list and continue from its cursor")],
            None,
        ),
        error(422, "`since` or `limit` is invalid; `errors` names it", &[invalid("since", "must be a cursor this API returned (a whole number, 0 or more)")], None),
    ];
    /// 400, 408, 413, 415 and 422: an operation with a JSON body (a task's fields).
    JsonBody => [
        error(400, "The body is not valid JSON", &[body("invalid_json", "Request body is not valid JSON: key must be a string at line 1 column 2")], None),
        error(408, "The body did not arrive within 30 s of the request head (`HTTP_BODY_TIMEOUT`)", &[body("request_timeout", "The request body did not arrive in time")], None),
        error(413, "The body is larger than 64 KiB", &[body("payload_too_large", "Request body is larger than 64 KiB")], None),
        error(415, "The body is not application/json", &[body("unsupported_media_type", "Request body must be application/json")], None),
        error(422, "A field, query parameter or header is invalid; `errors` lists each", &[invalid("title", "must not be empty")], None),
    ];
    /// The same for `PATCH .../complete`, whose one field is `completed`.
    CompleteBody => [
        error(400, "The body is not valid JSON", &[body("invalid_json", "Request body is not valid JSON: key must be a string at line 1 column 2")], None),
        error(408, "The body did not arrive within 30 s of the request head (`HTTP_BODY_TIMEOUT`)", &[body("request_timeout", "The request body did not arrive in time")], None),
        error(413, "The body is larger than 64 KiB", &[body("payload_too_large", "Request body is larger than 64 KiB")], None),
        error(415, "The body is not application/json", &[body("unsupported_media_type", "Request body must be application/json")], None),
        error(422, "A field, query parameter or header is invalid; `errors` lists each", &[invalid("completed", "must be a boolean (true or false)")], None),
    ];
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use serde_json::{Map, Value, json};

    use crate::auth::TokenRejection;
    use crate::error::{ApiError, AuthFailure, IdempotencyConflict};
    use crate::limits::{Refusal, Refused};
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
            ListQuery::parse(Some("limit=0")).unwrap_err().into(),
            NewTask::from_json(&object(json!({"title": ""})))
                .unwrap_err()
                .into(),
            TaskChanges::from_json(&object(json!({"title": ""})))
                .unwrap_err()
                .into(),
            CompleteRequest::from_json(Some(&object(json!({"completed": "yes"}))))
                .unwrap_err()
                .into(),
            ApiError::RequestTimeout,
            ApiError::IdempotencyConflict(IdempotencyConflict::DifferentBody),
            ApiError::TaskLimitReached { limit: 10_000 },
            ApiError::TooManyRequests(Refused {
                reason: Refusal::QueueFull,
                retry_after: std::time::Duration::from_secs(1),
            }),
            ApiError::internal("SELECT ..."),
            ApiError::unavailable("connection refused"),
            ApiError::PreconditionFailed(Box::new(crate::models::output::TaskOut::example())),
            ApiError::PreconditionRequired,
            ApiError::CursorExpired,
            crate::models::changes::FeedQuery::parse(Some("since=x"))
                .unwrap_err()
                .into(),
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
                | ApiError::PreconditionFailed(_)
                | ApiError::PreconditionRequired
                | ApiError::CursorExpired
                | ApiError::PayloadTooLarge
                | ApiError::UnsupportedMediaType
                | ApiError::Validation(_)
                | ApiError::RequestTimeout
                | ApiError::IdempotencyConflict(_)
                | ApiError::TaskLimitReached { .. }
                | ApiError::TooManyRequests(_)
                | ApiError::Unavailable(_)
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    fn document() -> Value {
        serde_json::to_value(crate::routes::openapi()).unwrap()
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
                    if status.starts_with('2') || status.starts_with('3') {
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
