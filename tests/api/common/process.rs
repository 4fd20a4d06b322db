//! The real binary, started as an operator would: a clean environment (no
//! inherited settings, no `.env` unless the test writes one), a random port,
//! its log lines read as they come, signals, and how long it takes to exit.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_todo-api");

/// How long start-up and a log line are waited for before the test fails.
const LOG_WAIT: Duration = Duration::from_secs(30);

/// The binary with a clean environment (no inherited settings, no .env).
pub fn todo_api(dir: &Path, env: &[(&str, &str)]) -> Command {
    todo_api_at(Path::new(BIN), dir, env)
}

/// A copy of the binary that any user may run: the build's own lies inside
/// the checkout, which another user (`nobody`) cannot reach when the
/// checkout is in a private directory (under `/root`, a `mktemp -d`).
pub fn binary_for_any_user() -> &'static Path {
    use std::os::unix::fs::PermissionsExt;
    static COPY: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (_, path) = COPY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("todo-api");
        std::fs::copy(BIN, &path).expect("copy the binary");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    });
    path
}

/// The binary at `path` with a clean environment.
pub fn todo_api_at(path: &Path, dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the child with this open-file limit (`RLIMIT_NOFILE`), as a shell's
/// `ulimit -S -n soft` (and `-H -n hard`) would. `None` keeps the hard limit.
pub fn with_open_file_limit(cmd: &mut Command, soft: u64, hard: Option<u64>) {
    let hard = hard.unwrap_or_else(|| open_file_limit().1);
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// This process's open-file limit: (soft, hard).
pub fn open_file_limit() -> (u64, u64) {
    rlimit::Resource::NOFILE.get().expect("getrlimit")
}

/// Raises this (test) process's soft open-file limit to at least `wanted`;
/// false when the hard limit does not allow it.
pub fn raise_own_open_file_limit(wanted: u64) -> bool {
    rlimit::increase_nofile_limit(wanted).is_ok_and(|soft| soft >= wanted)
}

/// The soft and hard `Max open files` of a running process, from /proc.
pub fn open_file_limit_of(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/pid/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// A started server and the address it printed. Killed when dropped, so a
/// failing test leaves no process behind.
pub struct Server {
    child: Child,
    pub addr: String,
    pub stdout: Vec<String>,
    stderr_rx: mpsc::Receiver<String>,
    stdout_rx: mpsc::Receiver<String>,
    /// Every stderr line read so far, start-up included (see [`Server::log_so_far`]).
    history: Mutex<Vec<String>>,
    exited: Option<ExitStatus>,
}

/// The value of `field` in the log line whose message is exactly `message`,
/// in either log format: text (`... target: message field=value ...`) or
/// `LOG_FORMAT=json` (`{"message": "...", "field": "...", ...}`). Exact, so
/// that `listening` does not match `metrics listening`.
pub fn log_field(line: &str, message: &str, field: &str) -> Option<String> {
    if line.starts_with('{') {
        let object: serde_json::Value = serde_json::from_str(line).ok()?;
        if object["message"] != message {
            return None;
        }
        return match &object[field] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
    }
    let (_, after) = line.split_once(&format!(": {message} "))?;
    after
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(&format!("{field}=")))
        .map(str::to_owned)
}

impl Server {
    /// Starts `serve` on a random port and waits (bounded) for its
    /// "listening" line, then for "database ready".
    pub fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<Server, String> {
        Self::start_with(dir, env, args, |_| {})
    }

    /// The same, with the command adjusted first (e.g. [`with_open_file_limit`]).
    pub fn start_with(
        dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        let mut server = Self::spawn(dir, env, args, adjust)?;
        // It listens at once; it is ready once the database is.
        server.wait_for_log("database ready");
        // What it printed before listening (`--dev`), read by now.
        server.stdout.extend(server.stdout_rx.try_iter());
        Ok(server)
    }

    /// Starts `serve` on a random port and returns as soon as it listens,
    /// whether or not its database can be reached.
    pub fn start_listening(
        dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Server, String> {
        Self::spawn(dir, env, args, |_| {})
    }

    /// Starts `serve` as another user (`uid`, `gid`: root may), from a copy of
    /// the binary that user can reach, and waits for "database ready".
    pub fn start_as(
        dir: &Path,
        env: &[(&str, &str)],
        uid: u32,
        gid: u32,
    ) -> Result<Server, String> {
        let server = Self::spawn_from(binary_for_any_user(), dir, env, &[], |cmd| {
            cmd.uid(uid).gid(gid);
        })?;
        server.wait_for_log("database ready");
        Ok(server)
    }

    fn spawn(
        dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        Self::spawn_from(Path::new(BIN), dir, env, args, adjust)
    }

    fn spawn_from(
        program: &Path,
        dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        let mut cmd = todo_api_at(program, dir, &[env, &[("PORT", "0")]].concat());
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(LOG_WAIT) {
                Ok(line) => {
                    let addr = log_field(&line, "listening", "addr");
                    seen.push(line);
                    if let Some(addr) = addr {
                        return Ok(Server {
                            child,
                            addr,
                            stdout: out_rx.try_iter().collect(),
                            stderr_rx: rx,
                            stdout_rx: out_rx,
                            history: Mutex::new(seen),
                            exited: None,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a log line containing `text`; returns every line read.
    pub fn wait_for_log(&self, text: &str) -> Vec<String> {
        self.wait_for_log_within(text, LOG_WAIT)
            .unwrap_or_else(|seen| panic!("no log line with {text:?} in:\n{}", seen.join("\n")))
    }

    /// Waits up to `limit` for a log line containing `text`: every line read,
    /// in `Ok` when it came, in `Err` when it did not.
    pub fn wait_for_log_within(
        &self,
        text: &str,
        limit: Duration,
    ) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.history.lock().unwrap().push(line.clone());
                    seen.push(line);
                    if found {
                        return Ok(seen);
                    }
                }
                Err(_) => return Err(seen),
            }
        }
    }

    /// Sends SIGTERM; the moment it was sent.
    pub fn sigterm(&self) -> Instant {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: a signal to our own child, which has not been reaped yet
        // (`exited` is set only by waiting), so the pid cannot be reused.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "kill -TERM: {}", std::io::Error::last_os_error());
        Instant::now()
    }

    /// Sends SIGTERM and waits until the server says it is shutting down.
    pub fn signal_and_wait_for_shutdown_notice(&self) {
        self.sigterm();
        self.wait_for_log("shutdown signal received");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling the exit status: a 5 ms resolution is enough for
            // bounds of a second or more.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then the exit status and the rest of stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        if self.exited.is_none() {
            self.sigterm();
        }
        let status = match self.exited {
            Some(status) => status,
            None => {
                let status = self.child.wait().expect("wait");
                self.exited = Some(status);
                status
            }
        };
        (status, self.rest_of_log().join("\n"))
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Every log line not read yet, up to the end of stderr (the process
    /// has exited, or is about to).
    pub fn rest_of_log(&self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr_rx.recv_timeout(Duration::from_secs(5)) {
            self.history.lock().unwrap().push(line.clone());
            rest.push(line);
        }
        rest
    }

    /// Every stderr line read so far, from the first: those read while
    /// starting, by [`Server::wait_for_log`] and by [`Server::rest_of_log`].
    pub fn log_so_far(&self) -> Vec<String> {
        self.history.lock().unwrap().clone()
    }

    /// The `field` of the first line whose message is exactly `message`
    /// (see [`log_field`]), among the lines read so far or, waiting
    /// (bounded) for it, those still to come.
    pub fn log_value(&self, message: &str, field: &str) -> String {
        let find = |lines: &[String]| lines.iter().find_map(|l| log_field(l, message, field));
        if let Some(value) = find(&self.log_so_far()) {
            return value;
        }
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let lines = self
                .wait_for_log_within(message, left)
                .unwrap_or_else(|seen| {
                    panic!("no {message:?} line with {field}= in:\n{}", seen.join("\n"))
                });
            if let Some(value) = find(&lines) {
                return value;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `serve` with `env`, which must stop on its own within 30 s (`why`):
/// its exit status and every line it logged.
pub fn serve_until_it_stops(
    dir: &Path,
    env: &[(&str, &str)],
    why: &str,
) -> (ExitStatus, Vec<String>) {
    let mut server = Server::start_listening(dir, env, &[]).expect("listens at once");
    let status = server.wait_exit(Duration::from_secs(30)).expect(why);
    server.rest_of_log();
    (status, server.log_so_far())
}
