//! A Server-Sent Events reader for `GET /api/tasks/events`, as a browser's
//! `EventSource` parses the stream: frames split on a blank line, comments
//! (heartbeats) skipped.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A stream being read: its events, in order.
pub struct SseStream {
    bytes: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> SseStream {
        SseStream {
            bytes: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event (heartbeat comments skipped), within `within`; `None`
    /// when the stream ended.
    pub async fn next_within(&mut self, within: Duration) -> Option<Sse> {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?} (buffer {:?})", self.buffer))
    }

    /// The next event; `None` when the stream ended (or broke).
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in frame.lines() {
                    match line.split_once(':') {
                        Some(("", _)) | None => {}
                        Some(("id", v)) => id = Some(v.trim_start().to_owned()),
                        Some(("event", v)) => event = v.trim_start().to_owned(),
                        Some(("data", v)) => data.push_str(v.trim_start()),
                        Some(_) => {}
                    }
                }
                if data.is_empty() && id.is_none() && event == "message" {
                    continue; // a comment: heartbeat
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Sse { id, event, data });
            }
            match self.bytes.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Events up to and including `ready`.
    pub async fn until_ready(&mut self) -> (Vec<Sse>, Value) {
        let mut events = Vec::new();
        loop {
            let event = self
                .next_within(Duration::from_secs(10))
                .await
                .expect("stream open");
            if event.event == "ready" {
                return (events, event.data);
            }
            events.push(event);
        }
    }
}
