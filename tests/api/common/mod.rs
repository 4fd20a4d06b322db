//! Test harness: a real server on a random loopback port, backed by a real
//! database of its own (a fresh SQLite file, or a fresh PostgreSQL database
//! that is dropped afterwards), called over HTTP like the frontend does.

pub mod certs;
pub mod haproxy;
pub mod jwks_server;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod pg_cluster;
pub mod pgbouncer;
pub mod ports;
pub mod process;
pub mod raw;
pub mod sse;
pub mod tcp_proxy;
pub mod tmpfs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;
use tokio::sync::oneshot;

pub const FRONTEND_ORIGIN: &str = "http://localhost:3000";

/// The database setups every HTTP test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file.
    Sqlite,
    /// PostgreSQL, directly.
    Postgres,
    /// PostgreSQL through a transaction-mode PgBouncer (`DB_POOL_MODE=transaction`),
    /// migrations included, as behind Neon's `-pooler` hosts.
    PgBouncer,
}

/// Runs each named `async fn name(backend: Backend)` of the file once per
/// database setup (SQLite, PostgreSQL, PostgreSQL through PgBouncer).
#[macro_export]
macro_rules! on_each_database {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Postgres).await } )*
        }
        mod pgbouncer {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::PgBouncer).await } )*
        }
    };
}

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A runtime of its own, for a test that also runs blocking work (child
/// processes, blocking sockets) on its thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A database used by one test only.
pub struct TestDb {
    /// Where the database is, directly (for looking at what was stored).
    pub url: String,
    /// Where the app reaches it: `url`, or a PgBouncer in front of it.
    pub app_url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _bouncer: Option<pgbouncer::PgBouncer>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// `None` (after a loud message) when PostgreSQL is unreachable outside CI.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("todo.db").display());
                Some(TestDb {
                    app_url: url.clone(),
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                    _bouncer: None,
                })
            }
            Backend::PgBouncer => {
                let mut db = Box::pin(TestDb::create(Backend::Postgres)).await?;
                let direct = url::Url::parse(&db.url).expect("a URL");
                let bouncer = pgbouncer::PgBouncer::start(
                    direct.host_str().unwrap_or("127.0.0.1"),
                    direct.port().unwrap_or(5432),
                    direct.username(),
                )?;
                let mut pooled = direct.clone();
                pooled.set_host(Some("127.0.0.1")).expect("host");
                pooled.set_port(Some(bouncer.port)).expect("port");
                db.app_url = pooled.to_string();
                db._bouncer = Some(bouncer);
                Some(db)
            }
            Backend::Postgres => {
                let admin_url = admin_database_url();
                let admin = match Database::connect(&admin_url).await {
                    Ok(db) => db,
                    Err(e) if !in_ci() => {
                        eprintln!(
                            "\n!!!!! SKIPPED: PostgreSQL test: cannot reach TEST_DATABASE_URL ({e}). Start it with \
                             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`. In CI this fails. !!!!!\n"
                        );
                        return None;
                    }
                    Err(e) => {
                        panic!("CI=true and PostgreSQL is unreachable at TEST_DATABASE_URL: {e}")
                    }
                };
                let name = format!(
                    "todo_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                Some(TestDb {
                    url: url.to_string(),
                    app_url: url.to_string(),
                    pg_name: Some(name),
                    _dir: None,
                    _bouncer: None,
                })
            }
        }
    }

    /// A database the test made itself (e.g. on a private cluster): used as
    /// it is, and nothing is dropped afterwards.
    pub fn external(url: String) -> TestDb {
        TestDb {
            app_url: url.clone(),
            url,
            pg_name: None,
            _dir: None,
            _bouncer: None,
        }
    }

    /// A direct connection, for looking at what the server stored.
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Every row of `tasks`, in id order, as JSON: a snapshot to compare.
    pub async fn snapshot(&self) -> Vec<Value> {
        snapshot(&self.url).await
    }
}

