//! PostgreSQL faults under load, on a private cluster the test owns (see
//! `common::pg_cluster`), while 40 writers create tasks and retry with their
//! `Idempotency-Key` as the contract tells a client to: restarts (fast, then
//! immediate: a crash) and a stop of a few seconds; and every connection cut
//! at once, again and again, with PostgreSQL still running (so some commits
//! happen whose answer never reaches the service); and PostgreSQL hanging
//! (suspended) for 15 s with its connections open. Nothing acknowledged is
//! lost, nothing is created twice, every answer is 201, 503 or 409, no
//! request hangs, and the service recovers by itself.
//!
//! Also: `statement_timeout` really bounds a blocked statement on PostgreSQL,
//! and a write that cannot get SQLite's write lock answers 503, never 500.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Client, Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::common::pg_cluster::{PgCluster, StopMode};
use crate::common::tcp_proxy::TcpProxy;
use crate::common::{Backend, TestApp, TestDb, error_code, json};

const USERS: usize = 10;
/// Four per user: the default `MAX_IN_FLIGHT_PER_USER`, so no request waits
/// in the per-user queue and every latency measured is the database's doing.
const WRITERS_PER_USER: usize = 4;
/// `DB_STATEMENT_TIMEOUT` of the load tests.
const STATEMENT_TIMEOUT: &str = "3";
/// No single request may take longer. A create acquires a connection (at
/// most 3 s, `ACQUIRE_TIMEOUT`, also while the database is down) and runs a
/// few short statements, each bounded by the 3 s statement timeout: the
/// server's own deadline is 8 s. Under 15 s, the freeze's length, so a
/// request sent as the database froze and not bounded would exceed it.
const REQUEST_BOUND: Duration = Duration::from_secs(12);
/// Attempts of one logical create before its writer gives up (a violation).
const MAX_ATTEMPTS: u32 = 100;
/// Readiness must be back this soon after the database is.
const READY_BOUND: Duration = Duration::from_secs(10);

/// What the writers saw, as counters.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    created: AtomicU64,
    replayed: AtomicU64,
    unavailable: AtomicU64,
    conflicts: AtomicU64,
    transport_errors: AtomicU64,
    retries: AtomicU64,
}

/// The counters at one moment, or their difference over a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    requests: u64,
    created: u64,
    replayed: u64,
    unavailable: u64,
    conflicts: u64,
    transport_errors: u64,
    retries: u64,
}

impl Counts {
    fn tally(&self) -> Tally {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Tally {
            requests: get(&self.requests),
            created: get(&self.created),
            replayed: get(&self.replayed),
            unavailable: get(&self.unavailable),
            conflicts: get(&self.conflicts),
            transport_errors: get(&self.transport_errors),
            retries: get(&self.retries),
        }
    }
}

impl Tally {
    fn since(self, earlier: Tally) -> Tally {
        Tally {
            requests: self.requests - earlier.requests,
            created: self.created - earlier.created,
            replayed: self.replayed - earlier.replayed,
            unavailable: self.unavailable - earlier.unavailable,
            conflicts: self.conflicts - earlier.conflicts,
            transport_errors: self.transport_errors - earlier.transport_errors,
            retries: self.retries - earlier.retries,
        }
    }

    fn acknowledged(&self) -> u64 {
        self.created + self.replayed
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests: {} created (201), {} replayed (201 of an earlier attempt), {} 503, \
             {} 409 idempotency_conflict, {} transport errors; {} retries",
            self.requests,
            self.created,
            self.replayed,
            self.unavailable,
            self.conflicts,
            self.transport_errors,
            self.retries
        )
    }
}

