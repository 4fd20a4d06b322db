//! Operating it (CONTRACT.md, "Operating it"), on the real binary and real
//! databases: a database that is late, each start-up failure named as
//! itself, `LOG_FORMAT=json`, `METRICS_ADDR`, and start-up through a
//! transaction-mode PgBouncer.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use migration::MigratorTrait;
use reqwest::blocking::Client;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::common::keys::{TestKey, claims_for};
use crate::common::metrics::{sample, value};
use crate::common::pg_cluster::{PgCluster, StopMode};
use crate::common::process::{Server, serve_until_it_stops, todo_api};
use crate::common::runtime;
use crate::common::{Backend, TestDb};

const SECRET: &str = "operations-test-secret-0123456789abcdef";

fn token(sub: &str) -> String {
    todo_api::auth::mint_hs256(SECRET.as_bytes(), sub, None, 600).unwrap()
}

/// The port of the shared PostgreSQL server (`TEST_DATABASE_URL`).
fn shared_server_port() -> u16 {
    url::Url::parse(&crate::common::admin_database_url())
        .unwrap()
        .port()
        .unwrap_or(5432)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Status, `Retry-After` and JSON body of a response.
fn answer(response: reqwest::blocking::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// A create through `server` as `bearer`: the task, once answered 201.
fn create_task(client: &Client, server: &Server, bearer: &str, title: &str) -> Value {
    let (status, _, created) = answer(
        client
            .post(server.url("/api/tasks"))
            .bearer_auth(bearer)
            .json(&json!({"title": title}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201, "{created}");
    created
}

/// `bearer`'s list through `server`, once answered 200.
fn list_tasks(client: &Client, server: &Server, bearer: &str) -> Value {
    let (status, _, list) = answer(
        client
            .get(server.url("/api/tasks"))
            .bearer_auth(bearer)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{list}");
    list
}

/// Runs the command to its end, for at most `limit`: its status, stdout and
/// stderr.
fn run_bounded(mut command: Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not finish within {limit:?}: {}", err.join().unwrap());
        }
        // Polling an exit status: 10 ms is plenty for bounds of seconds.
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

// ---------------------------------------------------------------------------
// 1. A database that is late.

/// Started while its PostgreSQL is down, the server listens at once:
/// `/health` 200, `/health/ready` and `/api` 503 (a valid token is not a 401,
/// the outage not a 500), and the log says why. When PostgreSQL starts, the
/// same process migrates, becomes ready and serves, with no restart.
#[test]
fn a_late_database_is_waited_for_then_used_without_a_restart() {
    let rt = runtime();
    let Some(cluster) = rt.block_on(PgCluster::start_new()) else {
        return;
    };
    rt.block_on(cluster.stop(StopMode::Fast)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.url();
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", url.as_str()),
    ];
    let server =
        Server::start_listening(dir.path(), &env, &[]).expect("listens with its database down");
    let waiting = server.wait_for_log("database not reachable yet");
    let line = waiting.last().unwrap();
    assert!(line.contains("connection refused"), "{line}");

    let client = Client::new();
    let alice = token("alice");
    let (status, _, body) = answer(client.get(server.url("/health")).send().unwrap());
    assert_eq!((status, &body), (200, &json!({"status": "ok"})));
    let (status, retry, body) = answer(client.get(server.url("/health/ready")).send().unwrap());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(retry.as_deref(), Some("1"));
    for request in [
        client.get(server.url("/api/tasks")),
        client
            .post(server.url("/api/tasks"))
            .json(&json!({"title": "while the database is down"})),
        client.get(server.url("/api/tasks/1")),
    ] {
        let (status, retry, body) = answer(request.bearer_auth(&alice).send().unwrap());
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "service_unavailable", "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
    }
    // Authentication still comes first.
    let (status, _, body) = answer(client.get(server.url("/api/tasks")).send().unwrap());
    assert_eq!(status, 401, "{body}");

    // An instance stopped while it waits for its database exits at once.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Server::start_listening(other_dir.path(), &env, &[]).unwrap();
    other.wait_for_log("database not reachable yet");
    let signalled = other.sigterm();
    let status = other
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s of SIGTERM");
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));

    rt.block_on(cluster.start()).unwrap();
    server.wait_for_log("database ready");
    let (status, _, body) = answer(client.get(server.url("/health/ready")).send().unwrap());
    assert_eq!(status, 200, "{body}");
    let created = create_task(&client, &server, &alice, "once it is up");
    let list = list_tasks(&client, &server, &alice);
    assert_eq!(
        list,
        json!([created]),
        "the create refused while down did not happen"
    );
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}: {log}");
}

// ---------------------------------------------------------------------------
// 2. Each start-up failure, named as itself.

const APP_PASSWORD: &str = "Right-app-pa55word";
const WRONG_PASSWORD: &str = "Wr0ng-pa55word-guess";
const LIMITED_PASSWORD: &str = "Limited-pa55word";

/// A private cluster that checks passwords (scram-sha-256) for everyone but
/// `postgres`, without TLS, with a role `app` and a role `limited` that
/// may log in but not create anything in schema `public`.
async fn cluster_with_passwords() -> Option<PgCluster> {
    let cluster = PgCluster::start_new().await?;
    cluster
        .set_hba(
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .await
        .unwrap();
    let admin = Database::connect(cluster.url()).await.unwrap();
    for sql in [
        format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"),
        format!("CREATE ROLE limited LOGIN PASSWORD '{LIMITED_PASSWORD}'"),
        // PostgreSQL 15 and later already; said for older ones.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
    ] {
        admin.execute_unprepared(&sql).await.unwrap();
    }
    let _ = admin.close().await;
    Some(cluster)
}

/// Long enough for a first attempt and its retry on a loaded machine, so
/// that "not reachable yet" is logged before the process gives up.
const STARTUP_TIMEOUT: &str = "3";

/// `serve` with this database and a short `DB_STARTUP_TIMEOUT`: it listens
/// at once, then gives up; its exit status and every line of its log.
fn serve_until_it_gives_up(dir: &Path, url: &str, log_format: &str) -> (ExitStatus, Vec<String>) {
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", url),
        ("DB_STARTUP_TIMEOUT", STARTUP_TIMEOUT),
        ("LOG_FORMAT", log_format),
    ];
    serve_until_it_stops(dir, &env, "gives up after DB_STARTUP_TIMEOUT")
}

/// Runs each statement as the cluster's owner.
fn as_owner(rt: &tokio::runtime::Runtime, cluster: &PgCluster, statements: &[&str]) {
    rt.block_on(async {
        let admin = Database::connect(cluster.url()).await.unwrap();
        for sql in statements {
            admin.execute_unprepared(sql).await.unwrap();
        }
        let _ = admin.close().await;
    });
}

/// `migrate` with this database and the same `DB_STARTUP_TIMEOUT`.
fn migrate(dir: &Path, url: &str) -> (ExitStatus, String, String) {
    let mut command = todo_api(
        dir,
        &[
            ("BETTER_AUTH_SECRET", SECRET),
            ("DATABASE_URL", url),
            ("DB_STARTUP_TIMEOUT", STARTUP_TIMEOUT),
        ],
    );
    command.arg("migrate");
    run_bounded(command, Duration::from_secs(30))
}

/// Nothing secret, and none of sqlx's " at line N" (a line of PostgreSQL's
/// own C source, which reads like a line of our SQL).
fn assert_clean(what: &str, text: &str) {
    for password in [APP_PASSWORD, WRONG_PASSWORD, LIMITED_PASSWORD, SECRET] {
        assert!(!text.contains(password), "{what} shows a secret:\n{text}");
    }
    assert!(!text.contains(" at line "), "{what}:\n{text}");
    assert!(
        !text.to_lowercase().contains("pool timed out"),
        "{what} names no cause:\n{text}"
    );
}

/// Refused, unknown host, wrong password (in the URL's user info, or as
/// its `password` query parameter, which sqlx reads too), TLS required by
/// the client but not offered: each is logged as itself while start-up
/// retries (a certificate that does not verify stops it at once), the process exits non-zero with that cause on its last line,
/// `migrate` names it too, and no password is printed anywhere. Once more
/// in JSON: every line is an object, the last one `exiting` with the cause.
#[test]
fn each_start_up_failure_is_named_as_itself() {
    let rt = runtime();
    let Some(cluster) = rt.block_on(cluster_with_passwords()) else {
        return;
    };
    let port = cluster.port();
    let cases = [
        (
            format!(
                "postgres://app:{APP_PASSWORD}@127.0.0.1:{}/postgres",
                closed_port()
            ),
            "connection refused",
            "text",
        ),
        (
            format!("postgres://app:{APP_PASSWORD}@nonexistent.invalid:5432/postgres"),
            "unknown host",
            "text",
        ),
        (
            format!("postgres://app:{WRONG_PASSWORD}@127.0.0.1:{port}/postgres"),
            "authentication failed",
            "text",
        ),
        (
            format!("postgres://app@127.0.0.1:{port}/postgres?password={WRONG_PASSWORD}"),
            "authentication failed",
            "text",
        ),
        (
            format!("postgres://app:{APP_PASSWORD}@127.0.0.1:{port}/postgres?sslmode=require"),
            "TLS",
            "text",
        ),
        (
            format!("postgres://app:{WRONG_PASSWORD}@127.0.0.1:{port}/postgres"),
            "authentication failed",
            "json",
        ),
        // A certificate this client does not trust: the shared server's own
        // (only a handshake is attempted; start-up stops at once naming
        // sslrootcert), or "does not support TLS" where it has none.
        (
            format!(
                "postgres://app:{APP_PASSWORD}@127.0.0.1:{}/postgres?sslmode=verify-full",
                shared_server_port()
            ),
            "TLS",
            "text",
        ),
    ];
    std::thread::scope(|scope| {
        for (url, cause, log_format) in &cases {
            scope.spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let (status, log) = serve_until_it_gives_up(dir.path(), url, log_format);
                let text = log.join("\n");
                if *log_format == "json" {
                    for line in &log {
                        let object: Value = serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                        assert!(object.is_object(), "{line}");
                    }
                    let last: Value = serde_json::from_str(log.last().unwrap()).unwrap();
                    assert_eq!(last["message"], "exiting", "{last}");
                    assert!(last["error"].as_str().unwrap().contains(cause), "{last}");
                }
                assert!(!status.success(), "{cause}: {status}\n{text}");
                if text.contains("certificate does not verify") {
                    // An untrusted certificate is not transient: start-up
                    // stops at once and says which setting to change.
                    assert!(
                        !text.contains("database not reachable yet"),
                        "{cause}: retried a certificate failure:\n{text}"
                    );
                    let last = log.last().unwrap();
                    assert!(last.contains("sslrootcert"), "{cause}: last line {last:?}");
                    assert_clean(cause, &text);
                    let (status, _, stderr) = migrate(dir.path(), url);
                    assert!(!status.success(), "{cause}: migrate {status}\n{stderr}");
                    assert!(stderr.contains("sslrootcert"), "{cause}: migrate\n{stderr}");
                    return;
                }
                let retried: Vec<&String> = log
                    .iter()
                    .filter(|l| l.contains("database not reachable yet"))
                    .collect();
                assert!(!retried.is_empty(), "{cause}: no retry logged:\n{text}");
                for line in retried {
                    assert!(line.contains(cause), "{cause}: {line}");
                }
                let last = log.last().unwrap();
                assert!(
                    last.contains("cannot reach the database") && last.contains(cause),
                    "{cause}: last line {last:?}"
                );
                assert_clean(cause, &text);

                let (status, stdout, stderr) = migrate(dir.path(), url);
                assert!(!status.success(), "{cause}: migrate {status}\n{stderr}");
                let last = stderr.lines().last().unwrap_or_default();
                assert!(
                    last.contains(cause),
                    "{cause}: migrate's last line {last:?}"
                );
                assert_clean(cause, &format!("{stdout}{stderr}"));
            });
        }
    });
}

