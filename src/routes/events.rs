//! `GET /api/tasks/events`: the caller's changes as Server-Sent Events,
//! live. Each event is a change of the feed (`id:` its cursor, `event:`
//! `upsert` or `delete`, `data:` the feed's change object). With
//! `Last-Event-ID` or `?since=`, the changes missed come first, then
//! `event: ready`; without, `ready` at once with the current cursor.
//!
//! The stream subscribes before it reads the feed, and every read starts
//! at the last cursor sent: nothing between "subscribed" and "listening"
//! is lost, nothing is sent twice. It takes none of the user's in-flight
//! slots, reads from the database only when woken (and one page at a
//! time, as the client takes them: a reader that stops costs no memory
//! and is dropped by the write timeout), ends with `event: token_expired`
//! when the token does, and at once when the instance starts draining.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, TryFutureExt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::errors::{FeedCursor, TooManyRequests, Unauthorized, Unavailable, Unexpected};
use super::extract::AuthUser;
use crate::error::ApiError;
use crate::limits::{Refusal, Refused};
use crate::live::Full;
use crate::models::changes::{FeedQuery, cursor};
use crate::models::output::{ChangeOut, TaskOut};
use crate::state::AppState;
use crate::store::{Change, Changes, StoreError, UserTasks};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Changes read per database round trip while catching up.
const PAGE: u16 = 200;

/// The caller's changes, live (Server-Sent Events).
#[utoipa::path(
    get,
    path = "/api/tasks/events",
    tag = "tasks",
    params(
        ("since" = Option<String>, Query, description = "A cursor to resume from (as `Last-Event-ID`)", pattern = r"^[0-9]{1,18}$"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id:` of the last event received: resume after it (wins over `since`)", nullable = false)
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: upsert|delete` (`id:` the change's cursor, `data:` the feed's change object), `event: ready` (`data: {\"cursor\"}`) once caught up, `event: token_expired` at the token's expiry, comments as heartbeats", content_type = "text/event-stream", body = String),
        FeedCursor, Unauthorized, TooManyRequests, Unavailable, Unexpected
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    AuthUser(identity): AuthUser,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if !state.readiness().is_started() || state.readiness().is_draining() {
        return Err(ApiError::unavailable("not serving live events now"));
    }
    let since = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(cursor).ok_or_else(|| {
            ApiError::field("Last-Event-ID", "must be an event id this API sent")
        })?),
        None => {
            let asked = raw.as_deref().is_some_and(|q| {
                url::form_urlencoded::parse(q.as_bytes()).any(|(name, _)| name == "since")
            });
            let query = FeedQuery::parse(raw.as_deref())?;
            asked.then_some(query.since)
        }
    };
    // Either cap (the user's, the instance's): the same answer.
    let subscription = state
        .live()
        .subscribe(&identity.user_id)
        .map_err(|_: Full| {
            ApiError::TooManyRequests(Refused {
                reason: Refusal::StreamsFull,
                retry_after: Duration::from_secs(5),
            })
        })?;
    let tasks = state.store_for(&identity);
    // Subscribed: read where the stream starts (a cursor the feed refuses is
    // a 410 before the stream; none: the current version).
    let first = match since {
        Some(since) => tasks.changes(since, PAGE).await?,
        None => Changes {
            changes: Vec::new(),
            cursor: tasks.version().await?,
            has_more: false,
        },
    };
    let expires_in = Duration::from_secs_f64(
        (identity.expires_at - crate::auth::unix_now()).clamp(0.0, 365.0 * 86_400.0),
    );
    let readiness = std::sync::Arc::clone(state.readiness());
    let stream = live(tasks, subscription, first, expires_in, readiness);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.heartbeat()).text(""))
        .into_response())
}

