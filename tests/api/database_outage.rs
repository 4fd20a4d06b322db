//! The database going away mid-run: requests get 503 (told to retry, never a
//! silent loss), the server stays up, and it recovers by itself.
//!
//! PostgreSQL is reached through a TCP proxy owned by the test, so "stopping
//! the database" never touches the shared server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::pg_cluster::{PgCluster, StopMode};
use crate::common::{Backend, TestApp, TestDb, error_code, json, send};
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

/// How the database goes away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Stopped: connections refused at once.
    Stopped,
    /// Hung with its connections open (a suspended VM): nothing answers.
    Frozen,
}

/// 40 writers keep creating (each as its own user, honouring Retry-After)
/// while the database goes away: `/health/ready` answers 503 within a
/// second every time, so a load balancer's 1–2 s probe learns it; once the
/// database is back it is 200 again and the writers' creates succeed. No
/// create is ever answered anything but 201 or 503.
async fn readiness_under_load(outage: Outage) {
    let Some(cluster) = PgCluster::start_new().await else {
        return;
    };
    let app = Arc::new(
        TestApp::builder(Backend::Postgres)
            .database(TestDb::external(cluster.url()))
            .start()
            .await
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (app, client, stop, created) = (
            Arc::clone(&app),
            client.clone(),
            Arc::clone(&stop),
            Arc::clone(&created),
        );
        writers.spawn(async move {
            let token = app.token(&format!("writer-{i}"));
            let mut unexpected = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let response = client
                    .post(app.url("/api/tasks"))
                    .bearer_auth(&token)
                    .json(&json!({"title": "under load"}))
                    .send()
                    .await;
                match response.map(|r| r.status()) {
                    Ok(StatusCode::CREATED) => {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                        tokio::time::sleep(Duration::from_secs(1)).await; // Retry-After: 1
                    }
                    other => unexpected.push(format!("{other:?}")),
                }
            }
            unexpected
        });
    }
    let wait_for_creates = |at_least: usize| {
        let created = Arc::clone(&created);
        async move {
            let started = Instant::now();
            while created.load(Ordering::SeqCst) < at_least {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "creates stalled"
                );
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for_creates(100).await;

    match outage {
        Outage::Stopped => cluster.stop(StopMode::Immediate).await.unwrap(),
        Outage::Frozen => assert!(cluster.freeze() > 0),
    }
    let probe = || async {
        let started = Instant::now();
        let (status, _) = send(client.get(app.url("/health/ready"))).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{outage:?}: /health/ready took {took:?}"
        );
        status
    };
    // A statement answered just before the outage counts for a moment.
    let outage_began = Instant::now();
    while probe().await != StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            outage_began.elapsed() < Duration::from_secs(2),
            "{outage:?}: still ready"
        );
    }
    for _ in 0..8 {
        assert_eq!(probe().await, StatusCode::SERVICE_UNAVAILABLE, "{outage:?}");
    }

    match outage {
        Outage::Stopped => cluster.start().await.unwrap(),
        Outage::Frozen => assert!(cluster.thaw() > 0),
    }
    app.wait_for_readiness(StatusCode::OK, Duration::from_secs(30))
        .await;
    let before = created.load(Ordering::SeqCst);
    wait_for_creates(before + 40).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(unexpected) = writers.join_next().await {
        let unexpected = unexpected.unwrap();
        assert!(unexpected.is_empty(), "{outage:?}: {unexpected:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_503_within_a_second_under_load_with_the_database_stopped() {
    readiness_under_load(Outage::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_503_within_a_second_under_load_with_the_database_hung() {
    readiness_under_load(Outage::Frozen).await;
}
