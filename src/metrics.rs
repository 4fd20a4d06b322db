//! Prometheus metrics, served on a second listener (`METRICS_ADDR`), never on
//! the public port. Off (and free) unless configured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::db::Db;
use crate::live::Hub;

static ENABLED: AtomicBool = AtomicBool::new(false);
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Request latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder (once; later calls share it).
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    ENABLED.store(true, Ordering::Release);
    describe();
    Ok(handle)
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the response head, by method and route template"
    );
    metrics::describe_gauge!("db_pool_connections", "Open database connections");
    metrics::describe_gauge!("db_pool_idle_connections", "Idle database connections");
    metrics::describe_gauge!("db_pool_max_connections", "Database pool size limit");
    metrics::describe_gauge!("live_streams", "Live event streams open on this instance");
    metrics::describe_counter!(
        "live_feed_reads_total",
        "Reads of the changes feed for live streams after they were woken (a user's streams share one)"
    );
    metrics::describe_counter!("jwks_fetches_total", "JWKS fetches, by outcome");
    metrics::describe_counter!(
        "requests_refused_total",
        "Requests refused by a limit, by reason"
    );
}

pub fn record_request(method: &Method, route: &str, status: u16, latency: Duration) {
    if !enabled() {
        return;
    }
    let method = method_label(method).to_owned();
    let route = route.to_owned();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(latency.as_secs_f64());
}

/// The method as a label: the standard ones as they are, any other `OTHER`.
/// A client may send any token as a method (`FOO1`, `FOO2`, ...), and each
/// distinct label is a series kept for the life of the process: labelled as
/// sent, anyone could grow the metrics without bound (as with raw paths,
/// see `http::context::route_of`).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

pub fn jwks_fetched(ok: bool) {
    if enabled() {
        metrics::counter!("jwks_fetches_total", "outcome" => if ok { "ok" } else { "error" })
            .increment(1);
    }
}

/// A request refused by a limit: `too_many_requests`, `task_limit_reached`, ...
pub fn refused(reason: &'static str) {
    if enabled() {
        metrics::counter!("requests_refused_total", "reason" => reason).increment(1);
    }
}

/// Live streams read the changes feed once, after a change woke them.
pub fn live_feed_read() {
    if enabled() {
        metrics::counter!("live_feed_reads_total").increment(1);
    }
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    db: Db,
    max_connections: u32,
    live: Arc<Hub>,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let (db, live) = (db.clone(), Arc::clone(&live));
            async move {
                metrics::gauge!("live_streams").set(live.streams() as f64);
                let (open, idle) = db.pool_status();
                metrics::gauge!("db_pool_connections").set(open as f64);
                metrics::gauge!("db_pool_idle_connections").set(idle as f64);
                metrics::gauge!("db_pool_max_connections").set(f64::from(max_connections));
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app).await
}