/// The events: the first page, the rest of the catch-up, `ready`, then each
/// change as the user's signal wakes the stream.
fn live(
    tasks: UserTasks,
    mut subscription: crate::live::Subscription,
    first: Changes,
    expires_in: Duration,
    readiness: std::sync::Arc<crate::readiness::Readiness>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    async_stream::stream! {
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut cursor = first.cursor;
        let mut more = first.has_more;
        for change in first.changes {
            yield Ok(event(change));
        }
        // Catch up, one page per round trip.
        while more {
            // Boxed, as the read below: an idle stream keeps only its state.
            match Box::pin(tasks.changes(cursor, PAGE)).await {
                Ok(page) => {
                    cursor = page.cursor;
                    more = page.has_more;
                    for change in page.changes {
                        yield Ok(event(change));
                    }
                }
                Err(e) => { yield Ok(failed(&e)); return; }
            }
        }
        yield Ok(Event::default().event("ready").data(format!("{{\"cursor\":\"{cursor}\"}}")));
        // The last read failed for want of the database: read again shortly,
        // whether or not a later write wakes the stream.
        let mut retry = false;
        loop {
            tokio::select! {
                () = subscription.changed() => {}
                () = tokio::time::sleep(crate::live::POLL_WHILE_DEAF), if retry => {}
                () = &mut expiry => {
                    yield Ok(Event::default().event("token_expired").data("{}"));
                    return;
                }
                () = readiness.draining() => return,
            }
            retry = false;
            loop {
                // One read per user and instance: the user's other streams
                // take this page too (see `Subscription::page`).
                let read = || {
                    crate::metrics::live_feed_read();
                    tasks.changes(cursor, PAGE).map_ok(Rendered::from)
                };
                match Box::pin(subscription.page(cursor, read)).await {
                    Ok(page) => {
                        // A page shared from an earlier cursor holds changes
                        // this stream has sent: only those after its cursor.
                        for (_, event) in page.events.iter().filter(|(v, _)| *v > cursor) {
                            yield Ok(event.clone());
                        }
                        cursor = cursor.max(page.cursor);
                        if !page.has_more { break; }
                    }
                    // Unavailable for a moment: from the same cursor again,
                    // shortly. Anything else ends the stream.
                    Err(StoreError::Db(e)) if e.failure() == Some(crate::db::Failure::Unavailable) => {
                        retry = true;
                        break;
                    }
                    Err(e) => { yield Ok(failed(&e)); return; }
                }
            }
        }
    }
}

/// A page of the feed as events, rendered once for all of a user's streams.
struct Rendered {
    /// Each change's version and event.
    events: Vec<(i64, Event)>,
    cursor: i64,
    has_more: bool,
}

impl crate::live::Page for Rendered {
    fn complete(&self) -> bool {
        !self.has_more
    }
}

impl From<Changes> for Rendered {
    fn from(page: Changes) -> Rendered {
        Rendered {
            events: page
                .changes
                .into_iter()
                .map(|change| (change.version(), event(change)))
                .collect(),
            cursor: page.cursor,
            has_more: page.has_more,
        }
    }
}

fn event(change: Change) -> Event {
    let version = change.version();
    let (name, out) = match change {
        Change::Upsert(task) => (
            "upsert",
            ChangeOut::Upsert {
                version,
                task: TaskOut::from(task),
            },
        ),
        Change::Delete { id, version } => ("delete", ChangeOut::Delete { version, id }),
    };
    let data = serde_json::to_string(&out).unwrap_or_default();
    Event::default()
        .id(version.to_string())
        .event(name)
        .data(data)
}

/// The stream cannot go on (its cursor expired, or a bug): the client
/// reconnects, and the feed's answer tells it what to do.
fn failed(err: &StoreError) -> Event {
    tracing::warn!(error = %err, "live events: stream ended");
    let code = match err {
        StoreError::CursorExpired => "cursor_expired",
        _ => "internal_error",
    };
    Event::default()
        .event("error")
        .data(format!("{{\"code\":\"{code}\"}}"))
}