/// A server that accepts connections and never answers (a black-holed
/// address, a pooler waiting for its own server): start-up gives up when
/// `DB_STARTUP_TIMEOUT` says, not after a fixed 5 s attempt, and says so.
#[test]
fn a_database_that_never_answers_is_given_up_on_in_time() {
    // Bound, never accepted: the kernel completes each handshake, and the
    // client's start-up message is never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://app:{APP_PASSWORD}@{}/postgres",
        silent.local_addr().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", url.as_str()),
        ("DB_STARTUP_TIMEOUT", "1"),
    ];
    let mut server = Server::start_listening(dir.path(), &env, &[]).expect("listens at once");
    let listening = Instant::now();
    let status = server.wait_exit(Duration::from_secs(30)).expect("gives up");
    let took = listening.elapsed();
    server.rest_of_log();
    let log = server.log_so_far();
    assert!(!status.success(), "{status}");
    assert!(
        took < Duration::from_secs(10),
        "gave up after {took:?} with DB_STARTUP_TIMEOUT=1 (the default is 60):\n{}",
        log.join("\n")
    );
    let last = log.last().unwrap();
    assert!(last.contains("no answer within 1.0 s"), "{last}");
    // One attempt, bounded by the 1 s: no retry after it.
    assert!(
        !log.iter().any(|l| l.contains("database not reachable yet")),
        "{}",
        log.join("\n")
    );
    assert_clean("serve", &log.join("\n"));
    drop(silent);
}

