//! `GET /api/tasks/changes`: the caller's changes after a cursor, for a
//! copy of the list to catch up exactly (deletes included).

use axum::Json;
use axum::extract::RawQuery;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::errors::{FeedCursor, TooManyRequests, Unauthorized, Unavailable, Unexpected};
use crate::error::ApiError;
use crate::models::changes::FeedQuery;
use crate::models::output::{ChangeOut, ChangesOut, TaskOut};
use crate::state::AppState;
use crate::store::{Change, UserTasks};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_changes))
}

/// The caller's changes after `since`, ascending by version, each task at
/// most once (its latest state), deletes as tombstones.
#[utoipa::path(
    get,
    path = "/api/tasks/changes",
    tag = "tasks",
    params(FeedQuery),
    responses(
        (status = 200, description = "Changes after `since`; ask again with `cursor`, at once while `has_more`", body = ChangesOut),
        FeedCursor, Unauthorized, TooManyRequests, Unavailable, Unexpected
    ),
    security(("bearer" = []))
)]
pub async fn list_changes(
    tasks: UserTasks,
    RawQuery(raw): RawQuery,
) -> Result<Json<ChangesOut>, ApiError> {
    let query = FeedQuery::parse(raw.as_deref())?;
    let page = tasks.changes(query.since, query.limit).await?;
    let changes = page
        .changes
        .into_iter()
        .map(|change| match change {
            Change::Upsert(task) => ChangeOut::Upsert {
                version: task.version,
                task: TaskOut::from(task),
            },
            Change::Delete { id, version } => ChangeOut::Delete { version, id },
        })
        .collect();
    Ok(Json(ChangesOut {
        changes,
        cursor: page.cursor.to_string(),
        has_more: page.has_more,
    }))
}
