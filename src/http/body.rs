//! Request bodies: a deadline (tower-http's `DeadlineBody`: a body not
//! complete `HTTP_BODY_TIMEOUT` after its head is a 408), and keep-alive
//! that survives an early answer.
//!
//! A request answered before its body was read (401, 404, 405, 413, 415)
//! leaves the rest of that body on the connection. hyper then drains only
//! what it has already received and otherwise closes the connection, at
//! times after the client sent its next request on it. So the unread rest
//! is drained here, up to the body limit and within the deadline, or else
//! the response says `Connection: close`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tower_http::timeout::DeadlineBody;

use crate::error::BODY_LIMIT;

/// Gives each request body (when there is one) its deadline, and drains an
/// unread rest after the response.
pub async fn deadline_and_drain(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.unwrap_or(0) == 0 && !headers.contains_key(header::TRANSFER_ENCODING) {
        return next.run(request).await;
    }
    let unread = Arc::new(Mutex::new(None));
    let (parts, body) = request.into_parts();
    let tracked = Tracked {
        inner: Some(Body::new(DeadlineBody::new(timeout, body))),
        unread: Arc::clone(&unread),
        read: 0,
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::new(tracked)))
        .await;
    let rest = unread.lock().ok().and_then(|mut slot| slot.take());
    if let Some((rest, read)) = rest
        && !drain(rest, read, declared).await
    {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    response
}

/// Reads and discards the rest of a body while the total stays within the
/// body limit (and its deadline); true when the body ended.
async fn drain(mut rest: Body, mut read: usize, declared: Option<u64>) -> bool {
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return false;
    }
    while read <= BODY_LIMIT {
        match rest.frame().await {
            None => return true,
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) => return false,
        }
    }
    false
}

/// Hands the body back to [`deadline_and_drain`] when it is dropped before its end.
struct Tracked {
    inner: Option<Body>,
    unread: Arc<Mutex<Option<(Body, usize)>>>,
    /// Bytes read so far.
    read: usize,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.inner = None,
            Poll::Ready(Some(Ok(frame))) => {
                self.read += frame.data_ref().map_or(0, Bytes::len);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take()
            && !rest.is_end_stream()
            && let Ok(mut slot) = self.unread.lock()
        {
            *slot = Some((rest, self.read));
        }
    }
}
