//! The one connection per instance that hears other instances' writes
//! (PostgreSQL `LISTEN`), open only while this instance has streams: an
//! idle Neon compute can still suspend. A direct URL, never a
//! transaction-mode pooler (which cannot hold a `LISTEN`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::{CHANNEL, Hub};
use crate::config::redact_url;
use crate::readiness::Readiness;

/// How long the connection stays after the last stream closed.
const LINGER: Duration = Duration::from_secs(30);

/// Runs for as long as the process: connects while streams are open.
pub fn spawn(url: String, hub: Arc<Hub>, readiness: Arc<Readiness>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            hub.wanted().await;
            if readiness.is_draining() {
                return;
            }
            match listen(&url, &hub).await {
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
/// fails.
async fn listen(url: &str, hub: &Hub) -> Result<(), String> {
    let target = crate::tls::target(url)?;
    let (client, mut connection) = target
        .config
        .connect(target.tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
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
    hub.set_hearing(true);
    // Anything written before `LISTEN` took effect is read now.
    hub.touch_all();
    tracing::info!("live events: listening for other instances' changes");
    let unwanted = unwanted(hub);
    tokio::pin!(unwanted);
    let result = loop {
        tokio::select! {
            () = &mut unwanted => break Ok(()),
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
