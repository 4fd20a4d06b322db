//! `/api/tasks`: the six task endpoints. Each handler takes [`UserTasks`]
//! first, so the caller is authenticated before anything else is read.

use axum::extract::{FromRequestParts, RawQuery};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::routing::{get, patch};
use axum::{Json, Router};

use super::body::JsonObject;
use crate::error::ApiError;
use crate::models::input::{CompleteRequest, NewTask, TaskChanges};
use crate::models::list::ListQuery;
use crate::models::output::{DeletedOut, TaskOut};
use crate::state::AppState;
use crate::store::UserTasks;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/tasks", get(list_tasks).post(create_task))
        .route(
            "/api/tasks/{id}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route("/api/tasks/{id}/complete", patch(complete_task))
}

/// The `{id}` path segment. Anything but a positive 64-bit integer names no
/// task, so it is a 404 like any other missing task.
pub struct TaskId(i64);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::TaskNotFound)?;
        let digits_only = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
        match raw.parse::<i64>() {
            Ok(id) if digits_only && id > 0 => Ok(TaskId(id)),
            _ => Err(ApiError::TaskNotFound),
        }
    }
}

/// List the caller's tasks, newest first unless sorted otherwise.
#[utoipa::path(
    get,
    path = "/api/tasks",
    tag = "tasks",
    params(ListQuery),
    responses((
        status = 200,
        description = "The caller's matching tasks (a plain array)",
        body = [TaskOut],
        headers(("X-Total-Count" = u64, description = "Matching tasks before limit/offset"))
    ))
)]
pub async fn list_tasks(
    tasks: UserTasks,
    RawQuery(raw): RawQuery,
) -> Result<(HeaderMap, Json<Vec<TaskOut>>), ApiError> {
    let query = ListQuery::parse(raw.as_deref())?;
    let page = tasks.list(&query).await?;
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(page.total));
    Ok((
        headers,
        Json(page.tasks.into_iter().map(TaskOut::from).collect()),
    ))
}

/// Create a task for the caller.
#[utoipa::path(
    post,
    path = "/api/tasks",
    tag = "tasks",
    request_body = NewTask,
    responses((
        status = 201,
        description = "Created",
        body = TaskOut,
        headers(("Location" = String, description = "/api/tasks/{id} of the new task"))
    ))
)]
pub async fn create_task(
    tasks: UserTasks,
    body: JsonObject,
) -> Result<(StatusCode, HeaderMap, Json<TaskOut>), ApiError> {
    let new = NewTask::from_json(&body.required()?)?;
    let task = tasks.create(new).await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::try_from(format!("/api/tasks/{}", task.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(task.into())))
}

/// One of the caller's tasks.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, minimum = 1, description = "Task id")),
    responses((status = 200, description = "The task", body = TaskOut))
)]
pub async fn get_task(tasks: UserTasks, TaskId(id): TaskId) -> Result<Json<TaskOut>, ApiError> {
    let task = tasks.get(id).await?.ok_or(ApiError::TaskNotFound)?;
    Ok(Json(task.into()))
}

/// Change any of title, description, completed; absent fields keep their value.
#[utoipa::path(
    put,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, minimum = 1, description = "Task id")),
    request_body = TaskChanges,
    responses((status = 200, description = "The updated task", body = TaskOut))
)]
pub async fn update_task(
    tasks: UserTasks,
    TaskId(id): TaskId,
    body: JsonObject,
) -> Result<Json<TaskOut>, ApiError> {
    let changes = TaskChanges::from_json(&body.required()?)?;
    let task = tasks
        .update(id, changes)
        .await?
        .ok_or(ApiError::TaskNotFound)?;
    Ok(Json(task.into()))
}

/// Delete one of the caller's tasks.
#[utoipa::path(
    delete,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, minimum = 1, description = "Task id")),
    responses((status = 200, description = "Deleted", body = DeletedOut))
)]
pub async fn delete_task(
    tasks: UserTasks,
    TaskId(id): TaskId,
) -> Result<Json<DeletedOut>, ApiError> {
    match tasks.delete(id).await? {
        true => Ok(Json(DeletedOut { id, deleted: true })),
        false => Err(ApiError::TaskNotFound),
    }
}

/// Set `completed`, or toggle it when the body is absent or `{}`.
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}/complete",
    tag = "tasks",
    params(("id" = i64, Path, minimum = 1, description = "Task id")),
    request_body(content = Option<CompleteRequest>, description = "Optional: no body (or `{}`) toggles"),
    responses((status = 200, description = "The updated task", body = TaskOut))
)]
pub async fn complete_task(
    tasks: UserTasks,
    TaskId(id): TaskId,
    body: JsonObject,
) -> Result<Json<TaskOut>, ApiError> {
    let request = CompleteRequest::from_json(body.0.as_ref())?;
    let task = tasks
        .set_completed(id, request.completed)
        .await?
        .ok_or(ApiError::TaskNotFound)?;
    Ok(Json(task.into()))
}
