//! A private HAProxy running the shipped `deploy/haproxy.cfg` itself, with
//! this test's ports (and check intervals) in the environment variables the
//! file reads: what is tested is what is shipped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The example configuration, used as it is.
pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg");

/// Where Debian puts it (`/usr/sbin` is not on every user's PATH).
const CANDIDATES: [&str; 2] = ["haproxy", "/usr/sbin/haproxy"];

pub struct HaProxy {
    child: Child,
    /// Where clients connect.
    pub port: u16,
    /// The stats page (`/stats;csv`).
    pub stats_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One row of HAProxy's CSV statistics, the fields the tests read.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (going up), `MAINT`, `no check`.
    pub status: String,
    /// Responses with a 2xx status relayed from this server.
    pub hrsp_2xx: u64,
    pub hrsp_5xx: u64,
    /// Connection errors, response errors, retries and redispatches.
    pub econ: u64,
    pub eresp: u64,
    pub wretr: u64,
    pub wredis: u64,
}

impl HaProxy {
    /// The HAProxy binary; `None` (after a loud message) when it is not
    /// installed, outside CI.
    pub fn binary() -> Option<&'static str> {
        let found = CANDIDATES
            .into_iter()
            .find(|bin| Command::new(bin).arg("-v").output().is_ok());
        if found.is_none() {
            assert!(
                !super::in_ci(),
                "CI=true: haproxy is not installed (apt-get install haproxy; .ci/run does)"
            );
            eprintln!(
                "\n!!!!! SKIPPED: HAProxy test: haproxy is not installed (apt-get install haproxy). In CI this fails. !!!!!\n"
            );
        }
        found
    }

    /// Starts `bin` on `deploy/haproxy.cfg` with `env` (the file's
    /// variables) plus the two ports it picks, and waits until it answers.
    pub fn start(bin: &str, env: &[(&str, &str)]) -> HaProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, stats_port) = (super::ports::free_port(), super::ports::free_port());
        let log = dir.path().join("haproxy.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(["-f", CONFIG, "-db"])
            .env("LB_BIND", format!("127.0.0.1:{port}"))
            .env("LB_STATS_BIND", format!("127.0.0.1:{stats_port}"))
            .envs(env.iter().copied())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn haproxy");
        let haproxy = HaProxy {
            child,
            port,
            stats_port,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while haproxy.try_stats().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "haproxy did not start:\n{}",
                haproxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Everything HAProxy wrote so far (its request log included).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The statistics of each server of `backend`, by name.
    pub fn servers(&self, backend: &str) -> Vec<(String, ServerStats)> {
        self.try_stats()
            .expect("haproxy stats")
            .into_iter()
            .filter(|(proxy, server, _)| {
                proxy == backend && server != "BACKEND" && server != "FRONTEND"
            })
            .map(|(_, server, stats)| (server, stats))
            .collect()
    }

    /// Waits until every server of `backend` is UP (its checks passed).
    pub fn wait_until_up(&self, backend: &str, within: Duration) {
        let started = Instant::now();
        while !self.servers(backend).iter().all(|(_, s)| s.status == "UP") {
            assert!(
                started.elapsed() < within,
                "not every server of {backend} UP in HAProxy within {within:?}: {:?}",
                self.servers(backend)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One server's statistics.
    pub fn server(&self, backend: &str, server: &str) -> ServerStats {
        self.servers(backend)
            .into_iter()
            .find(|(name, _)| name == server)
            .map(|(_, stats)| stats)
            .unwrap_or_else(|| panic!("no server {backend}/{server} in haproxy stats"))
    }

    /// (proxy, server, stats) for every row of `/stats;csv`, or `None` when
    /// the stats page does not answer (yet).
    fn try_stats(&self) -> Option<Vec<(String, String, ServerStats)>> {
        let csv = http_get(self.stats_port, "/stats;csv")?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (pxname, svname, status) = (column("pxname")?, column("svname")?, column("status")?);
        let numbers = ["hrsp_2xx", "hrsp_5xx", "econ", "eresp", "wretr", "wredis"].map(column);
        Some(
            lines
                .filter(|l| !l.is_empty())
                .map(|line| {
                    let fields: Vec<&str> = line.split(',').collect();
                    let field = |i: Option<usize>| {
                        i.and_then(|i| fields.get(i))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0)
                    };
                    let stats = ServerStats {
                        status: fields.get(status).copied().unwrap_or("").to_owned(),
                        hrsp_2xx: field(numbers[0]),
                        hrsp_5xx: field(numbers[1]),
                        econ: field(numbers[2]),
                        eresp: field(numbers[3]),
                        wretr: field(numbers[4]),
                        wredis: field(numbers[5]),
                    };
                    (
                        fields.get(pxname).copied().unwrap_or("").to_owned(),
                        fields.get(svname).copied().unwrap_or("").to_owned(),
                        stats,
                    )
                })
                .collect(),
        )
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET over a fresh connection (`Connection: close`), the body as text;
/// `None` on any failure. Blocking and bounded, for polling the stats page.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The stats page is sent chunked: join the chunks.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return Some(out);
            }
            out.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
    }
    Some(body.to_owned())
}
