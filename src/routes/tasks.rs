//! `/api/tasks`: the six task endpoints. Each handler takes [`UserTasks`]
//! first, so the caller is authenticated before anything else is read.

use crate::db::DbError;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::errors::{
    BadQuery, CompleteBody, CreateConflict, JsonBody, ListNotModified, NoSuchTask, TaskNotModified,
    TooManyRequests, Unauthorized, Unavailable, Unexpected, WriteConditions,
};
use super::extract::{JsonObject, TaskId};
use crate::error::{ApiError, FieldError};
use crate::etag;
use crate::idempotency::{Fingerprint, IdempotencyKey, KeyedRequest};
use crate::models::input::{CompleteRequest, NewTask, TaskChanges};
use crate::models::list::ListQuery;
use crate::models::output::{DeletedOut, TaskOut};
use crate::models::task;
use crate::preconditions::{Condition, WriteCondition};
use crate::state::AppState;
use crate::store::{Created, UserTasks, location};

/// The six task routes, each with its OpenAPI entry (from `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, update_task, delete_task))
        .routes(routes!(complete_task))
}

/// List the caller's tasks, newest first unless sorted otherwise.
#[utoipa::path(
    get,
    path = "/api/tasks",
    tag = "tasks",
    params(ListQuery, (
        "If-None-Match" = Option<String>,
        Header,
        description = "The `ETag` of an earlier answer to the same query: 304 while the caller has made no write since",
        nullable = false
    )),
    responses((
        status = 200,
        description = "The caller's matching tasks (a plain array)",
        body = [TaskOut],
        headers(
            ("X-Total-Count" = u64, description = "Matching tasks before limit/offset"),
            ("ETag" = String, description = "This answer's entity tag (the caller's version and the query)")
        )
    ), ListNotModified, BadQuery, Unauthorized, TooManyRequests, Unavailable, Unexpected),
    security(("bearer" = []))
)]
pub async fn list_tasks(
    tasks: UserTasks,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = ListQuery::parse(raw.as_deref())?;
    // Answered from the user's version alone, without reading tasks.
    if let Some(condition) = Condition::from_headers(&headers, header::IF_NONE_MATCH) {
        let held = condition.list_versions(tasks.owner(), &query);
        if condition == Condition::Any || !held.is_empty() {
            let version = tasks.version().await?;
            if condition == Condition::Any || held.contains(&version) {
                let tag = etag::list_tag(version, tasks.owner(), &query);
                return Ok(not_modified(etag::tag(&tag)));
            }
        }
    }
    let listing = tasks.list(&query).await?;
    let etag = etag::list_tag(listing.version, tasks.owner(), &query);
    // A page of at most `WHOLE_PAGE_LIMIT` tasks (the frontend's usual
    // request) is read whole: one write with a Content-Length, and the
    // database connection goes back at once. Longer lists are streamed.
    let body = match query.limit {
        Some(limit) if limit <= WHOLE_PAGE_LIMIT => Body::from(whole_array(listing.tasks).await?),
        _ => json_array(listing.tasks),
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static("x-total-count"),
                HeaderValue::from(listing.total),
            ),
            (header::ETAG, etag::tag(&etag)),
        ],
        body,
    )
        .into_response())
}

/// 304 with the current tag.
fn not_modified(etag: HeaderValue) -> Response {
    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
}

/// A task as a response body.
pub struct TaskJson(task::Model);

impl IntoResponse for TaskJson {
    fn into_response(self) -> Response {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, etag::task_tag(self.0.version)),
            ],
            TaskOut::from(self.0).to_json(),
        )
            .into_response()
    }
}

/// Pages up to this long are answered in one piece (see `list_tasks`).
const WHOLE_PAGE_LIMIT: u64 = 100;

/// A bounded page as one JSON array.
async fn whole_array(
    mut rows: impl Stream<Item = Result<task::Model, DbError>> + Unpin,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    let mut first = true;
    while let Some(task) = rows.next().await {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, &TaskOut::from(task?)).map_err(ApiError::internal)?;
    }
    out.push(b']');
    Ok(out)
}