/// Roles without the privileges the service needs get a clear error, not a
/// server that answers 500:
/// - a role that may connect but not create tables: start-up and `migrate`
///   fail at once (no retrying a permission), with PostgreSQL's message, its
///   code, and what to do, and nothing else in the way;
/// - migrations by the owner (`MIGRATION_DATABASE_URL`) and requests by
///   another role that was granted nothing on the new tables: start-up fails
///   naming the missing privileges and the GRANT, instead of reporting
///   ready and answering every request 500;
/// - once that GRANT is run, the same settings come up and serve.
#[test]
fn roles_without_privileges_get_clear_errors() {
    let rt = runtime();
    let Some(cluster) = rt.block_on(cluster_with_passwords()) else {
        return;
    };
    let url = format!(
        "postgres://limited:{LIMITED_PASSWORD}@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let dir = tempfile::tempdir().unwrap();
    let (status, log) = serve_until_it_gives_up(dir.path(), &url, "text");
    let text = log.join("\n");
    assert!(!status.success(), "{status}\n{text}");
    assert!(!text.contains("database not reachable yet"), "{text}");
    let last = log.last().unwrap();
    let (status, stdout, stderr) = migrate(dir.path(), &url);
    assert!(!status.success(), "migrate {status}\n{stderr}");
    let migrate_last = stderr.lines().last().unwrap_or_default();
    for line in [last.as_str(), migrate_last] {
        assert!(
            line.contains("cannot migrate the database")
                && line.contains("permission denied for schema public")
                && line.contains("42501")
                && line.contains("MIGRATION_DATABASE_URL"),
            "{line}"
        );
        assert!(
            !line.contains("Execution Error") && !line.contains("error returned from database"),
            "{line}"
        );
    }
    assert_clean("serve", &text);
    assert_clean("migrate", &format!("{stdout}{stderr}"));

    // Owner migrates, `app` serves, nothing granted to `app`. With
    // row-level security on (the default), requests run as todo_request:
    // `app` itself needs only what the service's own work does.
    let owner_url = cluster.url();
    let app_url = format!(
        "postgres://app:{APP_PASSWORD}@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", app_url.as_str()),
        ("MIGRATION_DATABASE_URL", owner_url.as_str()),
    ];
    let (status, log) =
        serve_until_it_stops(dir.path(), &env, "stops: the role cannot use the tables");
    let text = log.join("\n");
    assert!(!status.success(), "{status}\n{text}");
    assert!(!text.contains("database ready"), "{text}");
    let last = log.last().unwrap();
    assert!(
        last.contains("\"app\"")
            && last.contains("idempotency_keys (SELECT, DELETE)")
            && last.contains("service_probe (SELECT, INSERT, UPDATE)")
            && !last.contains("tasks (")
            && last.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"),
        "{last}"
    );
    assert_clean("serve", &text);

    // The GRANT it suggested: next, `app` may not take the request role.
    as_owner(
        &rt,
        &cluster,
        &["GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"app\""],
    );
    let (status, log) =
        serve_until_it_stops(dir.path(), &env, "stops: the role cannot take todo_request");
    let text = log.join("\n");
    assert!(!status.success(), "{status}\n{text}");
    let last = log.last().unwrap();
    assert!(
        last.contains("DB_ROW_LEVEL_SECURITY is on")
            && last.contains("app may not take role todo_request")
            && last.contains("GRANT todo_request TO \"app\"")
            && last.contains("DB_ROW_LEVEL_SECURITY=off"),
        "{last}"
    );
    assert_clean("serve", &text);

    // Off, `app` serves as itself; one line says so. The tables force
    // row-level security on `app` too (not their owner, no BYPASSRLS):
    // requests still set their user, so each sees its own tasks.
    let off = [env.as_slice(), &[("DB_ROW_LEVEL_SECURITY", "off")]].concat();
    let server = Server::start(dir.path(), &off, &[]).expect("comes up with RLS off");
    create_and_see(&Client::new(), &server, &server, "off");
    let started = server.log_so_far().join("\n");
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}: {log}");
    let said = |text: &str| format!("{started}{log}").matches(text).count();
    assert_eq!(
        said("isolation rests on the query layer alone"),
        1,
        "{started}"
    );

    // The GRANT it suggested is enough.
    as_owner(&rt, &cluster, &["GRANT todo_request TO \"app\""]);
    let server = Server::start(dir.path(), &env, &[]).expect("comes up once granted");
    create_and_see(&Client::new(), &server, &server, "granted");
    let started = server.log_so_far().join("\n");
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}: {log}");
    assert!(started.contains("row-level security on"), "{started}");
}

