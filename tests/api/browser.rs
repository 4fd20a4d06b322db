//! The frontend, for real: headless Chromium on a page served from the Better
//! Auth origin signs users up, gets JWTs and calls this API cross-origin. The
//! browser side is interop/better-auth/browser-test.mjs (CORS: calls from an
//! origin not allowed by CORS_ORIGINS are blocked) and browser-live-test.mjs
//! (live streams through HAProxy to three instances on PostgreSQL).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::haproxy::HaProxy;
use crate::common::node::{interop_dir, node_ready};
use crate::common::process::Server;
use crate::common::{Backend, TestApp, TestDb};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Node, the interop packages and Chromium are there (in CI they must be).
fn browser_ready() -> bool {
    if !node_ready() {
        return false;
    }
    if !Path::new(CHROMIUM).exists() {
        assert!(
            !crate::common::in_ci(),
            "CI=true: {CHROMIUM} is missing (apt-get install chromium)"
        );
        eprintln!(
            "\n!!!!! SKIPPED: browser test: {CHROMIUM} is missing (apt-get install chromium) !!!!!\n"
        );
        return false;
    }
    true
}

/// Runs `node <script>` in the interop directory with `env`; asserts that
/// every step passed.
async fn run_script(script: &'static str, env: Vec<(&'static str, String)>) -> Output {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(interop_dir())
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("run node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("PASS") && !stdout.contains("FAIL"),
        "{stdout}"
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_and_uses_the_api_cross_origin() {
    if !browser_ready() {
        return;
    }
    let auth_origin = "http://localhost:3000";
    let api = TestApp::builder(Backend::Sqlite)
        .env("BETTER_AUTH_URL", auth_origin)
        .env("JWT_ISSUER", auth_origin)
        .env("JWT_AUDIENCE", auth_origin)
        .env("CORS_ORIGINS", auth_origin)
        .start()
        .await
        .unwrap();
    let env = vec![
        ("API_URL", api.base.clone()),
        ("AUTH_PORT", "3000".into()),
        ("OTHER_PORT", "3001".into()),
    ];
    run_script("browser-test.mjs", env).await;
    // What the browser did is really in the database: created, then deleted.
    assert!(api.db.snapshot().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pages_see_each_others_changes_live_through_haproxy() {
    if !browser_ready() {
        return;
    }
    let Some(haproxy_bin) = HaProxy::binary() else {
        return;
    };
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let auth_origin = "http://localhost:3002";
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("BETTER_AUTH_URL", auth_origin),
        ("JWT_ISSUER", auth_origin),
        ("JWT_AUDIENCE", auth_origin),
        ("CORS_ORIGINS", auth_origin),
    ];
    let instances: Vec<Server> = (0..3)
        .map(|i| {
            Server::start(dir.path(), &env, &[])
                .unwrap_or_else(|log| panic!("instance {i} does not start:\n{log}"))
        })
        .collect();
    let haproxy_env = [
        ("TODO_API_1", instances[0].addr.as_str()),
        ("TODO_API_2", instances[1].addr.as_str()),
        ("TODO_API_3", instances[2].addr.as_str()),
        ("HC_INTER", "500ms"),
        ("HC_FASTINTER", "250ms"),
        ("HC_DOWNINTER", "250ms"),
    ];
    let haproxy = HaProxy::start(haproxy_bin, &haproxy_env);
    // (Blocking: the instances are processes of their own.)
    tokio::task::block_in_place(|| {
        haproxy.wait_until_up("todo_api_instances", Duration::from_secs(30))
    });
    let env = vec![
        ("API_URL", haproxy.url("")),
        (
            "STATS_URL",
            format!("http://127.0.0.1:{}/stats", haproxy.stats_port),
        ),
        ("AUTH_PORT", "3002".into()),
    ];
    run_script("browser-live-test.mjs", env).await;
    // The pages' writes are in the database: the deleted task gone, the two
    // others there, the renamed one as its first page left it.
    let rows = db.snapshot().await;
    let titles: Vec<&str> = rows.iter().filter_map(|r| r["title"].as_str()).collect();
    assert_eq!(titles, ["call mum tonight", "bob's"]);
}
