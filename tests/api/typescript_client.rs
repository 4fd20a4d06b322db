//! TypeScript clients generated from the served OpenAPI document, as the
//! Next.js frontend would make them (clients/typescript/, npm packages pinned
//! in its package-lock.json):
//!
//! - openapi-typescript (default flags) + openapi-fetch, and
//!   @hey-api/openapi-ts (its default fetch client) generate from the
//!   server's `/openapi.json`; the result must equal the committed
//!   `clients/typescript/generated/`, so a change of the document that changes
//!   what clients see fails here until it is looked at and committed
//!   (`UPDATE_TS_CLIENTS=1 cargo test --test api typescript` rewrites it);
//! - `tsc --strict` compiles a program that makes every call of the API with
//!   each client (no casts, no `any`), under the clients' own settings and
//!   under a Next.js app's; the programs then run against the server;
//! - `@redocly/cli lint` (recommended rules) finds no error in the document.
//!
//! Needs Node and npm; the packages are installed with `npm ci` on first use.
//! Skipped loudly without Node outside CI; under `CI=true` it fails instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

use crate::common::{Backend, TestApp, in_ci};

fn client_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/typescript"))
}

/// The packages' binaries the tests call.
const BINS: [&str; 4] = ["openapi-typescript", "openapi-ts", "tsc", "redocly"];

/// True when Node and the locked packages are ready (`npm ci` once per run
/// when any is missing). `false` after a loud message outside CI; panics in CI.
fn npm_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if Command::new("node").arg("--version").output().is_err() {
            return Err("node is not installed".into());
        }
        let dir = client_dir();
        // Installed, and not older than the lock file (npm ci writes
        // node_modules/.package-lock.json last).
        let installed = || {
            let modified = |p: &str| std::fs::metadata(dir.join(p)).and_then(|m| m.modified());
            BINS.iter()
                .all(|b| dir.join("node_modules/.bin").join(b).exists())
                && matches!(
                    (modified("node_modules/.package-lock.json"), modified("package-lock.json")),
                    (Ok(installed), Ok(locked)) if installed >= locked
                )
        };
        if !installed() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status();
            if !status.is_ok_and(|s| s.success()) || !installed() {
                return Err(format!("`npm ci` failed in {}", dir.display()));
            }
        }
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(why) if in_ci() => panic!("CI=true: TypeScript client test: {why}"),
        Err(why) => {
            eprintln!("\n!!!!! SKIPPED: TypeScript client test: {why} !!!!!\n");
            false
        }
    }
}

/// Runs a package binary (or `node`) in clients/typescript; panics with its
/// output unless it succeeds.
fn run(program: &str, args: &[&str]) -> Output {
    let dir = client_dir();
    let bin = dir.join("node_modules/.bin").join(program);
    let mut command = Command::new(if bin.exists() {
        bin.as_path()
    } else {
        Path::new(program)
    });
    let output = command
        .args(args)
        .current_dir(&dir)
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every file under `dir`, by relative path, with its contents.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    found.sort();
    found
}

/// Generates both clients from the document at `spec` into `out`, with the
/// commands of `npm run generate`.
fn generate(spec: &str, out: &Path) {
    let schema = out.join("openapi-typescript/schema.d.ts");
    run(
        "openapi-typescript",
        &[spec, "-o", schema.to_str().unwrap()],
    );
    run(
        "openapi-ts",
        &["-i", spec, "-o", out.join("hey-api").to_str().unwrap()],
    );
}

/// The programs use the generated types as they are: no `as` casts, no
/// `any`, no `@ts-` directives (comments aside).
#[test]
fn typescript_programs_use_no_escape_hatches() {
    let src = client_dir().join("src");
    let mut checked = 0;
    for (path, bytes) in files(&src) {
        let text = String::from_utf8(bytes).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let words: Vec<&str> = code
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .collect();
            assert!(
                !words.contains(&"as") && !words.contains(&"any") && !line.contains("@ts-"),
                "clients/typescript/src/{}:{}: {line}",
                path.display(),
                n + 1
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "{checked} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_clients_generated_from_the_document_compile_and_work() {
    if !npm_ready() {
        return;
    }
    let Some(app) = TestApp::start(Backend::Sqlite).await else {
        return;
    };
    let spec = app.url("/openapi.json");
    let base = app.base.clone();
    let token = app.token("ts-client");
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let committed = client_dir().join("generated");
        let fresh = tempfile::tempdir().unwrap();
        generate(&spec, fresh.path());
        if std::env::var_os("UPDATE_TS_CLIENTS").is_some() {
            let _ = std::fs::remove_dir_all(&committed);
            for (path, bytes) in files(fresh.path()) {
                let target = committed.join(path);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(target, bytes).unwrap();
            }
        }
        let (now, before) = (files(fresh.path()), files(&committed));
        if now != before {
            let changed: BTreeSet<String> = now
                .iter()
                .chain(&before)
                .filter(|file| !now.contains(file) || !before.contains(file))
                .map(|(path, _)| path.display().to_string())
                .collect();
            panic!(
                "The TypeScript clients generated from the OpenAPI document changed ({}): \
                 code written against the committed clients may no longer compile. \
                 Regenerate with `UPDATE_TS_CLIENTS=1 cargo test --test api typescript` \
                 and review `git diff clients/typescript/generated`.",
                Vec::from_iter(changed).join(", ")
            );
        }
        let generated = started.elapsed();

        // The clients' settings (emits dist/), then a Next.js app's.
        run("tsc", &["-p", "tsconfig.json"]);
        run("tsc", &["-p", "tsconfig.nextjs.json"]);
        let compiled = started.elapsed();

        for (program, done) in [
            ("dist/src/openapi-fetch.js", "openapi-fetch: ok"),
            ("dist/src/hey-api.js", "hey-api: ok"),
            ("dist/src/offline.js", "offline: ok"),
            ("dist/src/events.js", "events: ok"),
        ] {
            let output = run("node", &[program, &base, &token]);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains(done), "{program}: {stdout}");
        }
        eprintln!(
            "TypeScript clients: generated and compared in {generated:.1?}, compiled by {compiled:.1?}, ran by {:.1?}",
            started.elapsed()
        );
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}

/// Redocly's recommended rules: no error; the only warnings are the ones
/// listed here, with the reason they stay.
#[test]
fn openapi_document_passes_redocly_lint() {
    if !npm_ready() {
        return;
    }
    let document = todo_api::routes::openapi().to_pretty_json().unwrap();
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), document).unwrap();
    let output = run(
        "redocly",
        &["lint", file.path().to_str().unwrap(), "--format=json"],
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("redocly's JSON report");
    let expected = [
        // The probes answer 200, 500 or 503 and never a 4xx: declaring one
        // would not be true.
        ("operation-4xx-response", "#/paths/~1health/get/responses"),
        (
            "operation-4xx-response",
            "#/paths/~1health~1ready/get/responses",
        ),
    ];
    let problems: Vec<(String, String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["severity"].as_str().unwrap_or_default().to_owned(),
                p["ruleId"].as_str().unwrap_or_default().to_owned(),
                p["location"][0]["pointer"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let unexpected: Vec<_> = problems
        .iter()
        .filter(|(severity, rule, pointer)| {
            severity != "warn" || !expected.contains(&(rule.as_str(), pointer.as_str()))
        })
        .collect();
    assert_eq!(report["totals"]["errors"], 0, "{problems:#?}");
    assert!(unexpected.is_empty(), "redocly lint: {unexpected:#?}");
}