/// The tasks as a JSON array, written as the rows arrive from the database:
/// memory stays flat however long the list is.
fn json_array(rows: impl Stream<Item = Result<task::Model, DbError>> + Send + 'static) -> Body {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let chunks = async_stream::try_stream! {
        let mut batches = Box::pin(rows.ready_chunks(128));
        let mut opened = false;
        while let Some(batch) = batches.next().await {
            let mut chunk = Vec::with_capacity(batch.len() * 256 + 1);
            for row in batch {
                let task = row.inspect_err(|e| {
                    tracing::warn!(error = %e, "listing failed mid-stream; the response is cut short");
                })?;
                chunk.push(if opened { b',' } else { b'[' });
                opened = true;
                serde_json::to_writer(&mut chunk, &TaskOut::from(task))?;
            }
            yield Bytes::from(chunk);
            // Rows already buffered never make the stream wait, so without
            // this one long listing would keep its worker thread (and every
            // other user's request queued on it) busy until it ends.
            tokio::task::yield_now().await;
        }
        yield Bytes::from_static(if opened { b"]" } else { b"[]" });
    };
    let chunks: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>> =
        Box::pin(chunks);
    Body::from_stream(chunks)
}

/// Create a task for the caller.
#[utoipa::path(
    post,
    path = "/api/tasks",
    tag = "tasks",
    params((
        "Idempotency-Key" = Option<String>,
        Header,
        description = "Makes retries safe: for 24 hours, a repeat with the same key and body gets the first response again and creates nothing. 1 to 255 visible ASCII characters.",
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7E]+$"
    )),
    request_body = NewTask,
    responses((
        status = 201,
        description = "Created",
        body = TaskOut,
        headers(
            ("Location" = String, description = "/api/tasks/{id} of the new task"),
            ("ETag" = String, description = "The task's entity tag")
        )
    ), JsonBody, CreateConflict, Unauthorized, TooManyRequests, Unavailable, Unexpected),
    security(("bearer" = []))
)]
pub async fn create_task(
    tasks: UserTasks,
    headers: HeaderMap,
    body: JsonObject,
) -> Result<Response, ApiError> {
    // A bad key and bad fields are reported together.
    let key = IdempotencyKey::from_headers(&headers);
    let body = body.required()?;
    let new = NewTask::from_json(&body);
    let (new, key) = match (new, key) {
        (Ok(new), Ok(key)) => (new, key),
        (new, key) => {
            let mut errors: Vec<FieldError> = key.err().into_iter().collect();
            if let Err(crate::error::Invalid(fields)) = new {
                errors.extend(fields);
            }
            return Err(ApiError::Validation(errors));
        }
    };
    let keyed = key.map(|key| KeyedRequest {
        key,
        fingerprint: Fingerprint::of(&body),
    });
    match tasks.create(new, keyed.as_ref()).await? {
        Created::New(task) => {
            let mut headers = HeaderMap::new();
            if let Ok(location) = HeaderValue::try_from(location(task.id)) {
                headers.insert(header::LOCATION, location);
            }
            Ok((StatusCode::CREATED, headers, TaskJson(task)).into_response())
        }
        Created::Replayed(first) => {
            let mut response = (
                StatusCode::from_u16(first.status).unwrap_or(StatusCode::CREATED),
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                first.body,
            )
                .into_response();
            if let Some(location) = first.location.and_then(|l| HeaderValue::try_from(l).ok()) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            if let Some(version) = first.task_version {
                let etag = etag::task_tag(version);
                response.headers_mut().insert(header::ETAG, etag);
            }
            Ok(response)
        }
    }
}

