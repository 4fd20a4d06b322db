//! A private PgBouncer in transaction mode, left at its defaults otherwise
//! (so it refuses the start-up parameters `options` and
//! `extra_float_digits`, and, at 1.18, cannot route named prepared
//! statements): the third database setup, as Neon's `-pooler` hosts are.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgBouncer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// A PgBouncer in front of `upstream` (`host`, `port`), for `user` with
    /// no password; `None` (after a loud message) when it cannot run here
    /// outside CI.
    pub fn start(upstream_host: &str, upstream_port: u16, user: &str) -> Option<PgBouncer> {
        Self::start_with_pool_size(upstream_host, upstream_port, user, 20)
    }

    /// The same, with at most `pool_size` server connections per database and user.
    pub fn start_with_pool_size(
        upstream_host: &str,
        upstream_port: u16,
        user: &str,
        pool_size: u32,
    ) -> Option<PgBouncer> {
        let fail = |why: String| {
            assert!(!super::in_ci(), "CI=true: {why}");
            eprintln!("\n!!!!! SKIPPED: PgBouncer test: {why} !!!!!\n");
            None
        };
        if Command::new("pgbouncer").arg("--version").output().is_err() {
            return fail("pgbouncer is not installed (apt-get install pgbouncer)".into());
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // PgBouncer refuses to run as root: it runs as `postgres`, who must read this.
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777));
        let port = super::ports::free_port();
        let config = format!(
            "[databases]\n* = host={upstream_host} port={upstream_port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
             max_client_conn = 1000\ndefault_pool_size = {pool_size}\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).expect("config");
        std::fs::write(dir.path().join("users.txt"), format!("\"{user}\" \"\"\n")).expect("users");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "pgbouncer"]);
            c
        } else {
            Command::new("pgbouncer")
        };
        let child = match command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return fail(format!("cannot start pgbouncer: {e}")),
        };
        let bouncer = PgBouncer {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(bouncer._dir.path().join("pgbouncer.log"))
                    .unwrap_or_default();
                return fail(format!("pgbouncer did not listen on {port}: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(bouncer)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // `runuser` passes the signal on to pgbouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
