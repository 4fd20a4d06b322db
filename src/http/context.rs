//! Per-request context: who the caller turned out to be (for the request log
//! line and metrics) and the caller's turn under the per-user limits, which
//! is held until the response body has been sent.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::error::ErrorCause;
use crate::limits::Admission;

#[derive(Default)]
pub struct RequestContext {
    user_id: OnceLock<Arc<str>>,
    admission: Mutex<Option<Admission>>,
}

impl RequestContext {
    /// Called by the auth extractor once the token is verified.
    pub fn set_user(&self, user_id: &str) {
        let _ = self.user_id.set(Arc::from(user_id));
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user_id.get().map(|u| &**u)
    }

    /// Keeps the caller's turn until the response has been sent.
    pub fn hold(&self, admission: Admission) {
        if let Ok(mut slot) = self.admission.lock() {
            *slot = Some(admission);
        }
    }

    fn holds_admission(&self) -> bool {
        self.admission.lock().is_ok_and(|a| a.is_some())
    }
}

/// Gives each request its context and writes the request log line:
/// `request_id`, `method`, `route` (the template, e.g. `/api/tasks/{id}`),
/// `status`, `latency_ms`, `user_id`. Never the query string or a token.
pub async fn track(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let context = Arc::new(RequestContext::default());
    request.extensions_mut().insert(Arc::clone(&context));
    let method = request.method().clone();
    let route = route_of(&request);
    let request_id = request.headers().get("x-request-id").cloned();
    tracing::debug!(target: "todo_api::request", method = %method, route = %route, "started processing request");

    let response = next.run(request).await;

    let status = response.status().as_u16();
    let latency = started.elapsed();
    crate::metrics::record_request(&method, &route, status, latency);
    // One line per request; a 5xx carries its cause (warn for 503, error for 500).
    macro_rules! request_line {
        ($level:ident $(, $cause:expr)?) => {
            tracing::$level!(
                target: "todo_api::request",
                request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                method = %method,
                route = %route,
                status,
                latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3,
                user_id = context.user_id().unwrap_or("-"),
                $(error = %$cause,)?
                "request"
            )
        };
    }
    match response.extensions().get::<ErrorCause>() {
        Some(cause) if status == 500 => request_line!(error, cause.0),
        Some(cause) => request_line!(warn, cause.0),
        None => request_line!(info),
    }
    if context.holds_admission() {
        response.map(|body| {
            Body::new(HoldUntilSent {
                inner: body,
                context: Some(context),
            })
        })
    } else {
        response
    }
}

/// The route template the router matched; unmatched paths share one label
/// (a label per raw path would let anyone grow the metrics without bound).
fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

/// A response body that keeps the request context (and so the caller's turn)
/// until its last byte is sent, or until it is dropped.
struct HoldUntilSent {
    inner: Body,
    context: Option<Arc<RequestContext>>,
}

impl http_body::Body for HoldUntilSent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.context.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
