//! The Node side of the interop tests: a real Better Auth server
//! (`interop/better-auth/server.mjs`) and the browser test script.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn interop_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/interop/better-auth"))
}

/// True when Node and the locked npm packages are ready; installs them with
/// `npm ci` on first use. `false` (after a loud message) when that is
/// impossible outside CI; under `CI=true` it panics instead.
pub fn node_ready() -> bool {
    let dir = interop_dir();
    let fail = |why: String| {
        if super::in_ci() {
            panic!("CI=true: {why}");
        }
        eprintln!("\n!!!!! SKIPPED: Better Auth interop test: {why} !!!!!\n");
        false
    };
    if Command::new("node").arg("--version").output().is_err() {
        return fail("node is not installed".into());
    }
    if !dir.join("node_modules/better-auth").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return fail(format!("`npm ci` failed in {}", dir.display()));
        }
    }
    true
}

/// A running Better Auth server, killed on drop.
pub struct BetterAuth {
    pub base_url: String,
    child: Child,
}

impl BetterAuth {
    /// Starts server.mjs with these variables and waits (bounded) for `READY <url>`.
    pub fn start(env: &[(&str, &str)]) -> BetterAuth {
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(interop_dir())
            .env("ENABLE_TEST_ROUTES", "1")
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn node server.mjs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        return BetterAuth {
                            base_url: url.trim().to_owned(),
                            child,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("Better Auth server did not print READY");
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
}

impl Drop for BetterAuth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
