//! A rolling restart behind a load balancer (the contract's "Shutdown" and
//! "Operating it"): three instances of the real binary on one PostgreSQL
//! database, HAProxy in front running `deploy/haproxy.cfg` itself, and
//! browser-like clients (keep-alive connections) creating, listing and
//! toggling tasks through it the whole time, while each instance in turn gets
//! SIGTERM (with `SHUTDOWN_DRAIN_SECONDS`), exits and is started again on its
//! port. No request fails as a client sees it, every acknowledged create is
//! stored exactly once, every acknowledged toggle is applied exactly once, and
//! each instance served traffic both before and after its restart.
//!
//! Two of the users also hold a live stream (`GET /api/tasks/events`)
//! through HAProxy the whole time, reconnecting with their last event id
//! whenever it ends (a draining instance ends its streams at once): each
//! receives its user's changes in order, none twice, none of the other
//! users', and ends at its user's final state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::common::haproxy::{HaProxy, ServerStats};
use crate::common::process::Server;
use crate::common::sse::SseStream;
use crate::common::{self, Backend, TestDb};

/// The backend and its servers, as named in `deploy/haproxy.cfg`.
const BACKEND: &str = "todo_api_instances";
const SERVERS: [&str; 3] = ["app1", "app2", "app3"];
/// Concurrent clients, each a user of its own with its own connection pool.
const CLIENTS: usize = 6;
/// A client's pause between two requests: a busy user, not a benchmark
/// (the machine running the test has two cores, shared).
const THINK: Duration = Duration::from_millis(10);
/// `SHUTDOWN_DRAIN_SECONDS` of every instance. The health checks below take
/// a draining instance out within inter + fastinter = 0.75 s (plus the
/// checks' own time); the drain leaves four times that.
const DRAIN: Duration = Duration::from_secs(3);
/// The check intervals of `deploy/haproxy.cfg`, shortened for a quick test
/// (the file's defaults are 1 s, 500 ms, 1 s).
const CHECKS: [(&str, &str); 3] = [
    ("HC_INTER", "500ms"),
    ("HC_FASTINTER", "250ms"),
    ("HC_DOWNINTER", "250ms"),
];
/// Responses an instance must have relayed (HAProxy's count) before it is
/// stopped, and again once it is back.
const SERVED: u64 = 25;
/// Bound on anything that should happen within seconds, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// How much later than its bound a process may exit on a loaded machine.
const LATE: Duration = Duration::from_secs(3);
/// Pause before a client repeats a request (connection error or 503).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The users (of the `CLIENTS`) that also hold a live stream.
const WATCHERS: usize = 2;

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// What one client did and saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged requests (a 2xx, after retries if any), by kind.
    creates: u64,
    lists: u64,
    toggles: u64,
    /// Attempts that were repeated, by kind and reason ("create: 503 ...").
    retries: BTreeMap<String, u64>,
    /// Requests that did not end in their 2xx, however many attempts.
    failures: Vec<String>,
    /// Acknowledged creates: (title, id).
    created: Vec<(String, i64)>,
    /// Per task: acknowledged toggles, and whether one of them needed a
    /// retry (a toggle repeated after a connection error may have been
    /// applied twice, so its count proves nothing then).
    toggled: HashMap<i64, (u64, bool)>,
}

/// A final answer: status, `X-Total-Count`, JSON body, and whether it took
/// more than one attempt.
struct Reply {
    status: StatusCode,
    total: Option<usize>,
    body: Value,
    retried: bool,
}