/// Shared by the writers.
struct Shared {
    counts: Counts,
    /// Anything but 201, 503 (with `Retry-After`) or 409
    /// `idempotency_conflict`; a request over the bound; a create given up.
    violations: Mutex<Vec<String>>,
    /// Every acknowledged create: title -> (id, user).
    acknowledged: Mutex<HashMap<String, (i64, String)>>,
    latencies_ms: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

impl Shared {
    async fn violation(&self, what: String) {
        self.violations.lock().await.push(what);
    }
}

/// One writer: logical creates one after the other until told to stop, each
/// with a unique title and its own key, retried with the same key and body
/// until acknowledged.
async fn writer(app: Arc<TestApp>, client: Client, user: String, id: usize, shared: Arc<Shared>) {
    let token = app.token(&user);
    let mut n = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        n += 1;
        let title = format!("writer {id} task {n}");
        let key = format!("w{id}-{n}-{:08x}", rand::random::<u32>());
        let body = json!({"title": title, "description": format!("by writer {id}")});
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > MAX_ATTEMPTS {
                shared
                    .violation(format!(
                        "{title}: not acknowledged after {MAX_ATTEMPTS} attempts"
                    ))
                    .await;
                return;
            }
            if attempt > 1 {
                shared.counts.retries.fetch_add(1, Ordering::Relaxed);
                // Short backoff: 50, 100, ... 400 ms.
                let backoff = 50 * u64::from((attempt - 1).min(8));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            let sent_at = Utc::now();
            let started = Instant::now();
            let result = async {
                let response = client
                    .post(app.url("/api/tasks"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", &key)
                    .json(&body)
                    .send()
                    .await?;
                let retry_after = response.headers().contains_key("retry-after");
                let status = response.status();
                Ok::<_, reqwest::Error>((status, retry_after, response.text().await?))
            }
            .await;
            let elapsed = started.elapsed();
            shared.counts.requests.fetch_add(1, Ordering::Relaxed);
            shared
                .latencies_ms
                .lock()
                .await
                .push(elapsed.as_millis() as u64);
            if elapsed > REQUEST_BOUND {
                shared
                    .violation(format!("{title}: attempt {attempt} took {elapsed:?}"))
                    .await;
            }
            let Ok((status, retry_after, text)) = result else {
                // The server stays up, but a kept-alive connection it has
                // just closed can fail a send: retried like a 503.
                shared
                    .counts
                    .transport_errors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match status {
                StatusCode::CREATED => {
                    let task_id = parsed["id"].as_i64();
                    let created_at = parsed["created_at"]
                        .as_str()
                        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
                    let (Some(task_id), Some(created_at)) = (task_id, created_at) else {
                        shared.violation(format!("{title}: 201 {text}")).await;
                        return;
                    };
                    if parsed["title"] != title {
                        shared
                            .violation(format!("{title}: 201 of another task: {text}"))
                            .await;
                    }
                    // A task created before this attempt was sent is the
                    // work of an earlier attempt whose answer was lost: a replay.
                    if created_at < sent_at {
                        shared.counts.replayed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.counts.created.fetch_add(1, Ordering::Relaxed);
                    }
                    let previous = shared
                        .acknowledged
                        .lock()
                        .await
                        .insert(title.clone(), (task_id, user.clone()));
                    if previous.is_some() {
                        shared
                            .violation(format!("{title}: acknowledged twice"))
                            .await;
                    }
                    break;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    shared.counts.unavailable.fetch_add(1, Ordering::Relaxed);
                    if !retry_after || parsed["code"] != "service_unavailable" {
                        shared
                            .violation(format!("503 without Retry-After or its code: {text}"))
                            .await;
                    }
                }
                StatusCode::CONFLICT if parsed["code"] == "idempotency_conflict" => {
                    shared.counts.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                // Retried all the same: a 500 may still have committed, and
                // the end-state checks must see what happened.
                other => {
                    shared
                        .violation(format!("{title}: attempt {attempt}: {other} {text}"))
                        .await
                }
            }
        }
    }
}

/// The writers, and the phases of the test as they saw them.
struct Load {
    app: Arc<TestApp>,
    client: Client,
    shared: Arc<Shared>,
    writers: Vec<JoinHandle<()>>,
    started: Instant,
    mark: (Tally, Instant),
    phases: Vec<(String, Duration, Tally)>,
    timings: Vec<(String, Duration)>,
}

impl Load {
    fn start(app: TestApp) -> Load {
        let app = Arc::new(app);
        let shared = Arc::new(Shared {
            counts: Counts::default(),
            violations: Mutex::new(Vec::new()),
            acknowledged: Mutex::new(HashMap::new()),
            latencies_ms: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        // Generous: a hang shows up as a latency over the bound, not as an error.
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let writers = (0..USERS * WRITERS_PER_USER)
            .map(|w| {
                tokio::spawn(writer(
                    Arc::clone(&app),
                    client.clone(),
                    format!("fault-user-{}", w / WRITERS_PER_USER),
                    w,
                    Arc::clone(&shared),
                ))
            })
            .collect();
        Load {
            app,
            client,
            shared,
            writers,
            started: Instant::now(),
            mark: (Tally::default(), Instant::now()),
            phases: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// Waits until `more` further creates were acknowledged (at most 30 s).
    async fn until_acknowledged(&self, more: u64) {
        let target = self.shared.counts.tally().acknowledged() + more;
        let started = Instant::now();
        while self.shared.counts.tally().acknowledged() < target
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the current phase of the test under this name.
    fn phase(&mut self, name: &str) {
        let now = self.shared.counts.tally();
        self.phases
            .push((name.into(), self.mark.1.elapsed(), now.since(self.mark.0)));
        self.mark = (now, Instant::now());
    }

    fn timing(&mut self, what: &str, took: Duration) {
        self.timings.push((what.into(), took));
    }

    async fn ready_status(&self) -> StatusCode {
        self.client
            .get(self.app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Polls `/health/ready` every 100 ms until it answers 200; records how
    /// long that took.
    async fn wait_ready(&mut self, what: &str) {
        let started = Instant::now();
        loop {
            let ok = self
                .client
                .get(self.app.url("/health/ready"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ok {
                break;
            }
            assert!(
                started.elapsed() < READY_BOUND,
                "{what}: /health/ready not 200 within {READY_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.timing(what, started.elapsed());
    }

    /// Stops the writers (each finishes its logical create), reports, and
    /// checks every answer and the database's end state at `db_url`.
    async fn finish(mut self, name: &str, db_url: &str) {
        self.shared.stop.store(true, Ordering::Release);
        for w in std::mem::take(&mut self.writers) {
            tokio::time::timeout(Duration::from_secs(120), w)
                .await
                .expect("writers finish")
                .expect("writer did not panic");
        }
        self.phase("drain (each writer finishes its create)");

        let total = self.shared.counts.tally();
        let mut latencies = self.shared.latencies_ms.lock().await.clone();
        latencies.sort_unstable();
        let at =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        eprintln!(
            "\n{name}: {total}; latency p50 {} ms, p99 {} ms, max {} ms; {:?} under load",
            at(0.5),
            at(0.99),
            latencies.last().unwrap(),
            self.started.elapsed()
        );
        for (phase, took, tally) in &self.phases {
            eprintln!("  {phase} ({took:.1?}): {tally}");
        }
        for (what, took) in &self.timings {
            eprintln!("  {what}: {took:.1?}");
        }

        let violations = self.shared.violations.lock().await.clone();
        assert!(
            violations.is_empty(),
            "{} violations, the first ones: {:#?}",
            violations.len(),
            &violations[..violations.len().min(20)]
        );
        assert!(
            total.unavailable + total.conflicts > 0,
            "the faults were felt, or this tests nothing"
        );

        // Every acknowledged create is stored exactly once, with the id it
        // was acknowledged with; no logical create (a unique title) exists
        // twice; nothing was stored that was not acknowledged in the end.
        let acknowledged = self.shared.acknowledged.lock().await.clone();
        assert_eq!(acknowledged.len() as u64, total.acknowledged());
        let conn = Database::connect(db_url).await.unwrap();
        let stored = rows(&conn, "SELECT id, user_id, title FROM tasks").await;
        let mut by_title: HashMap<String, Vec<(i64, String)>> = HashMap::new();
        for row in &stored {
            by_title
                .entry(row.try_get("", "title").unwrap())
                .or_default()
                .push((
                    row.try_get("", "id").unwrap(),
                    row.try_get("", "user_id").unwrap(),
                ));
        }
        let twice: Vec<_> = by_title.iter().filter(|(_, v)| v.len() > 1).collect();
        assert!(twice.is_empty(), "created twice: {twice:?}");
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|(title, ack)| by_title.get(*title).map(|v| &v[0]) != Some(*ack))
            .collect();
        assert!(
            lost.is_empty(),
            "acknowledged, but not stored as acknowledged: {lost:?}"
        );
        assert_eq!(
            stored.len(),
            acknowledged.len(),
            "every logical create ended in a 201, and nothing else is stored"
        );
        let keys = rows(&conn, "SELECT count(*) AS n FROM idempotency_keys").await;
        let keys: i64 = keys[0].try_get("", "n").unwrap();
        assert_eq!(
            keys as usize,
            acknowledged.len(),
            "one idempotency record per create"
        );
        let _ = conn.close().await;

        // The same service, never restarted, works as before.
        let token = self.app.token("after-the-faults");
        self.app
            .create(&token, json!({"title": "after the faults"}))
            .await;
    }
}

async fn rows(conn: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
}

async fn app_on(database_url: String) -> TestApp {
    TestApp::builder(Backend::Postgres)
        .database(TestDb::external(database_url))
        .env("DB_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT)
        .env("DB_MAX_CONNECTIONS", "10")
        .start()
        .await
        .expect("app on the private cluster")
}

/// Restarted fast, restarted immediate (a crash and WAL recovery), then
/// stopped for 4 s and started: under 40 writers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_and_outage_under_load_lose_nothing() {
    let Some(cluster) = PgCluster::start_new().await else {
        return;
    };
    let mut load = Load::start(app_on(cluster.url()).await);
    load.until_acknowledged(200).await;
    load.phase("warm-up");

    for mode in [StopMode::Fast, StopMode::Immediate] {
        let started = Instant::now();
        cluster
            .restart(mode)
            .await
            .unwrap_or_else(|e| panic!("restart: {e}\n{}", cluster.log()));
        load.timing(
            &format!("restart {mode:?}: pg_ctl restart took"),
            started.elapsed(),
        );
        load.wait_ready(&format!("restart {mode:?}: /health/ready 200 again after"))
            .await;
        load.until_acknowledged(100).await;
        load.phase(&format!("restart {mode:?}"));
    }

    cluster.stop(StopMode::Fast).await.expect("stop");
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    assert_eq!(
        load.ready_status().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while the database is stopped"
    );
    load.timing("stopped: /health/ready answered 503 in", started.elapsed());
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(down.elapsed())).await;
    cluster
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", cluster.log()));
    load.timing("stopped: database down for", down.elapsed());
    load.wait_ready("stopped: /health/ready 200 again after start by")
        .await;
    load.until_acknowledged(100).await;
    load.phase("stopped 4 s, started");

    load.finish("PostgreSQL restarts and a stop under load", &cluster.url())
        .await;
    drop(cluster);
}

/// PostgreSQL hangs (every process suspended) for 15 s, with the service's
/// connections open: its `statement_timeout` cannot fire, so the service
/// must bound the wait itself. Requests answer 503 within the bound, and
/// once the database runs again, commits that were under way are replayed
/// to their retries, never repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hanging_under_load_answers_503_in_bounded_time() {
    let Some(cluster) = PgCluster::start_new().await else {
        return;
    };
    let mut load = Load::start(app_on(cluster.url()).await);
    load.until_acknowledged(200).await;
    load.phase("warm-up");

    let frozen = Instant::now();
    let processes = cluster.freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    assert_eq!(
        load.ready_status().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while the database hangs"
    );
    let took = started.elapsed();
    // Only against a hang: the contract's 1 s is database_outage.rs's to check.
    assert!(
        took < Duration::from_secs(10),
        "/health/ready took {took:?}"
    );
    load.timing("suspended: /health/ready answered 503 in", took);
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(frozen.elapsed())).await;
    cluster.thaw();
    load.timing(
        &format!("{processes} processes suspended for"),
        frozen.elapsed(),
    );
    load.phase("suspended 15 s");
    load.wait_ready("resumed: /health/ready 200 after").await;
    load.until_acknowledged(100).await;
    load.phase("resumed");

    load.finish("PostgreSQL hanging under load", &cluster.url())
        .await;
    drop(cluster);
}

/// Every connection between the service and PostgreSQL cut, 25 times, while
/// PostgreSQL keeps running: requests caught mid-transaction get 503, and
/// commits whose answer was lost are replayed to the retry, never repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_under_load_replay_not_duplicate() {
    let Some(cluster) = PgCluster::start_new().await else {
        return;
    };
    let (proxy, url) = TcpProxy::in_front_of(&cluster.url()).await;
    let mut load = Load::start(app_on(url).await);
    load.until_acknowledged(200).await;
    load.phase("warm-up");

    let mut cut = 0;
    for _ in 0..25 {
        load.until_acknowledged(20).await;
        cut += proxy.cut();
    }
    load.timing(&format!("25 cuts, {cut} connections"), Duration::ZERO);
    load.phase("25 cuts");
    load.wait_ready("after the cuts: /health/ready 200 after")
        .await;
    load.until_acknowledged(100).await;
    load.phase("after the cuts");

    load.finish("connections cut under load", &cluster.url())
        .await;
    drop(proxy);
    drop(cluster);
}

/// A write blocked by a row lock is cancelled by `statement_timeout`
/// (`DB_STATEMENT_TIMEOUT=0.5`) and answered 503 with `Retry-After`, in
/// about that time, not after the lock is gone; it leaves nothing; once
/// the lock is released the same write works. In both pool modes (session:
/// `SET statement_timeout` per connection; transaction: `SET LOCAL` per unit).
async fn statement_timeout_bounds_a_blocked_write(pool_mode: &str) {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = db.url.clone();
    let Some(app) = TestApp::builder(Backend::Postgres)
        .database(db)
        .env("DB_STATEMENT_TIMEOUT", "0.5")
        .env("DB_POOL_MODE", pool_mode)
        .start()
        .await
    else {
        return;
    };
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "locked"})).await;
    let id = task["id"].as_i64().unwrap();
    let path = format!("/api/tasks/{id}");

    let holder = Database::connect(&url).await.unwrap();
    let lock = holder.begin().await.unwrap();
    lock.execute_unprepared(&format!("SELECT id FROM tasks WHERE id = {id} FOR UPDATE"))
        .await
        .unwrap();

    for (method, path, body) in [
        (
            Method::PUT,
            path.clone(),
            Some(json!({"title": "while locked"})),
        ),
        (Method::PATCH, format!("{path}/complete"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let started = Instant::now();
        let mut request = app.request(method.clone(), &path, &alice);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("answered, not hanging");
        let elapsed = started.elapsed();
        let retry_after = response.headers().get("retry-after").cloned();
        let (status, body) = json(response).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {body}"
        );
        assert_eq!(error_code(&body), "service_unavailable");
        assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
        assert!(
            elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(2500),
            "{method} {path}: answered after {elapsed:?}, expected about the 0.5 s statement_timeout"
        );
        eprintln!("{pool_mode} mode: {method} {path} blocked by a row lock: 503 after {elapsed:?}");
    }
    // Readiness is not affected: the database answers, it was only slow.
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    lock.rollback().await.unwrap();
    let (status, now) = crate::common::send(app.request(Method::GET, &path, &alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now, task, "the cancelled writes left nothing");
    let (status, updated) = crate::common::send(
        app.request(Method::PUT, &path, &alice)
            .json(&json!({"title": "after the lock"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["title"], "after the lock");
    let _ = holder.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statement_timeout_bounds_a_blocked_write() {
    statement_timeout_bounds_a_blocked_write("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statement_timeout_bounds_a_blocked_write_in_transaction_mode() {
    statement_timeout_bounds_a_blocked_write("transaction").await;
}

/// One write as a client sends it; what came back, and how long it took.
async fn send_write(
    app: &TestApp,
    token: &str,
    (method, path, body, key): &Write,
) -> (String, StatusCode, bool, Value, Duration) {
    let started = Instant::now();
    let mut request = app
        .request(method.clone(), path, token)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", *key);
    }
    let response = request.send().await.expect("answered");
    let retry_after = response.headers().contains_key("retry-after");
    let (status, body) = json(response).await;
    (
        format!("{method} {path}"),
        status,
        retry_after,
        body,
        started.elapsed(),
    )
}

/// (method, path, body, Idempotency-Key)
type Write = (Method, String, Option<Value>, Option<&'static str>);

/// Another connection holds SQLite's write lock longer than the busy timeout
/// (5 s): every write answers 503 with `Retry-After` (never 500), nothing of
/// it is stored, and once the lock is gone the same writes work (a keyed
/// create retried with its key creates exactly one task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_lock_held_answers_503_and_writes_nothing() {
    // Five writes of one user at once: more than the default four in flight.
    let app = TestApp::builder(Backend::Sqlite)
        .env("MAX_IN_FLIGHT_PER_USER", "8")
        .start()
        .await
        .unwrap();
    let alice = app.token("alice");
    let task = app.create(&alice, json!({"title": "keep"})).await;
    let id = task["id"].as_i64().unwrap();
    let before = app.db.snapshot().await;

    // The other writer: a connection of its own (as another process would
    // have), holding the write lock in an open IMMEDIATE transaction.
    let holder = Database::connect(&app.db.url).await.unwrap();
    let lock = holder
        .begin_with_options(sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
        .unwrap();

    let item = format!("/api/tasks/{id}");
    let writes: Vec<Write> = vec![
        (
            Method::POST,
            "/api/tasks".into(),
            Some(json!({"title": "blocked"})),
            None,
        ),
        (
            Method::POST,
            "/api/tasks".into(),
            Some(json!({"title": "blocked, keyed"})),
            Some("sqlite-busy-key"),
        ),
        (
            Method::PUT,
            item.clone(),
            Some(json!({"title": "changed"})),
            None,
        ),
        (Method::PATCH, format!("{item}/complete"), None, None),
        (Method::DELETE, item.clone(), None, None),
    ];
    let answers =
        futures::future::join_all(writes.iter().map(|w| send_write(&app, &alice, w))).await;
    for (what, status, retry_after, body, elapsed) in answers {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(error_code(&body), "service_unavailable");
        assert!(retry_after, "{what}: Retry-After");
        // Each waits at most 5 s for its turn among this process's writers
        // and then at most 5 s (the busy timeout) for SQLite's lock: well
        // before the request timeout (30 s).
        assert!(
            elapsed < Duration::from_secs(15),
            "{what}: answered after {elapsed:?} (turn and busy timeout 5 s each)"
        );
        eprintln!("sqlite, write lock held: {what}: 503 after {elapsed:?}");
    }
    lock.rollback().await.unwrap();
    let _ = holder.close().await;
    assert_eq!(
        app.db.snapshot().await,
        before,
        "nothing of the refused writes was stored"
    );

    // The lock is gone: the same writes work; the keyed create exactly once.
    for write in &writes {
        let (what, status, _, body, _) = send_write(&app, &alice, write).await;
        assert!(status.is_success(), "{what}: {body}");
    }
    let (what, status, _, body, _) = send_write(&app, &alice, &writes[1]).await;
    assert_eq!(status, StatusCode::CREATED, "{what} replayed: {body}");
    let after = app.db.snapshot().await;
    assert_eq!(
        after.len(),
        2,
        "the two creates, once each (the first task deleted): {after:#?}"
    );
}
