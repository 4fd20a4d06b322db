//! The HTTP/1.1 server: our own accept loop over hyper, for what a public
//! server needs and `axum::serve` does not offer.
//!
//! - A connection without a complete request head `HTTP_HEADER_TIMEOUT` after
//!   opening or after its previous response is closed (slowloris, idle keep-alive).
//! - A response the client stops reading is dropped after `HTTP_WRITE_TIMEOUT`
//!   without progress.
//! - Accept errors (out of file descriptors, aborted handshakes) are logged
//!   and waited out; they never stop the server.
//! - Shutdown: readiness 503 and still serving for `SHUTDOWN_DRAIN_SECONDS`
//!   (responses say `Connection: close`), then the listener closes (the
//!   connections already in its backlog are taken in first, not reset),
//!   idle connections close (a new one first gets a second to send its
//!   request), in-flight requests finish, and after `SHUTDOWN_TIMEOUT`
//!   whatever is left is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

use crate::config::Settings;
use crate::readiness::Readiness;

/// Pause after an accept error that more accepts would only repeat
/// (no file descriptors left): connections closing will free some.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);

/// How long after it was accepted a connection that has sent no request yet
/// is kept at shutdown, for the request its client is about to send.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Most connections taken from the accept backlog at shutdown (the kernel
/// caps a backlog at `net.core.somaxconn`, 4096 by default).
const MAX_BACKLOG: usize = 4096;

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down as
/// described above. Returns once every connection is closed or dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &Settings,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.server.http_header_timeout)
        .keep_alive(true);
    let connections = Connections {
        http,
        app,
        readiness: Arc::clone(&readiness),
        write_timeout: settings.server.http_write_timeout,
        stopping: watch::channel(()).0,
        errors: AcceptErrors::default(),
    };
    let mut connections = connections;
    tokio::pin!(shutdown);

    // Serving.
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => connections.accepted(accepted).await,
        }
    }

    // Draining: not ready, still serving.
    readiness.start_draining();
    let (drain, shutdown_timeout) = (
        settings.operations.shutdown_drain_seconds,
        settings.operations.shutdown_timeout,
    );
    if !drain.is_zero() {
        tracing::info!(
            seconds = drain.as_secs_f64(),
            "draining: readiness 503, still serving"
        );
        let drained = tokio::time::sleep(drain);
        tokio::pin!(drained);
        loop {
            tokio::select! {
                biased;
                () = &mut drained => break,
                accepted = listener.accept() => connections.accepted(accepted).await,
            }
        }
    }

    // Closing.
    connections.accept_backlog(listener);
    let open = connections.stopping.receiver_count();
    tracing::info!(
        open_connections = open,
        "listener closed; finishing in-flight requests"
    );
    connections.stopping.send_replace(());
    match tokio::time::timeout(shutdown_timeout, connections.stopping.closed()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            timeout_s = shutdown_timeout.as_secs_f64(),
            "shutdown timeout: dropping the connections still open"
        ),
    }
    Ok(())
}

struct Connections {
    http: http1::Builder,
    app: Router,
    readiness: Arc<Readiness>,
    write_timeout: Duration,
    /// Set once to start the shutdown; each connection holds a receiver.
    stopping: watch::Sender<()>,
    errors: AcceptErrors,
}

impl Connections {
    async fn accepted(&mut self, accepted: std::io::Result<(TcpStream, std::net::SocketAddr)>) {
        match accepted {
            Ok((stream, _peer)) => self.spawn(stream),
            Err(err) => {
                let exhausted = is_exhaustion(&err);
                self.errors.log(&err, exhausted);
                if exhausted {
                    tokio::time::sleep(EXHAUSTED_BACKOFF).await;
                }
            }
        }
    }

    /// Accepts, without waiting, the connections the kernel has already
    /// completed, then closes the listener. Closing it with them still queued
    /// would reset them, after their clients had sent a request.
    fn accept_backlog(&mut self, listener: TcpListener) {
        // Asking the kernel directly: tokio's `accept` answers "not ready"
        // without a syscall until the reactor has seen the last arrivals.
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot take in the accept backlog");
                return;
            }
        };
        // Bounded: clients connecting faster than this loop would hold it forever.
        for _ in 0..MAX_BACKLOG {
            match listener.accept() {
                Ok((stream, _peer)) => {
                    match stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(stream))
                    {
                        Ok(stream) => self.spawn(stream),
                        Err(err) => {
                            tracing::debug!(error = %err, "cannot serve a queued connection")
                        }
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(err) => {
                    self.errors.log(&err, is_exhaustion(&err));
                    break;
                }
            }
        }
    }

    fn spawn(&self, stream: TcpStream) {
        // Small JSON responses: do not wait to coalesce them.
        let _ = stream.set_nodelay(true);
        let first_request_due = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.write_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let app = self.app.clone();
        let readiness = Arc::clone(&self.readiness);
        let served = Arc::new(AtomicBool::new(false));
        let service = hyper::service::service_fn({
            let served = Arc::clone(&served);
            move |request: Request<Incoming>| {
                served.store(true, Ordering::Release);
                let app = app.clone();
                let readiness = Arc::clone(&readiness);
                async move {
                    let mut response = match app.oneshot(request.map(Body::new)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    // While draining, clients (and load balancers) should reconnect elsewhere.
                    if readiness.is_draining() {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let connection = self.http.serve_connection(io, service);
        // Held until the connection ends: the server waits for every one.
        let mut stopping = self.stopping.subscribe();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopping.changed() => 'stopping: {
                    // hyper's graceful shutdown closes at once a connection
                    // that has read nothing yet, and with it the request its
                    // client is sending right now (the client sees it fail
                    // after connecting: e.g. every connection just taken from
                    // the backlog). So a new connection first gets a moment
                    // for its first request; while shutting down, every
                    // response says `Connection: close`, so it ends after
                    // that one. Idle keep-alive connections close at once.
                    // (hyper-util's GracefulShutdown watches connections the
                    // same way but has no such grace, hence our own watch.)
                    if !served.load(Ordering::Acquire) {
                        tracing::debug!("shutting down: waiting for the first request of a new connection");
                        tokio::select! {
                            ended = connection.as_mut() => break 'stopping ended,
                            () = tokio::time::sleep_until(first_request_due) => {}
                        }
                    }
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            drop(stopping);
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}

/// EMFILE/ENFILE/ENOBUFS/ENOMEM: retrying at once would spin.
fn is_exhaustion(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Logs accept errors at most once a second, with how many were skipped.
#[derive(Default)]
struct AcceptErrors {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn log(&mut self, err: &std::io::Error, exhausted: bool) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        if exhausted {
            tracing::error!(error = %err, suppressed = self.suppressed, "cannot accept connections: out of file descriptors or memory; still serving the open ones");
        } else {
            tracing::warn!(error = %err, suppressed = self.suppressed, "accept failed");
        }
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Raises the open-file soft limit to the hard limit: each connection is a
/// file descriptor, and the usual soft limit of 1024 is easy to exhaust.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "could not raise the open-file limit"),
    }
}