/// The innermost cause of a client error: "connection closed before message
/// completed", "Connection refused (os error 111)", ...
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Sends what `make` builds (afresh for each attempt, given its number),
/// repeating it ONLY after a connection error or a 503, as a careful client
/// does; anything else is the answer. `None` (a failure, recorded) when no
/// answer came within [`PATIENCE`] or the client timed out.
async fn send(
    tally: &mut Tally,
    kind: &str,
    make: impl Fn(u32) -> RequestBuilder,
) -> Option<Reply> {
    let deadline = Instant::now() + PATIENCE;
    for attempt in 0.. {
        let why = match make(attempt).send().await {
            Ok(response) => {
                let status = response.status();
                let total = response
                    .headers()
                    .get("x-total-count")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match response.bytes().await {
                    Ok(body) => {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if status != StatusCode::SERVICE_UNAVAILABLE {
                            return Some(Reply {
                                status,
                                total,
                                body,
                                retried: attempt > 0,
                            });
                        }
                        format!("503 {}", body["code"].as_str().unwrap_or("(no code)"))
                    }
                    Err(e) => format!("connection error in the body: {}", root_cause(&e)),
                }
            }
            Err(e) if e.is_timeout() => {
                tally
                    .failures
                    .push(format!("{kind}: no answer within {}: {e}", secs(PATIENCE)));
                return None;
            }
            Err(e) if e.is_connect() => format!("cannot connect: {}", root_cause(&e)),
            Err(e) => format!("connection error: {}", root_cause(&e)),
        };
        *tally.retries.entry(format!("{kind}: {why}")).or_default() += 1;
        if Instant::now() >= deadline {
            tally.failures.push(format!(
                "{kind}: gave up after {} attempts, the last: {why}",
                attempt + 1
            ));
            return None;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    unreachable!()
}

/// One user's browser: creates (each with its own `Idempotency-Key`, kept
/// for its retries), lists and toggles its tasks, one request at a time on
/// keep-alive connections, until `stop`.
async fn user(number: usize, base: String, token: String, stop: Arc<AtomicBool>) -> Tally {
    let http = Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let mut tally = Tally::default();
    // (id, completed) of each task created, as the last answer said.
    let mut tasks: Vec<(i64, bool)> = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // Each attempt has its own id, in the logs of HAProxy and of the instance.
        let request_id = |attempt: u32| format!("c{number}-{n}-{attempt}");
        match n % 4 {
            0 if !tasks.is_empty() => {
                let slot = usize::try_from(n / 4).unwrap() % tasks.len();
                let (id, completed) = tasks[slot];
                let url = format!("{base}/api/tasks/{id}/complete");
                let Some(reply) = send(&mut tally, "toggle", |attempt| {
                    http.patch(&url)
                        .bearer_auth(&token)
                        .header("x-request-id", request_id(attempt))
                })
                .await
                else {
                    continue;
                };
                let now = reply.body["completed"].as_bool();
                let counted = tally.toggled.entry(id).or_default();
                counted.0 += 1;
                counted.1 |= reply.retried;
                if reply.status != StatusCode::OK || now.is_none() {
                    tally
                        .failures
                        .push(format!("toggle: {} {}", reply.status, reply.body));
                } else if !counted.1 && now != Some(!completed) {
                    tally.failures.push(format!(
                        "toggle of {id}: completed was {completed}, the toggle answered {}",
                        reply.body
                    ));
                } else {
                    tally.toggles += 1;
                }
                tasks[slot].1 = now.unwrap_or(completed);
            }
            2 => {
                let url = format!("{base}/api/tasks?limit=5");
                let Some(reply) = send(&mut tally, "list", |attempt| {
                    http.get(&url)
                        .bearer_auth(&token)
                        .header("x-request-id", request_id(attempt))
                })
                .await
                else {
                    continue;
                };
                // Every acknowledged create is visible at once, from any instance.
                if reply.status != StatusCode::OK
                    || !reply.body.is_array()
                    || reply.total != Some(tally.created.len())
                {
                    tally.failures.push(format!(
                        "list: {} X-Total-Count {:?} (acknowledged creates: {}) {}",
                        reply.status,
                        reply.total,
                        tally.created.len(),
                        reply.body
                    ));
                } else {
                    tally.lists += 1;
                }
            }
            _ => {
                let title = format!("client {number} task {n}");
                let body = json!({ "title": title });
                let key = format!("rolling-{number}-{n}");
                let Some(reply) = send(&mut tally, "create", |attempt| {
                    http.post(format!("{base}/api/tasks"))
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .header("x-request-id", request_id(attempt))
                        .json(&body)
                })
                .await
                else {
                    continue;
                };
                match reply.body["id"].as_i64() {
                    Some(id)
                        if reply.status == StatusCode::CREATED && reply.body["title"] == title =>
                    {
                        tally.created.push((title, id));
                        tasks.push((id, false));
                        tally.creates += 1;
                    }
                    _ => tally
                        .failures
                        .push(format!("create: {} {}", reply.status, reply.body)),
                }
            }
        }
        tokio::time::sleep(THINK).await;
    }
    tally
}

/// What one user's live stream saw, through every reconnect.
#[derive(Default)]
struct Watched {
    /// Every change received: (event id, event name, data), in order.
    events: Vec<(i64, String, Value)>,
    /// Streams opened: the first, then one per reconnect.
    opened: u32,
    /// Why a stream ended or could not be opened, counted.
    ends: BTreeMap<String, u64>,
    /// Anything a client should never see.
    failures: Vec<String>,
}

/// One user's tab holding a live stream through HAProxy, as `EventSource`
/// does: when the stream ends (or cannot be opened: a 503 from a draining
/// instance, a refused connection), it opens another with `Last-Event-ID`
/// set to the last id it received. Stops once it has received `target`
/// (set when the writes are over; until then 0) or [`PATIENCE`] after it.
async fn watch(base: String, token: String, target: Arc<AtomicI64>) -> Watched {
    let http = Client::builder().no_proxy().build().unwrap();
    let mut watched = Watched::default();
    let mut last: i64 = 0;
    let mut target_seen: Option<Instant> = None;
    let done = |last: i64, target_seen: &mut Option<Instant>| {
        let target = target.load(Ordering::Relaxed);
        if target > 0 && target_seen.is_none() {
            *target_seen = Some(Instant::now());
        }
        (target > 0 && last >= target) || target_seen.is_some_and(|t| t.elapsed() > PATIENCE)
    };
    while !done(last, &mut target_seen) {
        // Since 0 at first: the user may have written already.
        let mut request = http
            .get(format!("{base}/api/tasks/events?since=0"))
            .bearer_auth(&token);
        if watched.opened > 0 {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = match request.send().await {
            Ok(response) if response.status() == StatusCode::OK => response,
            Ok(response) => {
                let why = format!("not opened: {}", response.status());
                *watched.ends.entry(why).or_default() += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => {
                let why = format!("not opened: {}", root_cause(&e));
                *watched.ends.entry(why).or_default() += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        watched.opened += 1;
        let mut stream = SseStream::new(response);
        loop {
            // Woken a few times a second to see whether the target is set.
            let Ok(next) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await
            else {
                if done(last, &mut target_seen) {
                    break;
                }
                continue;
            };
            let Some(event) = next else {
                *watched.ends.entry("ended".into()).or_default() += 1;
                break;
            };
            match (
                event.event.as_str(),
                event.id.as_deref().map(str::parse::<i64>),
            ) {
                ("ready", _) => {}
                ("upsert" | "delete", Some(Ok(id))) if id > last => {
                    last = id;
                    watched.events.push((id, event.event, event.data));
                }
                (name, id) => watched.failures.push(format!(
                    "event {name:?} id {id:?} after id {last}: {}",
                    event.data
                )),
            }
        }
    }
    if target.load(Ordering::Relaxed) > last {
        watched.failures.push(format!(
            "the last event received is {last}, the user's version {}",
            target.load(Ordering::Relaxed)
        ));
    }
    watched
}

/// Polls `done` every 25 ms until it holds; how long that took. Fails the
/// test after `within`, saying `what`.
fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if done() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: not within {}",
            secs(within)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// API requests an instance logged (its request log lines), health checks not counted.
fn api_requests(log: &[String]) -> usize {
    log.iter()
        .filter(|l| l.contains("todo_api::request") && l.contains("route=/api/"))
        .count()
}

/// What happened to one instance.
#[derive(Default)]
struct Restart {
    /// From SIGTERM until HAProxy showed it DOWN, until it exited, and from
    /// the restart until HAProxy showed it UP again.
    down_after: Duration,
    exited_after: Duration,
    back_up_after: Duration,
    /// API requests in the logs of the process before and after the restart.
    served_before: usize,
    served_after: usize,
}

#[test]
fn instances_restarted_one_by_one_behind_haproxy_drop_nothing() {
    let test_started = Instant::now();
    let Some(haproxy_bin) = HaProxy::binary() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(TestDb::create(Backend::Postgres)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = "rolling-restart-secret-of-32-bytes-or-more";
    let drain = DRAIN.as_secs().to_string();
    let env = [
        ("BETTER_AUTH_SECRET", secret),
        ("DATABASE_URL", db.url.as_str()),
        ("SHUTDOWN_DRAIN_SECONDS", drain.as_str()),
        ("SHUTDOWN_TIMEOUT", "10"),
    ];
    let mut instances: Vec<Server> = SERVERS
        .iter()
        .map(|name| {
            // Outside the ephemeral range: free again for the restart below
            // (between the two, a client connection could take any other).
            let port = crate::common::ports::free_port().to_string();
            Server::start(dir.path(), &env, &["--port", &port])
                .unwrap_or_else(|log| panic!("{name} does not start:\n{log}"))
        })
        .collect();
    let addresses: Vec<String> = instances.iter().map(|s| s.addr.clone()).collect();
    let mut haproxy_env: Vec<(&str, &str)> = CHECKS.to_vec();
    haproxy_env.extend([
        ("TODO_API_1", addresses[0].as_str()),
        ("TODO_API_2", addresses[1].as_str()),
        ("TODO_API_3", addresses[2].as_str()),
    ]);
    let haproxy = HaProxy::start(haproxy_bin, &haproxy_env);
    let stats = |name: &str| haproxy.server(BACKEND, name);
    let all_stats = || haproxy.servers(BACKEND);
    haproxy.wait_until_up(BACKEND, PATIENCE);

    // The load, for the whole run, and the live streams of the first users.
    let stop = Arc::new(AtomicBool::new(false));
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|number| {
            let user = format!("rolling-user-{number}");
            todo_api::auth::mint_hs256(secret.as_bytes(), &user, None, 600).unwrap()
        })
        .collect();
    let targets: Vec<Arc<AtomicI64>> = (0..WATCHERS).map(|_| Arc::default()).collect();
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|n| {
            let target = Arc::clone(&targets[n]);
            rt.spawn(watch(haproxy.url(""), tokens[n].clone(), target))
        })
        .collect();
    let users: Vec<_> = (0..CLIENTS)
        .map(|number| {
            let token = tokens[number].clone();
            rt.spawn(user(number, haproxy.url(""), token, Arc::clone(&stop)))
        })
        .collect();
    wait_for("every instance serving", PATIENCE, || {
        all_stats().iter().all(|(_, s)| s.hrsp_2xx >= SERVED)
    });

    let mut restarts: Vec<Restart> = Vec::new();
    for (i, name) in SERVERS.iter().enumerate() {
        let port = instances[i].addr.rsplit(':').next().unwrap().to_owned();
        let signalled = instances[i].sigterm();
        let down_after = wait_for(
            &format!("{name} DOWN in HAProxy after SIGTERM"),
            DRAIN + LATE,
            || stats(name).status.starts_with("DOWN"),
        );
        let status = instances[i]
            .wait_exit(DRAIN + Duration::from_secs(10) + LATE)
            .unwrap_or_else(|| panic!("{name} did not exit"));
        let exited_after = signalled.elapsed();
        assert!(status.success(), "{name}: {status}");
        let log = instances[i].rest_of_log();
        assert!(
            down_after < DRAIN,
            "{name}: HAProxy took it out {} after SIGTERM, not within the drain of {}: \
             it stopped listening while still getting traffic",
            secs(down_after),
            secs(DRAIN)
        );

        // Started again, on the same port.
        let restarted = Instant::now();
        instances[i] = Server::start(dir.path(), &env, &["--port", &port])
            .unwrap_or_else(|log| panic!("{name} does not restart on port {port}:\n{log}"));
        let back_up_after = restarted.elapsed()
            + wait_for(&format!("{name} UP again in HAProxy"), PATIENCE, || {
                stats(name).status == "UP"
            });
        let relayed = stats(name).hrsp_2xx;
        wait_for(&format!("{name} serving again"), PATIENCE, || {
            stats(name).hrsp_2xx >= relayed + SERVED
        });
        eprintln!(
            "measured: {name}: DOWN in HAProxy {} after SIGTERM, exited after {}, \
             UP again {} after its restart",
            secs(down_after),
            secs(exited_after),
            secs(back_up_after)
        );
        restarts.push(Restart {
            down_after,
            exited_after,
            back_up_after,
            served_before: api_requests(&log),
            served_after: 0,
        });
    }

    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = rt.block_on(async {
        let mut tallies = Vec::new();
        for user in users {
            tallies.push(user.await.unwrap());
        }
        tallies
    });
    // The streams catch up to their user's version, then stop.
    let watched: Vec<Watched> = rt.block_on(async {
        let http = Client::builder().no_proxy().build().unwrap();
        // The user's version: the feed's cursor once it has no more.
        for (target, token) in targets.iter().zip(&tokens) {
            let mut cursor = String::from("0");
            loop {
                let url = haproxy.url(&format!("/api/tasks/changes?since={cursor}&limit=1000"));
                let (status, feed) = common::send(http.get(url).bearer_auth(token)).await;
                assert_eq!(status, StatusCode::OK, "{feed}");
                cursor = feed["cursor"]
                    .as_str()
                    .expect("the feed's cursor")
                    .to_owned();
                if feed["has_more"] == false {
                    break;
                }
            }
            target.store(cursor.parse().unwrap(), Ordering::Relaxed);
        }
        let mut watched = Vec::new();
        for watcher in watchers {
            watched.push(watcher.await.unwrap());
        }
        watched
    });
    let final_stats = all_stats();
    // The restarted instances stop together (their drain overlaps).
    for instance in &instances {
        instance.sigterm();
    }
    for (i, instance) in instances.iter_mut().enumerate() {
        let status = instance
            .wait_exit(DRAIN + Duration::from_secs(10) + LATE)
            .expect("exits");
        assert!(status.success(), "{}: {status}", SERVERS[i]);
        restarts[i].served_after = api_requests(&instance.rest_of_log());
    }
    let haproxy_log = haproxy.log_text();
    drop(haproxy);

    // What the clients saw.
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let (creates, lists, toggles) = (sum(|t| t.creates), sum(|t| t.lists), sum(|t| t.toggles));
    let mut retries: BTreeMap<&str, u64> = BTreeMap::new();
    for tally in &tallies {
        for (why, count) in &tally.retries {
            *retries.entry(why).or_default() += count;
        }
    }
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    eprintln!(
        "measured: rolling restart of {} instances under load: {} requests acknowledged \
         ({creates} creates, {lists} lists, {toggles} toggles), {} retried attempts {retries:?}, \
         {} failures",
        SERVERS.len(),
        creates + lists + toggles,
        retries.values().sum::<u64>(),
        failures.len()
    );
    for ((name, s), r) in final_stats.iter().zip(&restarts) {
        let ServerStats {
            hrsp_2xx,
            hrsp_5xx,
            econ,
            eresp,
            wretr,
            wredis,
            ..
        } = s;
        eprintln!(
            "measured: {name}: out of HAProxy {} after SIGTERM, exited after {}, back in {} after \
             its restart; API requests logged: {} before its restart, {} after; HAProxy: \
             2xx {hrsp_2xx}, 5xx {hrsp_5xx}, connection errors {econ}, response errors {eresp}, \
             retries {wretr}, redispatches {wredis}",
            secs(r.down_after),
            secs(r.exited_after),
            secs(r.back_up_after),
            r.served_before,
            r.served_after
        );
    }
    // HAProxy's log lines of requests it did not answer with a 2xx (those
    // the clients then repeated are counted in `retries` above; a retry
    // HAProxy made itself shows as a 2xx with a retry count).
    let not_2xx: Vec<&str> = haproxy_log
        .lines()
        .filter(|l| {
            l.contains(" todo_api todo_api_instances/") || l.contains(" todo_api todo_api_streams/")
        })
        .filter(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|status| !status.starts_with('2'))
        })
        .collect();
    eprintln!(
        "measured: HAProxy logged {} requests not answered 2xx{}{}",
        not_2xx.len(),
        if not_2xx.is_empty() { "" } else { ":\n" },
        not_2xx[..not_2xx.len().min(20)].join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} requests failed as the clients saw them, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(20)],
    );
    // Nor did HAProxy ever give up on one (no instance left, or an error it
    // could not retry): with the shipped configuration, the drain and the
    // checks keep every request away from a stopping instance.
    assert!(
        not_2xx.is_empty(),
        "HAProxy answered {} requests with an error (see above)",
        not_2xx.len()
    );
    for (name, r) in SERVERS.iter().zip(&restarts) {
        assert!(
            r.served_before > 0 && r.served_after > 0,
            "{name} served {} API requests before its restart and {} after",
            r.served_before,
            r.served_after
        );
        assert!(
            r.exited_after <= DRAIN + LATE,
            "{name} exited {} after SIGTERM",
            secs(r.exited_after)
        );
    }

    // What the database holds: every acknowledged create exactly once (and
    // nothing else), every acknowledged toggle applied exactly once.
    let stored = rt.block_on(db.snapshot());
    let mut by_title: HashMap<&str, Vec<(i64, bool)>> = HashMap::new();
    for row in &stored {
        by_title
            .entry(row["title"].as_str().unwrap())
            .or_default()
            .push((
                row["id"].as_i64().unwrap(),
                row["completed"].as_bool().unwrap(),
            ));
    }
    let acknowledged: usize = tallies.iter().map(|t| t.created.len()).sum();
    let mut toggles_checked = 0;
    for tally in &tallies {
        for (title, id) in &tally.created {
            let rows = by_title.get(title.as_str()).map_or(&[][..], Vec::as_slice);
            assert_eq!(
                rows.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                vec![*id],
                "{title:?}: acknowledged as task {id}, stored as {rows:?}"
            );
            let (count, retried) = tally.toggled.get(id).copied().unwrap_or_default();
            if !retried {
                assert_eq!(
                    rows[0].1,
                    count % 2 == 1,
                    "task {id}: {count} acknowledged toggles"
                );
                toggles_checked += 1;
            }
        }
    }
    assert_eq!(stored.len(), acknowledged, "stored = acknowledged creates");

    // What the live streams received: their user's changes only, in order
    // and none twice (checked as they came), through at least one reconnect
    // each (the instance a stream is on restarts), ending at the user's
    // state: every task as stored, with its last title and flag.
    for (number, w) in watched.iter().enumerate() {
        let user = format!("rolling-user-{number}");
        eprintln!(
            "measured: {user}'s live stream: {} changes received over {} streams; ends {:?}",
            w.events.len(),
            w.opened,
            w.ends
        );
        assert!(w.failures.is_empty(), "{user}'s stream: {:?}", w.failures);
        assert!(
            w.opened >= 2,
            "{user}'s stream was never ended by a restart"
        );
        let mut state: BTreeMap<i64, Value> = BTreeMap::new();
        for (_, name, data) in &w.events {
            match name.as_str() {
                "upsert" => {
                    state.insert(data["task"]["id"].as_i64().unwrap(), data["task"].clone())
                }
                _ => state.remove(&data["id"].as_i64().unwrap()),
            };
        }
        let mine: BTreeMap<i64, (String, bool)> = stored
            .iter()
            .filter(|row| row["user_id"] == user.as_str())
            .map(|row| {
                let title = row["title"].as_str().unwrap().to_owned();
                (
                    row["id"].as_i64().unwrap(),
                    (title, row["completed"].as_bool().unwrap()),
                )
            })
            .collect();
        let streamed: BTreeMap<i64, (String, bool)> = state
            .iter()
            .map(|(id, task)| {
                let title = task["title"].as_str().unwrap_or_default().to_owned();
                (
                    *id,
                    (title, task["completed"].as_bool().unwrap_or_default()),
                )
            })
            .collect();
        assert_eq!(
            streamed, mine,
            "{user}: the stream's state is not the stored one"
        );
    }
    eprintln!(
        "measured: {} tasks stored = acknowledged creates, each once; the completed flag of \
         {toggles_checked} matches its acknowledged toggles; test took {}",
        stored.len(),
        secs(test_started.elapsed())
    );
}