/// One of the caller's tasks.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(TaskId, (
        "If-None-Match" = Option<String>,
        Header,
        description = "Entity tags held (weak comparison), or `*`: 304 when one is the task's current one",
        nullable = false
    )),
    responses((
        status = 200,
        description = "The task",
        body = TaskOut,
        headers(("ETag" = String, description = "The task's entity tag"))
    ), TaskNotModified, NoSuchTask, Unauthorized, TooManyRequests, Unavailable, Unexpected),
    security(("bearer" = []))
)]
pub async fn get_task(
    tasks: UserTasks,
    TaskId { id }: TaskId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let held = Condition::from_headers(&headers, header::IF_NONE_MATCH);
    let task = tasks.get(id).await?.ok_or(ApiError::TaskNotFound)?;
    if let Some(held) = held
        && held.matches_weakly(&task.version.to_string())
    {
        return Ok(not_modified(etag::task_tag(task.version)));
    }
    Ok(TaskJson(task).into_response())
}

/// `If-Match` of a write of one task.
const IF_MATCH: &str = "The task's `ETag` (strong comparison), a list of tags, or `*`: when none is current, 412 and nothing changes; a value that is not `*` or a list of tags names none (412). Required with `REQUIRE_IF_MATCH=true` (else 428)";

/// Change any of title, description, completed; absent fields keep their value.
#[utoipa::path(
    put,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(TaskId, ("If-Match" = Option<String>, Header, description = IF_MATCH, nullable = false)),
    request_body = TaskChanges,
    responses((
        status = 200,
        description = "The updated task",
        body = TaskOut,
        headers(("ETag" = String, description = "The task's new entity tag"))
    ), NoSuchTask, WriteConditions, JsonBody, Unauthorized, TooManyRequests, Unavailable, Unexpected),
    security(("bearer" = []))
)]
pub async fn update_task(
    tasks: UserTasks,
    TaskId { id }: TaskId,
    condition: WriteCondition,
    body: JsonObject,
) -> Result<TaskJson, ApiError> {
    let changes = TaskChanges::from_json(&body.required()?)?;
    let task = tasks
        .update(id, changes, &condition.expected())
        .await?
        .ok_or(ApiError::TaskNotFound)?;
    Ok(TaskJson(task))
}

/// Delete one of the caller's tasks.
#[utoipa::path(
    delete,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(TaskId, ("If-Match" = Option<String>, Header, description = IF_MATCH, nullable = false)),
    responses((status = 200, description = "Deleted", body = DeletedOut), NoSuchTask, WriteConditions, Unauthorized, TooManyRequests, Unavailable, Unexpected),
    security(("bearer" = []))
)]
pub async fn delete_task(
    tasks: UserTasks,
    TaskId { id }: TaskId,
    condition: WriteCondition,
) -> Result<Json<DeletedOut>, ApiError> {
    match tasks.delete(id, &condition.expected()).await? {
        Some(_) => Ok(Json(DeletedOut { id, deleted: true })),
        None => Err(ApiError::TaskNotFound),
    }
}

/// Set `completed`, or toggle it when the body is absent or `{}`.
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}/complete",
    tag = "tasks",
    params(TaskId, ("If-Match" = Option<String>, Header, description = IF_MATCH, nullable = false)),
    request_body(content = Option<CompleteRequest>, description = "Optional: no body (or `{}`) toggles"),
    responses((
        status = 200,
        description = "The updated task",
        body = TaskOut,
        headers(("ETag" = String, description = "The task's new entity tag"))
    ), NoSuchTask, WriteConditions, CompleteBody, Unauthorized, TooManyRequests, Unavailable, Unexpected),
    security(("bearer" = []))
)]
pub async fn complete_task(
    tasks: UserTasks,
    TaskId { id }: TaskId,
    condition: WriteCondition,
    body: JsonObject,
) -> Result<TaskJson, ApiError> {
    let request = CompleteRequest::from_json(body.0.as_ref())?;
    let task = tasks
        .set_completed(id, request.completed, &condition.expected())
        .await?
        .ok_or(ApiError::TaskNotFound)?;
    Ok(TaskJson(task))
}
