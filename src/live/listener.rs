//! The one connection per instance that hears every instance's writes,
//! this one's included (PostgreSQL `LISTEN`), open only while this instance
//! has streams: an idle Neon compute can still suspend. A direct URL, never
//! a transaction-mode pooler (which cannot hold a `LISTEN`).
//!
//! A connection that silently stops answering (a half-open TCP connection,
//! a hung server) would hear nothing and say nothing: the listener asks it
//! a trivial query every heartbeat, and one unanswered within the next
//! heartbeat counts as lost (found out within two heartbeats), so streams
//! poll the feed until a new connection listens.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::OptionFuture;
use tokio_postgres::AsyncMessage;

use super::{CHANNEL, Hub};
use crate::config::redact_url;
use crate::readiness::Readiness;

/// How long the connection stays after the last stream closed.
const LINGER: Duration = Duration::from_secs(30);

/// The listener's connection, as `pg_stat_activity` shows it.
pub const APPLICATION_NAME: &str = "todo-api live listener";

/// How long connecting and `LISTEN` may take at most (less with a short
/// check period).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs for as long as the process: connects while streams are open, and
/// checks the connection every `check`.
pub fn spawn(url: String, hub: Arc<Hub>, readiness: Arc<Readiness>, check: Duration) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            hub.wanted().await;
            if readiness.is_draining() {
                return;
            }
            match listen(&url, &hub, check).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, url = %redact_url(&url), "live events: listener connection lost; streams poll the feed until it is back");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// One connection: `LISTEN`, then every notification touches its user,
/// until the instance has had no stream for [`LINGER`] or the connection
/// fails (or leaves a check unanswered for `check`).
async fn listen(url: &str, hub: &Hub, check: Duration) -> Result<(), String> {
    let target = crate::tls::target(url)?;
    let mut config = target.config;
    // Named in `pg_stat_activity`, unless the URL names it.
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    // The driver's connect timeout bounds the TCP connect only: bound the
    // whole of connecting, logging in and `LISTEN`.
    let within = (check * 2).min(CONNECT_TIMEOUT);
    let setup = async {
        let (client, mut connection) = config
            .connect(target.tls)
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let statement = format!("LISTEN {CHANNEL}");
        let mut listen = Box::pin(client.batch_execute(&statement));
        // The connection's messages are only read while polled: drive both.
        loop {
            tokio::select! {
                done = &mut listen => { done.map_err(|e| e.to_string())?; break; }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("connection closed".into()),
                }
            }
        }
        drop(listen);
        Ok((client, messages))
    };
    let (client, mut messages) = tokio::time::timeout(within, setup)
        .await
        .map_err(|_| format!("not listening within {within:?}"))??;
    hub.set_hearing(true);
    // Anything written before `LISTEN` took effect is read now.
    hub.touch_all();
    tracing::info!("live events: listening for other instances' changes");
    let unwanted = unwanted(hub);
    tokio::pin!(unwanted);
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = None;
    let result = loop {
        tokio::select! {
            () = &mut unwanted => break Ok(()),
            _ = checks.tick(), if pending.is_none() => {
                pending = Some(Box::pin(tokio::time::timeout(check, client.batch_execute("SELECT 1"))));
            }
            answer = OptionFuture::from(pending.as_mut()), if pending.is_some() => {
                pending = None;
                match answer {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => break Err(e.to_string()),
                    Some(Err(_)) | None => break Err(format!("no answer to a check within {check:?}")),
                }
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => hub.touch(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e.to_string()),
                None => break Err("connection closed".into()),
            }
        }
    };
    hub.set_hearing(false);
    result
}

/// Resolves once the instance has had no stream for [`LINGER`].
async fn unwanted(hub: &Hub) {
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match (hub.streams(), quiet_since) {
            (0, Some(since)) if since.elapsed() >= LINGER => return,
            (0, Some(_)) => {}
            (0, None) => quiet_since = Some(std::time::Instant::now()),
            _ => quiet_since = None,
        }
    }
}