/// A database whose owner may not create roles (no CREATEROLE), where no
/// administrator made the request role yet: the migrations run, start-up
/// stops and says what to run; with row-level security off it serves. Once
/// an administrator ran what it said, the next start-up grants the role
/// what requests need and serves under row-level security.
#[test]
fn without_the_request_role_start_up_says_what_to_run_then_heals() {
    let rt = runtime();
    let Some(cluster) = rt.block_on(cluster_with_passwords()) else {
        return;
    };
    as_owner(
        &rt,
        &cluster,
        &[
            &format!("CREATE ROLE maker LOGIN PASSWORD '{APP_PASSWORD}'"),
            "CREATE DATABASE made OWNER maker",
        ],
    );
    let url = format!(
        "postgres://maker:{APP_PASSWORD}@127.0.0.1:{}/made",
        cluster.port()
    );
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", url.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (status, log) = serve_until_it_stops(dir.path(), &env, "stops: no request role");
    let text = log.join("\n");
    assert!(!status.success(), "{status}\n{text}");
    let last = log.last().unwrap();
    assert!(
        last.contains("role todo_request does not exist")
            && last.contains("CREATE ROLE todo_request NOLOGIN; GRANT todo_request TO \"maker\"")
            && last.contains("DB_ROW_LEVEL_SECURITY=off"),
        "{last}"
    );
    assert_clean("serve", &text);

    let off = [env.as_slice(), &[("DB_ROW_LEVEL_SECURITY", "off")]].concat();
    let server = Server::start(dir.path(), &off, &[]).expect("serves with RLS off");
    let client = Client::new();
    let before = create_task(&client, &server, &token("ada"), "before the role");
    server.terminate();

    as_owner(
        &rt,
        &cluster,
        &["CREATE ROLE todo_request NOLOGIN; GRANT todo_request TO \"maker\""],
    );
    let server = Server::start(dir.path(), &env, &[]).expect("serves once the role exists");
    let list = list_tasks(&client, &server, &token("ada"));
    assert_eq!(list, json!([before]));
    assert_eq!(list_tasks(&client, &server, &token("bob")), json!([]));
    let started = server.log_so_far().join("\n");
    assert!(started.contains("row-level security on"), "{started}");
    server.terminate();
}

