//! A private, throw-away PostgreSQL cluster owned by one test, so a test can
//! stop, kill and restart "the database" without touching the shared server.
//!
//! `initdb` into a temporary directory, a free loopback port, the unix socket
//! in the same directory, trust authentication, `fsync = off` (a test cluster
//! needs no crash safety against power loss; `synchronous_commit` stays on, so
//! a commit is in the WAL before it is acknowledged and survives
//! `pg_ctl stop -m immediate`). PostgreSQL refuses to run as root: as root,
//! every command runs as the `postgres` user through `runuser`.
//!
//! Dropping the cluster stops it (immediate) and removes the directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::in_ci;

/// How `pg_ctl` stops the server (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Rolls back open transactions, disconnects clients (`57P01`), checkpoints.
    Fast,
    /// Kills every process at once (like a crash); recovery replays the WAL.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

pub struct PgCluster {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest installed server's binaries (`TEST_PG_BINDIR` overrides).
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if preferred.join("pg_ctl").exists() {
        return Some(preferred);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    /// A new cluster, started. `None` (after a loud message) when one cannot
    /// be created outside CI; under `CI=true` that is a failure.
    pub async fn start_new() -> Option<PgCluster> {
        match Self::try_start_new().await {
            Ok(cluster) => Some(cluster),
            Err(why) if !in_ci() => {
                eprintln!(
                    "\n!!!!! SKIPPED: private PostgreSQL cluster test: {why}. It needs PostgreSQL's server \
                     binaries (/usr/lib/postgresql/*/bin or TEST_PG_BINDIR) and, as root, a `postgres` user. \
                     In CI this fails. !!!!!\n"
                );
                None
            }
            Err(why) => panic!("CI=true and a private PostgreSQL cluster cannot be created: {why}"),
        }
    }

    async fn try_start_new() -> Result<PgCluster, String> {
        let bin = bin_dir().ok_or("no PostgreSQL server binaries found")?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("todo-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        if as_postgres {
            let user = nix_user("postgres").ok_or("no `postgres` user to run PostgreSQL as")?;
            std::os::unix::fs::chown(dir.path(), Some(user.0), Some(user.1))
                .map_err(|e| format!("chown temp dir: {e}"))?;
        }
        let port = super::ports::free_port();
        let cluster = PgCluster {
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            dir: Some(dir),
            bin,
            port,
            as_postgres,
        };
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    path(&cluster.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )
            .await?;
        let conf = format!(
            "\n# todo-api test cluster\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{socket}'\nfsync = off\nfull_page_writes = off\n\
             max_connections = 100\nshared_buffers = 32MB\n",
            socket = cluster.socket_dir().display(),
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .map_err(|e| format!("postgresql.conf: {e}"))?;
        cluster.start().await?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn socket_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path(&self.data),
                "-l",
                path(&self.log),
            ],
        )
        .await
        .map(|_| ())
    }

    /// Replaces `pg_hba.conf` with `rules` and restarts the server, so that
    /// the next connection is checked against them (a reload would apply
    /// them a moment later).
    pub async fn set_hba(&self, rules: &str) -> Result<(), String> {
        std::fs::write(self.data.join("pg_hba.conf"), rules)
            .map_err(|e| format!("pg_hba.conf: {e}"))?;
        self.restart(StopMode::Fast).await
    }

    /// Serves TLS with this certificate and key (PEM files), and
    /// `password_encryption` SCRAM (the default); restarts.
    pub async fn enable_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data.join(to);
            std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
            // The server reads its key only if no one else may.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            if self.as_postgres {
                let (uid, gid) = nix_user("postgres").ok_or("no `postgres` user")?;
                std::os::unix::fs::chown(&to, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                )
            })
            .map_err(|e| format!("postgresql.conf: {e}"))?;
        self.restart(StopMode::Fast).await
    }

    /// The port it listens on (or will, once started), on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server and waits until it is gone.
    pub async fn stop(&self, mode: StopMode) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                mode.arg(),
                "-D",
                path(&self.data),
            ],
        )
        .await
        .map(|_| ())
    }

    /// Stops (`mode`) and starts again, waiting until it accepts connections.
    pub async fn restart(&self, mode: StopMode) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "restart",
                "-w",
                "-t",
                "60",
                "-m",
                mode.arg(),
                "-D",
                path(&self.data),
                "-l",
                path(&self.log),
            ],
        )
        .await
        .map(|_| ())
    }

    /// Suspends every process of the server (`SIGSTOP`): the database
    /// hangs with its connections open, as in a VM pause or an I/O stall;
    /// its `statement_timeout` cannot fire. Returns how many processes.
    pub fn freeze(&self) -> usize {
        self.signal_all(libc::SIGSTOP)
    }

    /// Resumes the processes [`PgCluster::freeze`] suspended (`SIGCONT`).
    pub fn thaw(&self) -> usize {
        self.signal_all(libc::SIGCONT)
    }

    /// Sends `signal` to the postmaster of this cluster and its children
    /// (found by parent pid in /proc): these processes only.
    fn signal_all(&self, signal: i32) -> usize {
        let Some(postmaster) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|f| f.lines().next()?.trim().parse::<i32>().ok())
        else {
            return 0; // not running
        };
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions; these pids are
            // this cluster's processes.
            unsafe { libc::kill(*pid, signal) };
        }
        pids.len()
    }

    /// The server's log so far (for a failing assertion's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            // `runuser` keeps our working directory, which the postgres
            // user may not be allowed to enter: use the cluster's own.
            .current_dir(self.socket_dir())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(90), command.output())
            .await
            .map_err(|_| format!("{} {args:?} did not finish in 90 s", program.display()))?
            .map_err(|e| format!("{} {args:?}: {e}", program.display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "{} {args:?}: {}\n{}{}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // A frozen server would not stop.
        self.thaw();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        // Immediate: nothing here is worth a checkpoint. Fails harmlessly
        // when the server is already stopped.
        let _ = command
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .current_dir(self.socket_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // TempDir's drop removes the directory (we are root or its owner).
        drop(self.dir.take());
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// uid and gid of `name`, from /etc/passwd.
fn nix_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}
