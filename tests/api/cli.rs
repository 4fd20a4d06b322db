//! The real binary: start-up rules, the CLI commands, concurrent start-up
//! migrations, graceful shutdown, and that no secret is ever printed.

use std::time::Duration;

use crate::common::process::{Server, todo_api};
use crate::common::{Backend, TestDb};
use serde_json::json;

/// Starts two servers at the same moment with these settings; both must come up.
pub(crate) fn start_two_at_once(env: &[(&str, &str)]) -> Vec<Server> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let env = env.clone();
            std::thread::spawn(move || {
                let cwd = tempfile::tempdir().unwrap();
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Server::start(cwd.path(), &env, &[])
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("both instances come up"))
        .collect()
}

#[test]
fn refuses_to_start_without_auth_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = todo_api(dir.path(), &[]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    assert!(
        lines[0].contains("BETTER_AUTH_SECRET") && lines[0].contains("BETTER_AUTH_URL"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("todo.db").exists(),
        "refused before touching the database"
    );
}

#[test]
fn never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "super-secret-value-0123456789";
    // An unreachable database with a password in its URL: start-up fails and says why.
    let out = todo_api(
        dir.path(),
        &[
            ("BETTER_AUTH_SECRET", secret),
            (
                "DATABASE_URL",
                "postgres://app:hunter2pw@127.0.0.1:1/db?sslmode=disable",
            ),
            ("DB_STARTUP_TIMEOUT", "1"),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("127.0.0.1:1"), "says which database: {all}");
    assert!(!all.contains("hunter2pw") && !all.contains(secret), "{all}");
    let bad_port = todo_api(
        dir.path(),
        &[("BETTER_AUTH_SECRET", secret), ("PORT", "http")],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&bad_port.stderr);
    assert!(
        !bad_port.status.success() && err.contains("PORT") && !err.contains(secret),
        "{err}"
    );
}

#[test]
fn default_is_embedded_sqlite_and_token_command_works() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("BETTER_AUTH_SECRET", "cli-test-secret")];
    let server = Server::start(dir.path(), &env, &[]).expect("server starts");
    assert!(dir.path().join("todo.db").exists(), "./todo.db created");
    let token = todo_api(dir.path(), &env)
        .args(["token", "--sub", "cli-user", "--email", "c@example.com"])
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let client = reqwest::blocking::Client::new();
    let created = client
        .post(server.url("/api/tasks"))
        .bearer_auth(&token)
        .json(&json!({"title": "from cli"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let task: serde_json::Value = created.json().unwrap();
    assert_eq!(task["user_id"], "cli-user");
    // A token in the query string is no credential, and does not reach the logs.
    let misplaced = client
        .get(server.url(&format!("/api/tasks?access_token={token}")))
        .send()
        .unwrap();
    assert_eq!(misplaced.status(), 401);
    let (status, log) = server.terminate();
    assert!(status.success(), "graceful exit on SIGTERM: {status} {log}");
    assert!(!log.contains(&token), "tokens are never logged");

    // Data survives a restart; `migrate` on an up-to-date database is a no-op.
    let migrate = todo_api(dir.path(), &env).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let server = Server::start(dir.path(), &env, &[]).expect("restart");
    let list: serde_json::Value = client
        .get(server.url("/api/tasks"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list[0]["title"], "from cli");
    server.terminate();
}

#[test]
fn dev_mode_prints_a_working_demo_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &["serve", "--dev"])
        .expect("dev server starts without a secret");
    let stdout = server.stdout.join("\n");
    let token = server
        .stdout
        .iter()
        .find(|l| l.matches('.').count() == 2 && !l.contains(' '))
        .expect("a token line")
        .clone();
    assert!(
        stdout.contains("curl -H 'Authorization: Bearer "),
        "{stdout}"
    );
    let client = reqwest::blocking::Client::new();
    let response = client
        .get(server.url("/api/tasks"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let forged = client
        .get(server.url("/api/tasks"))
        .bearer_auth(format!("{token}x"))
        .send()
        .unwrap();
    assert_eq!(forged.status(), 401);
    server.terminate();
}

/// Two instances started at once on an empty PostgreSQL database both come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_migrate_an_empty_postgres_at_once() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let servers = start_two_at_once(&[("BETTER_AUTH_SECRET", "s"), ("NEON_DATABASE_URL", &db.url)]);
    for server in &servers {
        let ready = reqwest::get(server.url("/health/ready")).await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    for server in servers {
        server.terminate();
    }
    let conn = db.connect().await;
    use migration::MigratorTrait;
    use sea_orm::{ConnectionTrait, Statement};
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT count(*) AS n FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        migration::Migrator::migrations().len() as i64,
        "each migration ran once"
    );
    let _ = conn.close().await;
}

/// The same on one new SQLite file (no advisory lock there).
#[test]
fn two_instances_start_on_one_new_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("shared.db").display()
    );
    let servers = start_two_at_once(&[("BETTER_AUTH_SECRET", "s"), ("DATABASE_URL", &url)]);
    for server in servers {
        let ready = reqwest::blocking::get(server.url("/health/ready")).unwrap();
        assert_eq!(ready.status(), 200);
        server.terminate();
    }
}

/// SIGTERM lets a request already in flight finish: its body arrives after the
/// signal, and it is still answered (and stored) before the process exits.
#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // todo_api::request=debug logs "started processing request": the moment to signal.
    let env = [
        ("BETTER_AUTH_SECRET", "graceful-secret"),
        ("RUST_LOG", "info,todo_api::request=debug"),
    ];
    let server = Server::start(dir.path(), &env, &[]).expect("server starts");
    let token = todo_api::auth::mint_hs256(b"graceful-secret", "alice", None, 600).unwrap();
    let body = r#"{"title": "sent across the shutdown"}"#;
    let (first, rest) = body.split_at(10);
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    server.wait_for_log("started processing request");
    server.signal_and_wait_for_shutdown_notice();
    stream.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("sent across the shutdown"));
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");
}

/// Settings come from a `.env` file in the working directory too.
#[test]
fn settings_come_from_dot_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "BETTER_AUTH_SECRET=from-dot-env\nDATABASE_URL=sqlite://envfile.db?mode=rwc\n",
    )
    .unwrap();
    let server = Server::start(dir.path(), &[], &[]).expect("starts with the settings of .env");
    assert!(
        dir.path().join("envfile.db").exists(),
        "DATABASE_URL from .env used"
    );
    let token = todo_api::auth::mint_hs256(b"from-dot-env", "alice", None, 600).unwrap();
    let response = reqwest::blocking::Client::new()
        .get(server.url("/api/tasks"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "BETTER_AUTH_SECRET from .env used");
    server.terminate();
}

/// An unreachable JWKS: the token gets 401 (not 500), and the log says why.
#[test]
fn unreachable_jwks_is_logged_and_answered_401() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("BETTER_AUTH_JWKS_URL", "http://127.0.0.1:1/api/auth/jwks")];
    let server = Server::start(dir.path(), &env, &[]).expect("starts with a JWKS source only");
    let key = crate::common::keys::TestKey::ed25519();
    let token = key.token("kid-1", &crate::common::keys::claims_for("alice"));
    let response = reqwest::blocking::Client::new()
        .get(server.url("/api/tasks"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    let mut log = server.wait_for_log("could not fetch JWKS");
    log.push(server.terminate().1);
    assert!(!log.join("\n").contains(&token), "tokens are never logged");
}