// ---------------------------------------------------------------------------
// 3. LOG_FORMAT=json.

/// Every stderr line of a run is a JSON object; each request line carries
/// `request_id`, `method`, `route` (the template), `status` and
/// `latency_ms` (numbers), and `user_id` (the caller's `sub`, or "-"); no
/// line holds a token or a query string, not even a token sent in one.
#[test]
fn json_logs_are_one_object_per_line_without_tokens_or_queries() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("BETTER_AUTH_SECRET", SECRET), ("LOG_FORMAT", "json")];
    let mut server = Server::start(dir.path(), &env, &[]).expect("starts with LOG_FORMAT=json");
    let client = Client::new();
    let alice = token("json-alice");
    let private = "private-query-value-7d3f9a";

    let mut sent: Vec<(&str, String, u16)> = Vec::new();
    let mut call = |name: &'static str, request: reqwest::blocking::RequestBuilder| {
        let response = request.send().unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or(Value::Null);
        sent.push((name, id, status));
        body
    };
    let created = call(
        "create",
        client
            .post(server.url("/api/tasks"))
            .bearer_auth(&alice)
            .json(&json!({"title": "logged"})),
    );
    let id = created["id"].as_i64().unwrap();
    call(
        "get",
        client
            .get(server.url(&format!("/api/tasks/{id}")))
            .bearer_auth(&alice),
    );
    call(
        "missing",
        client
            .get(server.url("/api/tasks/987654321"))
            .bearer_auth(&alice),
    );
    call(
        "token in query",
        client.get(server.url(&format!("/api/tasks?access_token={alice}"))),
    );
    call(
        "private query",
        client
            .get(server.url(&format!("/api/tasks?q={private}&limit=5")))
            .bearer_auth(&alice),
    );
    call("no route", client.get(server.url("/nowhere")));
    call(
        "preflight",
        client
            .request(reqwest::Method::OPTIONS, server.url("/api/tasks"))
            .header("Origin", crate::common::FRONTEND_ORIGIN)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization"),
    );
    let statuses: Vec<(&str, u16)> = sent.iter().map(|(n, _, s)| (*n, *s)).collect();
    assert_eq!(
        statuses,
        [
            ("create", 201),
            ("get", 200),
            ("missing", 404),
            ("token in query", 401),
            ("private query", 200),
            ("no route", 404),
            ("preflight", 200)
        ]
    );

    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    server.rest_of_log();
    let log = server.log_so_far();

    let mut objects = Vec::new();
    for line in &log {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", log.join("\n")));
        assert!(object.is_object(), "{line}");
        assert!(
            !line.contains(&alice) && !line.contains(private) && !line.contains("access_token"),
            "a token or a query string in the log: {line}"
        );
        objects.push(object);
    }
    let messages: Vec<&str> = objects
        .iter()
        .map(|o| o["message"].as_str().unwrap_or_default())
        .collect();
    for expected in [
        "listening",
        "database ready",
        "shutdown signal received; finishing in-flight requests",
        "shut down",
    ] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} in {messages:?}"
        );
    }
    let requests: HashMap<&str, &Value> = objects
        .iter()
        .filter(|o| o["target"] == "todo_api::request" && o["message"] == "request")
        .map(|o| (o["request_id"].as_str().expect("a request_id"), o))
        .collect();
    let expected = [
        ("create", "POST", "/api/tasks", "json-alice"),
        ("get", "GET", "/api/tasks/{id}", "json-alice"),
        ("missing", "GET", "/api/tasks/{id}", "json-alice"),
        ("token in query", "GET", "/api/tasks", "-"),
        ("private query", "GET", "/api/tasks", "json-alice"),
        ("no route", "GET", "unmatched", "-"),
        ("preflight", "OPTIONS", "/api/tasks", "-"),
    ];
    assert_eq!(
        requests.len(),
        expected.len(),
        "one line per request: {requests:?}"
    );
    for ((name, request_id, status), (_, method, route, user)) in sent.iter().zip(expected) {
        let line = requests
            .get(request_id.as_str())
            .unwrap_or_else(|| panic!("{name}: no line with request_id {request_id}"));
        assert_eq!(line["method"], method, "{name}: {line}");
        assert_eq!(line["route"], route, "{name}: {line}");
        assert_eq!(line["status"], json!(status), "{name}: a number: {line}");
        assert!(line["latency_ms"].is_number(), "{name}: {line}");
        assert_eq!(line["user_id"], user, "{name}: {line}");
    }
}

