//! A stand-in for Better Auth's `/api/auth/jwks`, owned by the test: its key
//! set can be rotated, it counts fetches, and it can be taken down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Default)]
struct Shared {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
    last_fetch: Mutex<Option<Instant>>,
    down: AtomicBool,
}

pub struct JwksServer {
    /// What to put in `BETTER_AUTH_URL`.
    pub base_url: String,
    shared: Arc<Shared>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let shared = Arc::new(Shared {
            keys: Mutex::new(keys),
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/auth/jwks", get(jwks))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { base_url, shared }
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.shared.keys.lock().unwrap() = keys;
    }

    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// When the keys were last asked for.
    pub fn last_fetch(&self) -> Option<Instant> {
        *self.shared.last_fetch.lock().unwrap()
    }

    /// While down, every fetch answers 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    *shared.last_fetch.lock().unwrap() = Some(Instant::now());
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = shared.keys.lock().unwrap().clone();
    axum::Json(json!({ "keys": keys })).into_response()
}
