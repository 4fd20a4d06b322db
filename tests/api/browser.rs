//! The frontend, for real: headless Chromium on a page served from the Better
//! Auth origin (http://localhost:3000) signs a user up, gets a JWT and calls
//! this API cross-origin; the same calls from an origin not allowed by
//! CORS_ORIGINS are blocked by the browser. The browser side is
//! interop/better-auth/browser-test.mjs.

use std::process::Command;

use crate::common::node::{interop_dir, node_ready};
use crate::common::{Backend, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_and_uses_the_api_cross_origin() {
    if !node_ready() {
        return;
    }
    if !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            !crate::common::in_ci(),
            "CI=true: {CHROMIUM} is missing (apt-get install chromium)"
        );
        eprintln!(
            "\n!!!!! SKIPPED: browser test: {CHROMIUM} is missing (apt-get install chromium) !!!!!\n"
        );
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
    let dir = interop_dir();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("browser-test.mjs")
            .current_dir(dir)
            .env("API_URL", &api.base)
            .env("AUTH_PORT", "3000")
            .env("OTHER_PORT", "3001")
            .output()
            .map(|o| (o, api))
    })
    .await
    .unwrap()
    .expect("run node browser-test.mjs");
    let (output, api) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("PASS") && !stdout.contains("FAIL"),
        "{stdout}"
    );
    // What the browser did is really in the database: created, then deleted.
    assert!(api.db.snapshot().await.is_empty());
}