/// A request's line is written before its response leaves: a SIGKILL right
/// after a burst of 200 requests on two worker threads loses none of them,
/// and no two lines are torn into each other. (Lines batched per thread
/// would be lost with the process, the very lines a crash needs.)
#[test]
fn request_lines_survive_a_sigkill_whole() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("LOG_FORMAT", "json"),
        ("WORKER_THREADS", "2"),
    ];
    let mut server = Server::start(dir.path(), &env, &[]).expect("starts");
    let alice = token("killed-alice");

    // A busy stretch on both worker threads, SIGKILL right after it.
    let (threads, each) = (8, 25);
    let url = server.url("/api/tasks?limit=5");
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (url, alice) = (&url, &alice);
            scope.spawn(move || {
                let client = Client::new();
                for i in 0..each {
                    let response = client
                        .get(url)
                        .bearer_auth(alice)
                        .header("X-Request-Id", format!("busy-{t}-{i}"))
                        .send()
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            });
        }
    });
    server.kill();
    let rest = server.rest_of_log();
    let mut logged = HashMap::new();
    for line in &rest {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a torn or broken line ({e}): {line:?}"));
        if let Some(id) = object["request_id"].as_str() {
            *logged.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    for t in 0..threads {
        for i in 0..each {
            let id = format!("busy-{t}-{i}");
            assert_eq!(
                logged.get(&id),
                Some(&1),
                "{id} logged {:?} times",
                logged.get(&id)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. METRICS_ADDR.

/// One scrape of `GET /metrics`, parsed.
fn scrape(client: &Client, addr: &str) -> prometheus_parse::Scrape {
    let response = client.get(format!("http://{addr}/metrics")).send().unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    crate::common::metrics::parse(&response.text().unwrap())
}

/// `METRICS_ADDR` serves Prometheus text on its own listener: request
/// counts by method, route template and status, the latency histogram,
/// the pool gauges, JWKS fetches and refusals by a limit, each counting
/// exactly what was sent. The public port has no `/metrics`.
#[test]
fn metrics_count_what_happened_on_their_own_listener() {
    let rt = runtime();
    let key = TestKey::ed25519();
    let jwks = rt.block_on(crate::common::jwks_server::JwksServer::start(vec![
        key.jwk("metrics-kid"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let jwks_url = format!("{}/api/auth/jwks", jwks.base_url);
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("BETTER_AUTH_JWKS_URL", jwks_url.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("RATE_LIMIT_PER_USER", "1"),
        ("DB_MAX_CONNECTIONS", "7"),
        ("SSE_HEARTBEAT_SECONDS", "1"),
    ];
    let server = Server::start(dir.path(), &env, &[]).expect("starts with METRICS_ADDR");
    let metrics_addr = server.log_value("metrics listening", "addr");
    assert_ne!(metrics_addr, server.addr);
    let client = Client::new();

    // N creates and M lists, each by a user of its own (one request each,
    // within RATE_LIMIT_PER_USER's burst); one list with an EdDSA token.
    const N: usize = 3;
    const M: usize = 2;
    for i in 0..N {
        create_task(&client, &server, &token(&format!("creator-{i}")), "counted");
    }
    let eddsa = key.token("metrics-kid", &claims_for("eddsa-lister"));
    for i in 0..M {
        let bearer = if i == 0 {
            eddsa.clone()
        } else {
            token(&format!("lister-{i}"))
        };
        list_tasks(&client, &server, &bearer);
    }
    assert!(
        jwks.fetches() >= 1,
        "the EdDSA token made the server fetch the keys"
    );

    // A burst from one user over RATE_LIMIT_PER_USER=1 (bursts of 2).
    let burster = token("burster");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let (client, burster, url) = (&client, &burster, server.url("/api/tasks"));
                scope.spawn(move || {
                    client
                        .get(url)
                        .bearer_auth(burster)
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(refused > 0, "{statuses:?}");
    assert_eq!(refused + served, statuses.len(), "{statuses:?}");

    let public = client.get(server.url("/metrics")).send().unwrap();
    assert_eq!(public.status(), 404, "no metrics on the public port");
    // Methods a client makes up share one label (else each is a series
    // kept for the life of the process).
    for made_up in ["FOO1", "FOO2", "FOO3"] {
        let method = reqwest::Method::from_bytes(made_up.as_bytes()).unwrap();
        let response = client
            .request(method, server.url("/api/tasks"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/api/tasks"))
        .header("Origin", crate::common::FRONTEND_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert_eq!(preflight.status(), 200);

    let scrape = scrape(&client, &metrics_addr);
    let requests = |method, route, status| {
        value(
            &scrape,
            "http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/api/tasks", "201"), N as f64);
    assert_eq!(requests("GET", "/api/tasks", "200"), (M + served) as f64);
    assert_eq!(requests("GET", "/api/tasks", "429"), refused as f64);
    assert_eq!(
        requests("GET", "unmatched", "404"),
        1.0,
        "/metrics on the public port"
    );
    assert_eq!(
        requests("OPTIONS", "/api/tasks", "200"),
        1.0,
        "the preflight"
    );
    assert_eq!(requests("OTHER", "/api/tasks", "405"), 3.0);
    for s in &scrape.samples {
        if let Some(method) = s.labels.get("method") {
            assert!(
                ["GET", "POST", "OPTIONS", "OTHER"].contains(&method),
                "{}: {method}",
                s.metric
            );
        }
    }
    for (method, count) in [("POST", N), ("GET", M + served + refused)] {
        let labels = [("method", method), ("route", "/api/tasks")];
        let histogram = sample(&scrape, "http_request_duration_seconds", &labels)
            .unwrap_or_else(|| panic!("no {method} histogram"));
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("{method}: not a histogram: {:?}", histogram.value);
        };
        assert!(buckets.len() >= 10, "{method}: {buckets:?}");
        let total = buckets
            .iter()
            .find(|b| b.less_than == f64::INFINITY)
            .expect("a +Inf bucket");
        assert_eq!(total.count, count as f64, "{method}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "cumulative: {buckets:?}"
        );
        assert_eq!(
            value(&scrape, "http_request_duration_seconds_count", &labels),
            count as f64
        );
        assert!(value(&scrape, "http_request_duration_seconds_sum", &labels) > 0.0);
    }
    assert_eq!(value(&scrape, "db_pool_max_connections", &[]), 7.0);
    let open = value(&scrape, "db_pool_connections", &[]);
    assert!((1.0..=7.0).contains(&open), "{open}");
    assert!(sample(&scrape, "db_pool_idle_connections", &[]).is_some());
    assert!(value(&scrape, "jwks_fetches_total", &[("outcome", "ok")]) >= 1.0);
    assert_eq!(
        value(
            &scrape,
            "requests_refused_total",
            &[("reason", "too_many_requests")]
        ),
        refused as f64
    );
    // A live stream is counted while it is open, and not once its client
    // has gone (seen at the next heartbeat, SSE_HEARTBEAT_SECONDS=1).
    assert_eq!(value(&scrape, "live_streams", &[]), 0.0);
    let stream = client
        .get(server.url("/api/tasks/events"))
        .bearer_auth(token("watcher"))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        value(&self::scrape(&client, &metrics_addr), "live_streams", &[]),
        1.0
    );
    drop(stream);
    let closed = std::time::Instant::now();
    while value(&self::scrape(&client, &metrics_addr), "live_streams", &[]) != 0.0 {
        assert!(
            closed.elapsed() < Duration::from_secs(10),
            "a closed stream still counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");
}

/// A `METRICS_ADDR` that cannot be listened on stops start-up, as a public
/// port that cannot be does, with a line that says which: whoever asked for
/// metrics does not get a server that quietly has none.
#[test]
fn a_metrics_address_in_use_stops_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let command = todo_api(
        dir.path(),
        &[
            ("BETTER_AUTH_SECRET", SECRET),
            ("METRICS_ADDR", addr.as_str()),
            ("PORT", "0"),
        ],
    );
    let (status, _, stderr) = run_bounded(command, Duration::from_secs(30));
    assert!(!status.success(), "{status}\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&addr) && last.contains("METRICS_ADDR"),
        "{last}"
    );
    drop(taken);
}

// ---------------------------------------------------------------------------
// 5. Through a transaction-mode PgBouncer.

/// `seaql_migrations` at `url` holds each migration exactly once.
async fn assert_each_migration_applied_once(url: &str, context: &str) {
    let conn = Database::connect(url).await.unwrap();
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT count(*) AS n FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap();
    let _ = conn.close().await;
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        migration::Migrator::migrations().len() as i64,
        "{context}"
    );
}

/// A create through `server` as `user`, then the user's list through
/// `other` holds it.
fn create_and_see(client: &Client, server: &Server, other: &Server, user: &str) {
    let bearer = token(user);
    let created = create_task(
        client,
        server,
        &bearer,
        &format!("through the pooler, {user}"),
    );
    let list = list_tasks(client, other, &bearer);
    assert!(list.as_array().unwrap().contains(&created), "{list}");
}

/// Two instances started at once on an empty database through PgBouncer in
/// transaction mode (migrations through the pooler too) both come up, the
/// migrations ran once, and both serve. One of them, killed and restarted
/// onto server connections the others used, comes up and serves.
#[test]
fn two_instances_start_at_once_through_a_transaction_pooler_and_restart() {
    let rt = runtime();
    let Some(db) = rt.block_on(TestDb::create(Backend::PgBouncer)) else {
        return;
    };
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", db.app_url.as_str()),
        ("DB_POOL_MODE", "transaction"),
    ];
    let mut servers = crate::cli::start_two_at_once(&env);
    rt.block_on(assert_each_migration_applied_once(
        &db.url,
        "each migration ran once",
    ));
    let client = Client::new();
    create_and_see(&client, &servers[0], &servers[1], "pooled-a");
    create_and_see(&client, &servers[1], &servers[0], "pooled-b");

    // One crashes (SIGKILL: no goodbye to PgBouncer, whose server
    // connections keep whatever it left there) and is restarted, while the
    // other keeps using the pooler.
    let mut first = servers.remove(0);
    first.kill();
    let dir = tempfile::tempdir().unwrap();
    let restarted =
        Server::start(dir.path(), &env, &[]).expect("comes up again through the pooler");
    create_and_see(&client, &restarted, &servers[0], "pooled-c");
    create_and_see(&client, &servers[0], &restarted, "pooled-d");
    for server in [restarted, servers.remove(0)] {
        let (status, log) = server.terminate();
        assert!(status.success(), "{status}: {log}");
        assert!(!log.contains(" ERROR "), "{log}");
    }
}

/// The same with `MIGRATION_DATABASE_URL` set to the direct URL: migrations
/// bypass the pooler, requests go through it.
#[test]
fn two_instances_start_at_once_with_a_direct_migration_url() {
    let rt = runtime();
    let Some(db) = rt.block_on(TestDb::create(Backend::PgBouncer)) else {
        return;
    };
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", db.app_url.as_str()),
        ("MIGRATION_DATABASE_URL", db.url.as_str()),
        ("DB_POOL_MODE", "transaction"),
    ];
    let servers = crate::cli::start_two_at_once(&env);
    rt.block_on(assert_each_migration_applied_once(
        &db.url,
        "each migration ran once",
    ));
    let client = Client::new();
    create_and_see(&client, &servers[0], &servers[1], "direct-a");
    for server in servers {
        let (status, log) = server.terminate();
        assert!(status.success(), "{status}: {log}");
    }
}

/// `todo-api migrate` through the pooler (no direct URL), twice: the first
/// applies every migration, the second, on server connections the first
/// used, finds nothing to do; a server then starts on the result.
#[test]
fn the_migrate_command_works_through_a_transaction_pooler() {
    let rt = runtime();
    let Some(db) = rt.block_on(TestDb::create(Backend::PgBouncer)) else {
        return;
    };
    let env = [
        ("BETTER_AUTH_SECRET", SECRET),
        ("DATABASE_URL", db.app_url.as_str()),
        ("DB_POOL_MODE", "transaction"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for run in ["first", "second"] {
        let mut command = todo_api(dir.path(), &env);
        command.arg("migrate");
        let (status, stdout, stderr) = run_bounded(command, Duration::from_secs(60));
        assert!(status.success(), "{run} migrate: {status}\n{stderr}");
        assert!(stdout.contains("migrations applied"), "{run}: {stdout}");
        rt.block_on(assert_each_migration_applied_once(
            &db.url,
            &format!("{run} migrate"),
        ));
    }
    let server = Server::start(dir.path(), &env, &[]).expect("starts on the migrated database");
    create_and_see(&Client::new(), &server, &server, "after-migrate");
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}: {log}");
}
