//! The database going away mid-run: requests get 503 (told to retry, never a
//! silent loss), the server stays up, and it recovers by itself.
//!
//! PostgreSQL is reached through a TCP proxy owned by the test, so "stopping
//! the database" never touches the shared server.

use std::net::SocketAddr;

use crate::common::{TestApp, TestDb, error_code, json, send};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards connections from a loopback port to PostgreSQL until dropped.
struct Proxy {
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(Proxy { tasks })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops the listener and every open connection.
        self.tasks.abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_recovers() {
    // The database itself is a fresh one; the app reaches it through the proxy.
    let Some(db) = TestDb::create(crate::common::Backend::Postgres).await else {
        return;
    };
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream: SocketAddr =
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
            .parse()
            .unwrap();
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = probe.local_addr().unwrap();
    drop(probe);
    let mut proxy = Some(Proxy::start(proxy_addr, upstream).await.unwrap());
    url.set_port(Some(proxy_addr.port())).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();

    let Some(app) = TestApp::builder(crate::common::Backend::Postgres)
        .database_url(url.to_string())
        .start()
        .await
    else {
        return;
    };
    let alice = app.token("alice");
    let task = app
        .create(&alice, json!({"title": "before the outage"}))
        .await;

    // Outage.
    proxy.take();
    for (method, path, body) in [
        (Method::GET, "/api/tasks".to_string(), None),
        (
            Method::POST,
            "/api/tasks".to_string(),
            Some(json!({"title": "during the outage"})),
        ),
        (
            Method::PATCH,
            format!("/api/tasks/{}/complete", task["id"]),
            None,
        ),
        (Method::GET, "/health/ready".to_string(), None),
    ] {
        let mut req = app.request(method.clone(), &path, &alice);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            Some("1"),
            "{method} {path}"
        );
        let (status, body) = json(response).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {body}"
        );
        assert_eq!(error_code(&body), "service_unavailable");
        let text = body.to_string().to_lowercase();
        assert!(
            !text.contains("select") && !text.contains("postgres") && !text.contains("127.0.0.1"),
            "{text}"
        );
    }
    // The server itself is alive.
    let (status, _) = send(app.client.get(app.url("/health"))).await;
    assert_eq!(status, StatusCode::OK);

    // Recovery, with no restart.
    let _proxy = Proxy::start(proxy_addr, upstream).await.unwrap();
    app.wait_for_readiness(StatusCode::OK, std::time::Duration::from_secs(15))
        .await;
    let (status, list) = app.list(&alice, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list,
        json!([task]),
        "the write refused during the outage did not half-happen; the toggle neither"
    );
    app.create(&alice, json!({"title": "after the outage"}))
        .await;
    drop(db);
}