/// Every row of `tasks` of the database at `url`, in id order, as JSON.
pub async fn snapshot(url: &str) -> Vec<Value> {
    use sea_orm::{FromQueryResult, JsonValue, Statement};
    let db = Database::connect(url)
        .await
        .expect("connect to test database");
    let sql = "SELECT id, user_id, title, description, completed, created_at, updated_at FROM tasks ORDER BY id";
    let rows = JsonValue::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
        .all(&db)
        .await
        .expect("snapshot query");
    let _ = db.close().await;
    rows
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async context: use a short-lived runtime on its own thread.
        let admin_url = admin_database_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Seeds `count` tasks of `user` directly in the database, each with a
/// 1000-character description: a listing of over `count` KB.
pub async fn seed_large_tasks(db: &TestDb, user: &str, count: usize) {
    use sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait};
    use todo_api::models::task;
    let db = db.connect().await;
    let txn = db.begin().await.unwrap();
    let now = chrono::Utc::now();
    let description = "d".repeat(1000);
    for start in (0..count).step_by(500) {
        let rows = (start..count.min(start + 500)).map(|i| task::ActiveModel {
            user_id: Set(user.to_owned()),
            title: Set(format!("task {i}")),
            description: Set(Some(description.clone())),
            completed: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        });
        task::Entity::insert_many(rows).exec(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
    let _ = db.close().await;
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub secret: Vec<u8>,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub struct TestAppBuilder {
    backend: Backend,
    env: HashMap<String, String>,
    database_url: Option<String>,
    database: Option<TestDb>,
}

impl TestApp {
    /// `127.0.0.1:port`, for raw sockets.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            env: HashMap::new(),
            database_url: None,
            database: None,
        }
    }

    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::builder(backend).start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Shuts the server down (as on SIGTERM) and waits until it has; the
    /// database stays, for another server to start on.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server shut down");
        }
    }

    /// Another server on this one's database, with its secret.
    pub fn restart_builder(&self, backend: Backend) -> TestAppBuilder {
        TestApp::builder(backend)
            .database_url(self.db.app_url.clone())
            .env(
                "BETTER_AUTH_SECRET",
                std::str::from_utf8(&self.secret).expect("hex secret"),
            )
    }

    /// A valid HS256 token for `sub`.
    pub fn token(&self, sub: &str) -> String {
        todo_api::auth::mint_hs256(&self.secret, sub, None, 600).expect("mint token")
    }

    /// An HS256 token with exactly these claims.
    pub fn token_with_claims(&self, claims: &Value) -> String {
        keys::hs_token("HS256", &self.secret, claims)
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `POST /api/tasks` with a JSON body; returns the created task.
    pub async fn create(&self, token: &str, body: Value) -> Value {
        let (status, task) =
            send(self.request(Method::POST, "/api/tasks", token).json(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    pub async fn list(&self, token: &str, query: &str) -> (StatusCode, Value) {
        send(self.request(Method::GET, &format!("/api/tasks{query}"), token)).await
    }

    /// Polls `/health/ready` until it answers `want`, for at most `within`.
    /// Returns how long that took.
    pub async fn wait_for_readiness(
        &self,
        want: StatusCode,
        within: std::time::Duration,
    ) -> std::time::Duration {
        let started = std::time::Instant::now();
        loop {
            let status = self
                .client
                .get(self.url("/health/ready"))
                .send()
                .await
                .map(|r| r.status())
                .ok();
            if status == Some(want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "/health/ready did not answer {want} within {within:?} (last: {status:?})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl TestAppBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Use this database URL instead of a fresh test database (e.g. a proxy).
    pub fn database_url(mut self, url: String) -> Self {
        self.database_url = Some(url);
        self
    }

    /// Use this database (e.g. [`TestDb::external`]) instead of creating one.
    pub fn database(mut self, db: TestDb) -> Self {
        self.database = Some(db);
        self
    }

    pub async fn start(self) -> Option<TestApp> {
        let db = match self.database {
            Some(db) => db,
            None => TestDb::create(self.backend).await?,
        };
        let secret: [u8; 24] = rand::random();
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let mut env: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), db.app_url.clone()),
            ("BETTER_AUTH_SECRET".into(), secret.clone()),
            ("CORS_ORIGINS".into(), FRONTEND_ORIGIN.into()),
        ]);
        if self.backend == Backend::PgBouncer {
            env.insert("DB_POOL_MODE".into(), "transaction".into());
        }
        if let Some(url) = &self.database_url {
            env.insert("DATABASE_URL".into(), url.clone());
        }
        env.extend(self.env);
        let settings =
            todo_api::Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings");
        let app = todo_api::build(&settings).await.expect("build app");
        app.start().await.expect("database reached and migrated");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            todo_api::serve(listener, &app, async {
                let _ = rx.await;
            })
            .await
        });
        let secret = env
            .get("BETTER_AUTH_SECRET")
            .map(|s| s.clone().into_bytes())
            .unwrap_or_default();
        Some(TestApp {
            base,
            // Idle connections are not kept as long as the server's 10 s
            // idle timeout: a request sent on one just as the server closes
            // it would fail without being read (the keep-alive race).
            client: Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("a client"),
            secret,
            db,
            shutdown: Some(tx),
            server: Some(server),
        })
    }
}

/// A server on a runtime of its own, for tests that talk to it with blocking
/// sockets from the test thread (the server keeps running on the runtime's
/// workers meanwhile).
pub struct BlockingApp {
    pub app: TestApp,
    pub runtime: tokio::runtime::Runtime,
}

impl BlockingApp {
    pub fn start(builder: TestAppBuilder) -> Option<BlockingApp> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let app = runtime.block_on(builder.start())?;
        Some(BlockingApp { app, runtime })
    }

    /// `127.0.0.1:port`, for raw sockets.
    pub fn addr(&self) -> String {
        self.app.addr()
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Sends the request; its status and JSON body.
pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    json(request.send().await.expect("request sent")).await
}

/// Status and JSON body of a response (asserting the body is JSON).
pub async fn json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("read body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status}: body is not JSON ({content_type}): {text:?}"));
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content-type {content_type:?}"
    );
    (status, value)
}

/// Asserts the contract's error shape and returns the `code`.
pub fn error_code(body: &Value) -> &str {
    assert!(body["detail"].is_string(), "no string detail: {body}");
    body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no string code: {body}"))
}

/// The `field`s of a 422 body.
pub fn error_fields(body: &Value) -> Vec<String> {
    assert_eq!(error_code(body), "validation_error", "{body}");
    body["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}
