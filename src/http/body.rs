//! Request bodies: a deadline (a body not complete `HTTP_BODY_TIMEOUT` after
//! its head is a 408), and keep-alive that survives an early answer.
//!
//! A request answered before its body was read (401, 404, 405, 413, 415)
//! would leave the rest of that body on the connection, where it would be
//! taken for the next request; hyper then closes the connection, sometimes
//! after the client already sent its next request on it. So the unread rest
//! is drained here, up to the body limit and within the deadline, or else the
//! response says `Connection: close`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::{ApiError, BODY_LIMIT};

/// The error a body read meets after its deadline; the JSON extractor turns it into 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not complete within the time allowed")]
pub struct BodyTimedOut;

/// Wraps each request body (when there is one) with the deadline and the
/// tracking that lets an unread rest be drained.
pub async fn guard(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let deadline = Instant::now() + timeout;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let unread = Arc::new(Mutex::new(None));
    let (parts, body) = request.into_parts();
    let tracked = Tracked {
        inner: Some(Deadline {
            inner: body,
            deadline: Box::pin(sleep_until(deadline)),
            read: 0,
            waiting_on_client: false,
        }),
        unread: Arc::clone(&unread),
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::new(tracked)))
        .await;
    let rest = unread.lock().ok().and_then(|mut slot| slot.take());
    let Some(rest) = rest else {
        return response;
    };
    if response.status() == StatusCode::SERVICE_UNAVAILABLE && rest.waiting_on_client {
        // The request timeout (`HTTP_REQUEST_TIMEOUT`, a 503) gave up on the
        // handler while it was waiting for the client to send the body: the
        // upload was too slow, which is the client's doing and a 408, exactly
        // as when the body deadline fires first. With the defaults both are
        // 30 s and land on the same timer tick, where tower-http's timeout
        // (polled before the handler) wins: without this, a slow body got 503.
        let mut timed_out = ApiError::RequestTimeout.into_response();
        timed_out
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return timed_out;
    }
    if !drain(rest, declared).await {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A body is announced by a non-zero `Content-Length` or by `Transfer-Encoding`.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Reads and discards the rest of a body while the total stays within the
/// body limit and the deadline; true when the body ended.
async fn drain(mut rest: Deadline, declared: Option<u64>) -> bool {
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return false;
    }
    loop {
        if rest.read > BODY_LIMIT {
            return false;
        }
        match rest.frame().await {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(_)) => return false,
        }
    }
}

/// A request body that fails with [`BodyTimedOut`] past its deadline.
struct Deadline {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    /// Bytes read so far.
    read: usize,
    /// The last read found no data yet: the reader is waiting for the client.
    waiting_on_client: bool,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting_on_client = polled.is_pending();
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut)))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Hands the body back to [`guard`] when it is dropped before its end.
struct Tracked {
    inner: Option<Deadline>,
    unread: Arc<Mutex<Option<Deadline>>>,
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
        if matches!(polled, Poll::Ready(None)) {
            // Fully read: nothing to hand back.
            self.inner = None;
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
            *slot = Some(rest);
        }
    }
}
