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

/// What a newcomer meets: every setting in `--help` under its variable, flags
/// that override the environment, the docs URL in the dev banner, a warning
/// for a weak secret (never the secret), and `token` refusing a subject the
/// server would refuse.
#[test]
fn the_cli_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    // The program says what it is (a settings group's doc comment once took its place).
    let top = todo_api(dir.path(), &[]).arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.starts_with("Todo API for a Next.js + Better Auth frontend."),
        "todo-api --help:\n{top}"
    );
    let help = todo_api(dir.path(), &[])
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for setting in [
        "NEON_DATABASE_URL",
        "DATABASE_URL",
        "MIGRATION_DATABASE_URL",
        "DB_POOL_MODE",
        "DB_MAX_CONNECTIONS",
        "DB_STARTUP_TIMEOUT",
        "DB_STATEMENT_TIMEOUT",
        "BETTER_AUTH_SECRET",
        "BETTER_AUTH_URL",
        "BETTER_AUTH_JWKS_URL",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "HOST",
        "PORT",
        "CORS_ORIGINS",
        "HTTP_HEADER_TIMEOUT",
        "HTTP_BODY_TIMEOUT",
        "HTTP_WRITE_TIMEOUT",
        "HTTP_REQUEST_TIMEOUT",
        "MAX_TASKS_PER_USER",
        "MAX_IN_FLIGHT_PER_USER",
        "MAX_QUEUED_PER_USER",
        "RATE_LIMIT_PER_USER",
        "SHUTDOWN_DRAIN_SECONDS",
        "SHUTDOWN_TIMEOUT",
        "LOG_FORMAT",
        "METRICS_ADDR",
    ] {
        assert!(
            help.contains(&format!("[env: {setting}]")),
            "{setting} is not in serve --help:\n{help}"
        );
    }
    for flag in ["--host <HOST>", "--port <PORT>"] {
        assert!(help.contains(flag), "{flag}:\n{help}");
    }
    let token_help = todo_api(dir.path(), &[])
        .args(["token", "--help"])
        .output()
        .unwrap();
    let token_help = String::from_utf8_lossy(&token_help.stdout);
    let email = token_help
        .lines()
        .find(|l| l.contains("--email"))
        .unwrap_or_default();
    assert!(
        email
            .split("<EMAIL>")
            .nth(1)
            .is_some_and(|h| h.trim().len() > 10),
        "--email explains itself: {token_help}"
    );

    // `token` refuses what the server would refuse, and accepts its longest subject.
    let secret = [("BETTER_AUTH_SECRET", "a-secret-of-thirty-two-bytes-0123")];
    let longest = "u".repeat(255);
    let too_long = "u".repeat(256);
    for (sub, accepted) in [
        ("", false),
        ("line\nbreak", false),
        ("tab\there", false),
        (too_long.as_str(), false),
        (longest.as_str(), true),
    ] {
        let out = todo_api(dir.path(), &secret)
            .args(["token", "--sub", sub])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), accepted, "--sub {sub:?}: {stderr}");
        if !accepted {
            assert!(
                stderr.contains("--sub") && out.stdout.is_empty(),
                "{stderr}"
            );
        }
    }

    // A flag overrides its variable (the harness sets PORT=0).
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let port_arg = port.to_string();
    let weak = "short-secret";
    let server = Server::start(
        dir.path(),
        &[("BETTER_AUTH_SECRET", weak)],
        &["serve", "--host", "127.0.0.1", "--port", &port_arg],
    )
    .expect("starts with --host and --port");
    assert_eq!(server.addr, format!("127.0.0.1:{port}"));
    let log = server.log_so_far();
    let warning = log
        .iter()
        .find(|l| l.contains("shorter than 32 bytes"))
        .unwrap_or_else(|| panic!("a weak-secret warning:\n{}", log.join("\n")));
    assert!(
        !warning.contains(weak),
        "the secret is never logged: {warning}"
    );
    server.terminate();

    // The dev banner names the docs, and says when a configured secret is used.
    let dev_dir = tempfile::tempdir().unwrap();
    let dev = Server::start(
        dev_dir.path(),
        &[("BETTER_AUTH_SECRET", "a-secret-of-thirty-two-bytes-0123")],
        &["serve", "--dev"],
    )
    .expect("dev server starts");
    let banner = dev.stdout.join("\n");
    assert!(banner.contains("/docs"), "{banner}");
    assert!(banner.contains("BETTER_AUTH_SECRET is set"), "{banner}");
    assert!(!banner.contains("thirty-two-bytes"), "{banner}");
    dev.terminate();
}
