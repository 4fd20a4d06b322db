#!/usr/bin/env node
// todo-api benchmark: one command, see bench/README.md.
//
//   node bench/run.mjs                  # everything, defaults (a few minutes)
//   node bench/run.mjs --help
//
// Node 20+ (no npm packages), wrk, pgbench/psql/initdb (PostgreSQL), Linux /proc.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import net from 'node:net';
import http from 'node:http';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { cpuSeconds, cpuSplit, clusterCpuSeconds, childrenOf, machineCpu, memoryKiB, resetPeakRss, cpuModel, CLK_TCK } from './lib/proc.mjs';
import { startPrivateCluster, useSharedServer, createDatabase, dropDatabase, psql } from './lib/pg.mjs';
import { startPgTap, describeEvents, summarise } from './lib/pgtrace.mjs';
import { startDelayProxy } from './lib/delay.mjs';
import { mintHs256, mintEdDsa, ed25519Keys, startJwksServer } from './lib/tokens.mjs';
import { buildRelease, freePort, serverBinary as libServerBinary } from './lib/build.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');

const ALL_SCENARIOS = [
  'startup', 'sql-trace', 'pg-network', 'health', 'pg-list', 'pg-mix', 'pg-mix-rls-off', 'pg-mix-rls-ab', 'pg-mix-eddsa',
  'pgbench-list', 'pgbench-mix', 'pgbench-mix-rls-off', 'pgbench-mix-rls-ab', 'pgbench-minimal-mix', 'pg-list-1000', 'pg-list-304', 'pg-feed-10k', 'live-latency', 'live-idle', 'pg-mix-notify-off', 'pg-mix-streams', 'sqlite-list', 'sqlite-mix', 'sqlite-list-1000', 'sqlite-list-304',
];
const OPTIONAL_SCENARIOS = ['profile', 'callgrind'];
const DEFAULT_MIX = 'list=60,get=15,create=10,toggle=10,update=5';
const KIND_SCRIPTS = { list: 'list.sql', get: 'get.sql', create: 'create.sql', toggle: 'toggle.sql', update: 'update.sql' };
// User ids are decimal strings so pgbench (integer variables only) can name them too.
const UID_BASE = 7000000000000000000n;

const HELP = `Usage: node bench/run.mjs [options]

Seeds USERS x TASKS tasks through the API, then drives the server with wrk
(keep-alive, CONNECTIONS connections, THREADS threads) and PostgreSQL itself
with pgbench running the same statements, and prints a table; JSON goes to
bench/results/.

Options (defaults in brackets):
  --scenarios LIST     comma-separated, from: ${ALL_SCENARIOS.join(', ')}
                       and the opt-in ${OPTIONAL_SCENARIOS.join(', ')} [all but the opt-in ones]
  --users N            users to seed [200]
  --tasks N            tasks per user [20]
  --duration S         seconds of each measured run [15]
  --warmup S           seconds of warm-up before each measured run [3]
  --connections N      wrk connections [64]
  --threads N          wrk threads and pgbench -j [2]
  --pgbench-clients L  comma-separated pgbench client counts; the first is the
                       reference for ratios [64,10]
  --mix SPEC           the realistic mix [${DEFAULT_MIX}]
  --limit N            page size of list requests [20]
  --pg private|shared  a throw-away cluster under /tmp (needs root or the
                       postgres user) or the shared server [private]
  --pg-port N          port of the shared server [5432]
  --db-pool N          DB_MAX_CONNECTIONS for the server [unset: server default]
  --rust-log FILTER    RUST_LOG for the server [unset: server default, which logs
                       every request at info; logs go to a file]
  --server-env NAME=VALUE  one more environment variable for the server
                       (repeatable), e.g. WORKER_THREADS=2
  --bin PATH           server binary [\$CARGO_TARGET_DIR or ./target, release/todo-api]
  --no-build           do not run 'cargo build --release' first
  --status-detail      count wrk responses by status (costs wrk CPU)
  --callgrind-requests N  requests per kind in the callgrind scenario [300]
  --rls-ab-rounds N    pairs of pg-mix-rls-ab and pgbench-mix-rls-ab (on and
                       off, DURATION/2 s each) [6]
  --net-delay MS       pg-network: delay added to each direction between the
                       server and PostgreSQL [10; timers jitter by ~1 ms per
                       chunk, so a smaller delay overstates round trips]
  --out DIR            where JSON results go [bench/results]
  --keep               keep the temp dir (logs, data files, PG cluster data)
  -h, --help
`;

const { values: opt } = parseArgs({
  options: {
    scenarios: { type: 'string' },
    users: { type: 'string', default: '200' },
    tasks: { type: 'string', default: '20' },
    duration: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    'pgbench-clients': { type: 'string', default: '64,10' },
    mix: { type: 'string', default: DEFAULT_MIX },
    limit: { type: 'string', default: '20' },
    pg: { type: 'string', default: 'private' },
    'pg-port': { type: 'string', default: '5432' },
    'db-pool': { type: 'string' },
    'rust-log': { type: 'string' },
    'server-env': { type: 'string', multiple: true },
    bin: { type: 'string' },
    'no-build': { type: 'boolean', default: false },
    'status-detail': { type: 'boolean', default: false },
    'callgrind-requests': { type: 'string', default: '300' },
    'rls-ab-rounds': { type: 'string', default: '6' },
    'net-delay': { type: 'string', default: '10' },
    out: { type: 'string', default: path.join(HERE, 'results') },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const N_USERS = int(opt.users, 'users');
const N_TASKS = int(opt.tasks, 'tasks');
const DURATION = int(opt.duration, 'duration');
const WARMUP = Number(opt.warmup);
const CONNECTIONS = int(opt.connections, 'connections');
const THREADS = int(opt.threads, 'threads');
const PGBENCH_CLIENTS = opt['pgbench-clients'].split(',').map((c) => int(c, 'pgbench-clients'));
const LIMIT = int(opt.limit, 'limit');
const RLS_AB_ROUNDS = int(opt['rls-ab-rounds'], 'rls-ab-rounds');
const MIX = parseMix(opt.mix);
const scenarios = (opt.scenarios ? opt.scenarios.split(',') : ALL_SCENARIOS).map((s) => s.trim()).filter(Boolean);
for (const s of scenarios) {
  if (!ALL_SCENARIOS.includes(s) && !OPTIONAL_SCENARIOS.includes(s)) die(`unknown scenario ${s}`);
}
const want = (s) => scenarios.includes(s);
const wantPg = scenarios.some((s) => !s.startsWith('sqlite') && s !== 'startup');
const wantSqlite = scenarios.some((s) => s.startsWith('sqlite'));

function int(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) die(`--${name} must be a positive integer, not ${v}`);
  return n;
}
function die(msg) {
  console.error(`error: ${msg}`);
  process.exit(2);
}
function parseMix(spec) {
  const mix = {};
  for (const part of spec.split(',')) {
    const [k, w] = part.split('=');
    if (!KIND_SCRIPTS[k] || !(Number(w) > 0)) die(`bad --mix entry ${part}`);
    mix[k] = Number(w);
  }
  return mix;
}
const mixSpec = (mix) => Object.entries(mix).map(([k, w]) => `${k}=${w}`).join(',');
const STARTED = new Date();
const STAMP = STARTED.toISOString().replace(/[:.]/g, '-');
const log = (msg) => console.error(`[bench] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Clean-up: everything started here is stopped here, by its own handle.
const cleanups = [];
let cleaning = false;
async function cleanUp() {
  if (cleaning) return;
  cleaning = true;
  while (cleanups.length) {
    const f = cleanups.pop();
    try {
      await f();
    } catch (e) {
      console.error(`warning: clean-up step failed: ${e.message}`);
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    log(`${sig}: stopping what the bench started`);
    await cleanUp();
    process.exit(130);
  });
}

function need(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  if (r.status !== 0) die(`${cmd} is not installed (see bench/README.md)`);
}

// ---------------------------------------------------------------------------
// The server under test.

const serverBinary = () => libServerBinary(opt.bin);

function build() {
  log('cargo build --release (no-op when up to date)');
  if (!buildRelease()) die('cargo build --release failed');
}

/**
 * The binary runs from a copy in the temp dir under a name of its own: other
 * work on a shared machine that stops `todo-api` processes by name (it
 * happened: a run here was cut short by a SIGINT from outside) leaves it alone.
 */
function serverUnderTest(tmp) {
  const copy = path.join(tmp, 'bench-sut');
  if (!fs.existsSync(copy)) fs.copyFileSync(serverBinary(), copy);
  fs.chmodSync(copy, 0o755);
  return copy;
}

/**
 * The server's environment: only what we set (no stray .env, no Neon URL
 * from the shell). One worker thread: on this 2-core machine the server
 * shares the cores with PostgreSQL and the load generator, and a second
 * worker mostly adds wake-ups (docs/performance.md); --server-env
 * WORKER_THREADS=N overrides it.
 */
function serverEnv(extra) {
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, USER: os.userInfo().username, LOGNAME: os.userInfo().username, LANG: process.env.LANG || 'C.UTF-8', HOST: '127.0.0.1', WORKER_THREADS: '1' };
  if (opt['db-pool']) env.DB_MAX_CONNECTIONS = opt['db-pool'];
  if (opt['rust-log']) env.RUST_LOG = opt['rust-log'];
  for (const pair of opt['server-env'] ?? []) {
    const at = pair.indexOf('=');
    if (at < 1) throw new Error(`--server-env wants NAME=VALUE, got ${pair}`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return { ...env, ...extra };
}

async function startServer({ name, databaseUrl, auth, tmp, wrapper = [], env = {}, readyTimeoutMs = 60000 }) {
  const port = await freePort();
  const logFile = path.join(tmp, `server-${name}.log`);
  const fd = fs.openSync(logFile, 'w');
  const bin = serverUnderTest(tmp);
  const [cmd, args] = wrapper.length ? [wrapper[0], [...wrapper.slice(1), bin, 'serve']] : [bin, ['serve']];
  const child = spawn(cmd, args, {
    cwd: tmp, // dotenvy reads ./.env: keep the repo's (or a developer's) out of it
    env: serverEnv({ DATABASE_URL: databaseUrl, PORT: String(port), ...auth, ...env }),
    stdio: ['ignore', fd, fd],
  });
  fs.closeSync(fd);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const server = {
    name, port, pid: child.pid, logFile, child,
    base: `http://127.0.0.1:${port}`,
    assertAlive(when) {
      if (exited) throw new Error(`server ${name} exited ${when} (${JSON.stringify(exited)}); its log:\n${tail(logFile)}`);
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      for (let i = 0; i < 100 && !exited; i++) await sleep(100);
      if (!exited) child.kill('SIGKILL');
    },
  };
  cleanups.push(() => server.stop());
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) throw new Error(`server ${name} exited (${JSON.stringify(exited)}):\n${tail(logFile)}`);
    try {
      const r = await fetch(`${server.base}/health/ready`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`server ${name} not ready after ${readyTimeoutMs} ms:\n${tail(logFile)}`);
    await sleep(100);
  }
  return server;
}

function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------
// Users, tokens, seed data.

function makeUsers(secret, edKeys) {
  return makeUsersFrom(UID_BASE, N_USERS, secret, edKeys);
}

function makeUsersFrom(first, count, secret, edKeys) {
  const now = Math.floor(Date.now() / 1000);
  const users = [];
  for (let u = 0; u < count; u++) {
    const sub = (first + BigInt(u)).toString();
    const claims = { sub, iat: now, exp: now + 6 * 3600 };
    users.push({ sub, hs256: mintHs256(secret, claims), eddsa: mintEdDsa(edKeys, claims), ids: [] });
  }
  return users;
}

async function api(server, token, method, urlPath, body, headers = {}) {
  const r = await fetch(server.base + urlPath, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null, headers: r.headers };
}

/** Creates the tasks one after another, so ids come out contiguous per user on PostgreSQL. */
async function seed(server, users) {
  const t0 = Date.now();
  for (const [u, user] of users.entries()) {
    user.ids = [];
    for (let k = 0; k < N_TASKS; k++) {
      const r = await api(server, user.hs256, 'POST', '/api/tasks', {
        title: `Task ${k + 1} of user ${u + 1}`,
        description: `Seeded by the todo-api benchmark: task ${k + 1} of ${N_TASKS} for user ${user.sub}.`,
      });
      if (r.status !== 201) throw new Error(`seeding: POST /api/tasks answered ${r.status}: ${JSON.stringify(r.body)}`);
      user.ids.push(r.body.id);
    }
  }
  const seconds = (Date.now() - t0) / 1000;
  log(`seeded ${users.length} users x ${N_TASKS} tasks through the API in ${seconds.toFixed(1)} s`);
  return seconds;
}

/** Contiguous per user, so pgbench can compute a user's task ids: base + u*TASKS + k. */
function contiguousBase(users) {
  const base = users[0].ids[0];
  users.forEach((user, u) => user.ids.forEach((id, k) => {
    if (id !== base + u * N_TASKS + k) throw new Error(`task ids are not contiguous (user ${u}, task ${k}: ${id}); pgbench could not mirror them`);
  }));
  return base;
}

/** One request of each kind, checked, with both token kinds: a broken set-up fails here, not as a wall of non-2xx. */
async function smoke(server, users, { eddsa = true } = {}) {
  const user = users[0];
  const id = user.ids[0];
  const tokens = eddsa ? [user.hs256, user.eddsa] : [user.hs256];
  for (const token of tokens) {
    const checks = [
      ['GET', `/api/tasks?limit=${LIMIT}`, undefined, 200],
      ['GET', `/api/tasks/${id}`, undefined, 200],
      ['PATCH', `/api/tasks/${id}/complete`, undefined, 200],
      ['PATCH', `/api/tasks/${id}/complete`, undefined, 200],
      ['PUT', `/api/tasks/${id}`, { title: `Task 1 of user 1` }, 200],
    ];
    for (const [method, p, body, expect] of checks) {
      const r = await api(server, token, method, p, body);
      if (r.status !== expect) throw new Error(`smoke check ${method} ${p} answered ${r.status} (expected ${expect}): ${JSON.stringify(r.body)}`);
    }
  }
  const other = await api(server, users[1 % users.length].hs256, 'GET', `/api/tasks/${id}`);
  if (users.length > 1 && other.status !== 404) throw new Error(`another user's task answered ${other.status}, expected 404`);
}

function writeLuaData(file, users, tokenKind) {
  const esc = (s) => s.replace(/[^A-Za-z0-9._-]/g, '');
  const lines = users.map((u) => `  {token="${esc(u[tokenKind])}",ids={${u.ids.join(',')}}},`);
  fs.writeFileSync(file, `return { users = {\n${lines.join('\n')}\n} }\n`);
}

// ---------------------------------------------------------------------------
// Measuring.

function snapshot(ctx) {
  return {
    t: process.hrtime.bigint(),
    server: ctx.serverPid ? cpuSeconds(ctx.serverPid) : null,
    serverSplit: ctx.serverPid ? cpuSplit(ctx.serverPid) : null,
    pg: ctx.pgPid ? clusterCpuSeconds(ctx.pgPid) : null,
    machine: machineCpu(),
  };
}

function delta(before, after, requests, loadGenCpu) {
  const wall = Number(after.t - before.t) / 1e9;
  const per = (s) => (s == null || !requests ? null : (s / requests) * 1e6);
  const server = before.server == null ? null : after.server - before.server;
  const pg = before.pg == null ? null : after.pg - before.pg;
  const busy = after.machine.busy - before.machine.busy;
  const total = after.machine.total - before.machine.total;
  const irq = after.machine.irq - before.machine.irq;
  const others = Math.max(0, busy - irq - (server ?? 0) - (pg ?? 0) - (loadGenCpu ?? 0));
  return {
    wall_s: round(wall, 2),
    server_cpu_s: round(server, 2),
    pg_cpu_s: round(pg, 2),
    load_generator_cpu_s: round(loadGenCpu, 2),
    server_cpu_us_per_req: round(per(server), 1),
    // The server's CPU in user space and in the kernel (syscalls, loopback TCP, wake-ups).
    server_user_us_per_req: before.serverSplit && after.serverSplit ? round(per(after.serverSplit.user - before.serverSplit.user), 1) : null,
    server_system_us_per_req: before.serverSplit && after.serverSplit ? round(per(after.serverSplit.system - before.serverSplit.system), 1) : null,
    pg_cpu_us_per_req: round(per(pg), 1),
    load_generator_cpu_us_per_req: round(per(loadGenCpu), 1),
    machine_busy_pct: round((busy / total) * 100, 1),
    // CPU used by anything else on the machine (other work, the kernel's idle-time accounting noise).
    // Interrupt and softirq time (loopback networking, mostly) is not in any process's utime/stime.
    irq_softirq_s: round(irq, 2),
    // CPU of everything else on the machine: other work, which makes the run noisy.
    other_cpu_s: round(others, 2),
    others_pct_of_machine: round((others / total) * 100, 1),
    steal_s: round(after.machine.steal - before.machine.steal, 2),
  };
}

function round(v, digits) {
  if (v == null || Number.isNaN(v)) return null;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/**
 * Runs `cmd args` through bash so its CPU (user+system, reaped children) can
 * be read back: bash's cutime/cstime after the wait.
 */
function runMeasuredChild(cmd, args, env) {
  return new Promise((resolve, reject) => {
    const script = '"$@"; rc=$?; read -r s < /proc/$$/stat; echo "BENCH_SELFSTAT ${s##*) }" >&2; exit $rc';
    const child = spawn('bash', ['-c', script, 'bash', cmd, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    cleanups.push(async () => { if (child.exitCode === null) child.kill('SIGTERM'); });
    child.on('error', reject);
    child.on('close', (code) => {
      const m = err.match(/BENCH_SELFSTAT (.*)/);
      let cpu = null;
      if (m) {
        const f = m[1].trim().split(' '); // f[0] is field 3
        cpu = (Number(f[16 - 3]) + Number(f[17 - 3])) / CLK_TCK;
      }
      resolve({ code, stdout: out, stderr: err.replace(/BENCH_SELFSTAT .*\n?/, ''), cpu });
    });
  });
}

async function runWrk({ server, mix, dataFile, duration, label }) {
  const env = { BENCH_MIX: mix, BENCH_LIMIT: String(LIMIT) };
  if (dataFile) env.BENCH_DATA = dataFile;
  if (opt['status-detail']) env.BENCH_STATUS = '1';
  const args = (secs) => ['-t', String(THREADS), '-c', String(CONNECTIONS), '-d', `${secs}s`, '--timeout', '10s', '--latency',
    '-s', path.join(HERE, 'wrk', 'mix.lua'), server.base];
  if (WARMUP > 0) {
    const w = await runMeasuredChild('wrk', args(WARMUP), env);
    if (w.code !== 0) throw new Error(`wrk warm-up for ${label} failed: ${w.stderr}`);
  }
  return async (ctx) => {
    resetPeakRss(server.pid);
    await ctx.beforeMeasure?.();
    const before = snapshot(ctx);
    const r = await runMeasuredChild('wrk', args(duration), env);
    const after = snapshot(ctx);
    server.assertAlive(`during ${label}`);
    if (r.code !== 0) throw new Error(`wrk for ${label} failed: ${r.stderr}`);
    const m = r.stdout.match(/BENCH_JSON (.*)/);
    if (!m) throw new Error(`wrk printed no BENCH_JSON line:\n${r.stdout}\n${r.stderr}`);
    const w = JSON.parse(m[1]);
    const seconds = w.duration_us / 1e6;
    const errors = w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout + w.errors.status;
    const mem = memoryKiB(server.pid);
    return {
      tool: 'wrk',
      requests: w.requests,
      seconds: round(seconds, 2),
      rps: round(w.requests / seconds, 1),
      latency_ms: {
        p50: round(w.latency_us.p50 / 1000, 2), p90: round(w.latency_us.p90 / 1000, 2),
        p99: round(w.latency_us.p99 / 1000, 2), p999: round(w.latency_us.p999 / 1000, 2),
        mean: round(w.latency_us.mean / 1000, 2), max: round(w.latency_us.max / 1000, 2),
      },
      errors: { total: errors, non_2xx: w.errors.status, ...w.errors },
      by_status: w.by_status,
      sent_by_kind: w.sent_by_kind,
      server_peak_rss_mib: mem ? round(mem.hwm / 1024, 1) : null,
      server_rss_end_mib: mem ? round(mem.rss / 1024, 1) : null,
      server_threads: mem?.threads ?? null,
      cpu: delta(before, after, w.requests, r.cpu),
      wrk_stdout: r.stdout.replace(/BENCH_JSON .*\n?/, ''),
    };
  };
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function runPgbench({ pg, db, mix, clients, duration, base, tmp, label, minimal = false, role = true }) {
  // `minimal`: the lower ceiling, bench/pgbench/minimal/ as they are (no transaction, no role).
  // `role`: connections are the request role, as the server's (RLS on); false:
  // the superuser, to whom no policy applies (RLS off).
  const script = (k) => (minimal ? path.join(HERE, 'pgbench', 'minimal', KIND_SCRIPTS[k]) : wrappedScript(k, tmp));
  const scripts = Object.entries(mix).map(([k, w]) => ['-f', `${script(k)}@${w}`]).flat();
  const vars = {
    users: N_USERS, tasks: N_TASKS, base, uid_base: UID_BASE.toString(), limit: LIMIT, one: 1, now: 'now',
    title: 'Bench task', description: 'Created by the todo-api benchmark', completed: 'false', newtitle: 'Renamed task', maxtasks: 10000,
  };
  const defs = Object.entries(vars).map(([k, v]) => ['-D', `${k}=${v}`]).flat();
  const common = ['-h', pg.host, '-p', String(pg.port), '-U', 'postgres', '-n', '-M', 'prepared',
    '-c', String(clients), '-j', String(Math.min(THREADS, clients)), ...defs, ...scripts];
  const env = { PGSSLMODE: 'disable', ...(role && !minimal ? { PGOPTIONS: '-c role=todo_request' } : {}) };
  if (WARMUP > 0) {
    const w = await runMeasuredChild('pgbench', [...common, '-T', String(Math.max(1, Math.round(WARMUP))), db], env);
    if (w.code !== 0) throw new Error(`pgbench warm-up for ${label} failed:\n${w.stderr}`);
  }
  const logPrefix = path.join(tmp, `pgbench-${label}`);
  return async (ctx) => {
    await ctx.beforeMeasure?.();
    const before = snapshot(ctx);
    const r = await runMeasuredChild('pgbench', [...common, '-T', String(duration), '-l', `--log-prefix=${logPrefix}`, db], env);
    const after = snapshot(ctx);
    const out = r.stdout + r.stderr;
    const num = (re) => { const m = out.match(re); return m ? Number(m[1]) : null; };
    const processed = num(/number of transactions actually processed: (\d+)/);
    const failed = num(/number of failed transactions: (\d+)/) ?? 0;
    const tps = num(/tps = ([\d.]+) \(without initial connection time\)/);
    const aborted = (out.match(/client \d+ aborted/g) || []).length;
    if (processed == null || tps == null) throw new Error(`pgbench for ${label} failed (${r.code}):\n${out}`);
    // Per-transaction log lines: client_id transaction_no time_us script_no epoch_s epoch_us
    const times = [];
    const byScript = {};
    const kinds = Object.keys(mix);
    for (const f of fs.readdirSync(tmp).filter((f) => f.startsWith(path.basename(logPrefix) + '.'))) {
      for (const line of fs.readFileSync(path.join(tmp, f), 'utf8').split('\n')) {
        const p = line.split(' ');
        if (p.length < 6) continue;
        const t = Number(p[2]);
        if (Number.isFinite(t)) times.push(t);
        const kind = kinds[Number(p[3])] ?? p[3];
        byScript[kind] = (byScript[kind] || 0) + 1;
      }
      if (!opt.keep) fs.rmSync(path.join(tmp, f));
    }
    times.sort((a, b) => a - b);
    const ms = (v) => (v == null ? null : round(v / 1000, 2));
    return {
      tool: 'pgbench',
      clients,
      requests: processed,
      seconds: duration,
      rps: round(tps, 1),
      latency_ms: {
        p50: ms(percentile(times, 50)), p90: ms(percentile(times, 90)), p99: ms(percentile(times, 99)),
        p999: ms(percentile(times, 99.9)), mean: num(/latency average = ([\d.]+) ms/), max: ms(times[times.length - 1]),
      },
      errors: { total: failed + aborted, failed_transactions: failed, aborted_clients: aborted },
      sent_by_kind: byScript,
      cpu: delta(before, after, processed, r.cpu),
      pgbench_stdout: r.stdout,
    };
  };
}

// pg_stat_statements: what the server actually ran during a measured run.
function pgssReset(pg, db) {
  psql(pg.url(db), 'SELECT pg_stat_statements_reset()');
}
function pgssSnapshot(pg, db) {
  const out = psql(pg.url(db), `SELECT calls, rows, round(total_exec_time::numeric, 3), regexp_replace(query, '\\s+', ' ', 'g')
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT ILIKE '%pg_stat_statements%' ORDER BY calls DESC`, { fieldSep: '\x1f' });
  return out.split('\n').filter(Boolean).map((l) => {
    const [calls, rows, ms, query] = l.split('\x1f');
    return { calls: Number(calls), rows: Number(rows), total_exec_ms: Number(ms), query };
  });
}

/** The statements of each pgbench script, as pg_stat_statements will show them (:var -> $n). */
function pgbenchStatements() {
  const out = { transaction: REQUEST_TRANSACTION };
  for (const [kind, file] of Object.entries(KIND_SCRIPTS)) {
    out[kind] = fs.readFileSync(path.join(HERE, 'pgbench', file), 'utf8').split('\n')
      .filter((l) => l.trim() && !l.startsWith('--') && !l.startsWith('\\'))
      .map((l) => { let n = 0; return l.replace(/(?<!:):[a-z_]+/g, () => `$${++n}`).replace(/;\s*$/, ''); });
  }
  return out;
}

/**
 * What the server wraps each request's statements in: a transaction that
 * sets the user, pipelined with the statements (one round trip). Row-level
 * security on (its default), its connections are the request role from
 * their start (a startup option).
 */
const REQUEST_TRANSACTION = ['BEGIN', "SELECT set_config('todo.user_id', $1, true)", "SELECT pg_notify('todo_changes', $1)", 'COMMIT'];

/**
 * A pgbench script's statements wrapped as the server sends them: in a
 * pipeline (one round trip), in a transaction that sets the user, a write
 * with its NOTIFY. Written to `tmp`; returns its path.
 */
function wrappedScript(kind, tmp) {
  const lines = fs.readFileSync(path.join(HERE, 'pgbench', KIND_SCRIPTS[kind]), 'utf8').split('\n');
  const isSql = (l) => l.trim() && !l.startsWith('--') && !l.startsWith('\\');
  const out = [
    ...lines.filter((l) => !isSql(l)),
    '\\startpipeline',
    'BEGIN;',
    "SELECT set_config('todo.user_id', :uid, true);",
    ...lines.filter(isSql),
    // Writes wake live streams on other instances (LIVE_NOTIFY, on by default).
    ...(kind === 'list' || kind === 'get' ? [] : ["SELECT pg_notify('todo_changes', :uid);"]),
    'COMMIT;',
    '\\endpipeline',
  ];
  const file = path.join(tmp, `wrapped-${KIND_SCRIPTS[kind]}`);
  fs.writeFileSync(file, out.join('\n') + '\n');
  return file;
}
// Parameters compared as one: the server reuses $1 where pgbench numbers each
// :variable anew, and pg_stat_statements shows literals (1, true) as $n too.
// NULL too: a write's `If-Match` is a parameter the server sends as NULL,
// written NULL in the scripts (a pgbench variable cannot be NULL); and
// quoted strings, which pg_stat_statements shows as parameters.
const normSql = (q) => q.replace(/\s+/g, ' ').replace(/;\s*$/, '')
  .replace(/'(?:[^']|'')*'/g, '$').replace(/(?<![\w$.])(\d+|true|false|NULL)(?![\w.])/g, '$').replace(/\$\d*(::\w+)?/g, '$').trim();

function labelStatements(stats, requests) {
  const mine = pgbenchStatements();
  return stats.map((s) => {
    const kind = Object.keys(mine).find((k) => mine[k].some((m) => normSql(m) === normSql(s.query))) ?? null;
    return {
      kind,
      calls: s.calls,
      calls_per_request: requests ? round(s.calls / requests, 3) : null,
      mean_exec_ms: s.calls ? round(s.total_exec_ms / s.calls, 4) : null,
      query: s.query,
    };
  });
}

/**
 * Row-level security on vs off in `rounds` pairs of short runs, alternating
 * which goes first so that the machine's drift falls on both alike.
 * `measure(on)` runs one side; each pair's ratios, and their medians.
 */
async function interleavedPairs(rounds, measure) {
  const pairs = [];
  for (let i = 0; i < rounds; i++) {
    const measured = {};
    for (const on of i % 2 ? [false, true] : [true, false]) measured[on] = await measure(on);
    const [a, b] = [measured[true], measured[false]];
    pairs.push({
      first: i % 2 ? 'off' : 'on', rps_on: a.rps, rps_off: b.rps, rps_ratio: round(a.rps / b.rps, 3),
      pg_us_on: a.cpu.pg_cpu_us_per_req, pg_us_off: b.cpu.pg_cpu_us_per_req,
      pg_ratio: a.cpu.pg_cpu_us_per_req && b.cpu.pg_cpu_us_per_req ? round(a.cpu.pg_cpu_us_per_req / b.cpu.pg_cpu_us_per_req, 3) : null,
      others_pct: [a.cpu.others_pct_of_machine, b.cpu.others_pct_of_machine],
    });
  }
  // The lower middle of an even count: a ratio that was measured.
  const mid = (xs) => { const v = xs.filter((x) => x != null).sort((x, y) => x - y); return v.length ? v[Math.floor((v.length - 1) / 2)] : null; };
  return { rounds: pairs, median_rps_ratio: mid(pairs.map((r) => r.rps_ratio)), median_pg_cpu_ratio: mid(pairs.map((r) => r.pg_ratio)) };
}

function logPairs(name, r, segment, rate, unit) {
  const p = (x) => (x == null ? '-' : pct(x));
  log(`${name}: ${r.rounds.length} pairs of ${segment} s, on/off ${rate} ${r.rounds.map((x) => p(x.rps_ratio)).join(' ')}, ` +
    `PostgreSQL CPU per ${unit} ${r.rounds.map((x) => p(x.pg_ratio)).join(' ')}; medians ${p(r.median_rps_ratio)} and ${p(r.median_pg_cpu_ratio)}`);
}

function resetData(pg, db, lastSeededId) {
  psql(pg.url(db), `DELETE FROM tasks WHERE id > ${Number(lastSeededId)}`);
  psql(pg.url(db), 'UPDATE task_lists SET task_count = (SELECT count(*) FROM tasks t WHERE t.user_id = task_lists.user_id)');
  psql(pg.url(db), 'VACUUM (ANALYZE) tasks');
  psql(pg.url(db), 'CHECKPOINT');
}

// ---------------------------------------------------------------------------
// Scenarios.

async function sqlTrace({ pg, db, auth, users, tmp }) {
  const tap = await startPgTap(pg.host, pg.port);
  cleanups.push(() => tap.close());
  const server = await startServer({
    name: 'sql-trace', databaseUrl: `postgres://postgres@127.0.0.1:${tap.port}/${db}?sslmode=disable`, auth, tmp,
    env: { DB_MAX_CONNECTIONS: '1', RUST_LOG: 'warn' },
  });
  const user = users[users.length - 1];
  const id = user.ids[0];
  const requests = [
    ['list', 'GET', `/api/tasks?limit=${LIMIT}`],
    ['get', 'GET', `/api/tasks/${id}`],
    ['create', 'POST', '/api/tasks', { title: 'Traced task', description: 'Created by the SQL trace' }],
    ['toggle', 'PATCH', `/api/tasks/${id}/complete`],
    ['update', 'PUT', `/api/tasks/${id}`, { title: 'Traced rename' }],
    ['create keyed', 'POST', '/api/tasks', { title: 'Traced keyed task' }, { 'Idempotency-Key': `trace-${crypto.randomUUID()}` }],
    ['delete', 'DELETE', null],
    ['health', 'GET', '/health'],
    ['health/ready', 'GET', '/health/ready'],
  ];
  const result = { connection_setup: null, first_use: {}, steady: {} };
  await sleep(300);
  result.connection_setup = describeEvents(tap.events.filter((e) => e.conn === tap.events[tap.events.length - 1]?.conn));
  for (const pass of ['first_use', 'steady']) {
    for (const [kind, method, p, body, headers] of requests) {
      const mark = tap.events.length;
      // Each pass deletes a task it created (the first create's).
      const target = p ?? `/api/tasks/${result[pass].create?.created_id}`;
      const r = await api(server, user.hs256, method, target, body, headers);
      await sleep(150); // anything sent after the response shows too
      const ev = tap.events.slice(mark);
      result[pass][kind] = { status: r.status, messages: describeEvents(ev), ...summarise(ev) };
      if (kind === 'create') result[pass][kind].created_id = r.body?.id;
    }
  }
  await server.stop();
  await tap.close();
  return result;
}

/**
 * PostgreSQL a network away: each request kind, one at a time, against a
 * server reaching PostgreSQL directly and one reaching it through a proxy
 * that delays each direction by --net-delay ms. The difference, over the
 * 2 x delay each round trip costs, is the round trips a request makes, as
 * time a user waits.
 */
async function networkScenario({ pg, db, auth, users, tmp }) {
  const delay = Number(opt['net-delay']);
  const proxy = await startDelayProxy(pg.host, pg.port, delay);
  cleanups.push(() => proxy.close());
  const user = users[users.length - 2];
  const kinds = {
    list: () => ['GET', `/api/tasks?limit=${LIMIT}`],
    get: () => ['GET', `/api/tasks/${user.ids[1]}`],
    create: () => ['POST', '/api/tasks', { title: 'Network task' }],
    'create keyed': () => ['POST', '/api/tasks', { title: 'Network keyed task' }, { 'Idempotency-Key': `net-${crypto.randomUUID()}` }],
    toggle: () => ['PATCH', `/api/tasks/${user.ids[1]}/complete`],
    update: () => ['PUT', `/api/tasks/${user.ids[1]}`, { title: 'Network rename' }],
  };
  const runs = 25;
  const measure = async (name, port) => {
    const server = await startServer({
      name, databaseUrl: `postgres://postgres@127.0.0.1:${port}/${db}?sslmode=disable`, auth, tmp, env: { RUST_LOG: 'warn' },
    });
    const out = {};
    for (const [kind, request] of [...Object.entries(kinds), ['delete', null]]) {
      const times = [];
      for (let i = 0; i < runs + 3; i++) {
        let args;
        if (request) args = request();
        else {
          const created = await api(server, user.hs256, 'POST', '/api/tasks', { title: 'To delete' });
          args = ['DELETE', `/api/tasks/${created.body.id}`];
        }
        const t0 = process.hrtime.bigint();
        const r = await api(server, user.hs256, ...args);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (r.status >= 300) throw new Error(`pg-network ${kind}: ${r.status} ${JSON.stringify(r.body)}`);
        if (i >= 3) times.push(ms); // the first few prepare statements on a new connection
      }
      times.sort((a, b) => a - b);
      out[kind] = round(median(times), 2);
    }
    await server.stop();
    return out;
  };
  const direct = await measure('net-direct', pg.port);
  const delayed = await measure('net-delayed', proxy.port);
  await proxy.close();
  const round_trips = Object.fromEntries(Object.keys(direct).map((k) => [k, round((delayed[k] - direct[k]) / (2 * delay), 1)]));
  return { delay_ms_each_way: delay, runs_per_kind: runs, median_ms_direct: direct, median_ms_delayed: delayed, round_trips };
}

async function profileScenario({ server, dataFile, tmp, ctx }) {
  need('perf');
  const perfData = path.join(tmp, 'perf.data');
  const measure = await runWrk({ server, mix: 'list=100', dataFile, duration: DURATION, label: 'profile' });
  const perf = spawn('perf', ['record', '-a', '-F', '999', '-e', 'cpu-clock', '-o', perfData, '--', 'sleep', String(DURATION)],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  cleanups.push(async () => { if (perf.exitCode === null) perf.kill('SIGINT'); });
  const result = await measure(ctx);
  await new Promise((r) => (perf.exitCode !== null ? r() : perf.on('close', r)));
  const report = (args) => spawnSync('perf', ['report', '-i', perfData, '--stdio', '--no-children', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout;
  const byComm = report(['--sort', 'comm', '--percent-limit', '0.5']);
  // By pid, not by command name: other programs on the machine have tokio-rt-worker
  // threads and postgres processes too. Percentages are of the filtered samples.
  const pgPids = [ctx.pgPid, ...childrenOf(ctx.pgPid)].join(',');
  const rel = ['--percentage', 'relative'];
  const serverDso = report(['--pid', String(server.pid), ...rel, '--sort', 'dso', '--percent-limit', '0.5']);
  const serverSym = report(['--pid', String(server.pid), ...rel, '--sort', 'sym', '--percent-limit', '0.7']);
  const pgDso = report(['--pid', pgPids, ...rel, '--sort', 'dso', '--percent-limit', '0.5']);
  const pgSym = report(['--pid', pgPids, ...rel, '--sort', 'sym', '--percent-limit', '1']);
  const clean = (t) => t.split('\n').filter((l) => l && !l.startsWith('#')).join('\n');
  const text = `# perf record -a -e cpu-clock, list-only mix, ${DURATION} s\n\n## by command\n${clean(byComm)}\n\n## server (pid ${server.pid}) by DSO\n${clean(serverDso)}\n\n## server symbols\n${clean(serverSym)}\n\n## postgres (this cluster's processes) by DSO\n${clean(pgDso)}\n\n## postgres symbols\n${clean(pgSym)}\n`;
  return { ...result, perf_report: text };
}

async function callgrindScenario({ pg, db, auth, users, tmp }) {
  need('valgrind');
  const N = int(opt['callgrind-requests'], 'callgrind-requests');
  const outBase = path.join(tmp, 'callgrind.out');
  const server = await startServer({
    name: 'callgrind', databaseUrl: pg.url(db), auth, tmp, readyTimeoutMs: 180000,
    wrapper: ['valgrind', '--tool=callgrind', `--callgrind-out-file=${outBase}.%p`, '--instr-atstart=no'],
    env: { RUST_LOG: opt['rust-log'] ?? 'info' },
  });
  // vgdb finds the valgrind process by a name made of LOGNAME/USER and HOST/HOSTNAME: the same as the server's.
  const vgEnv = { ...process.env, LOGNAME: os.userInfo().username, USER: os.userInfo().username, HOST: '127.0.0.1' };
  const ctl = (...a) => execFileSync('callgrind_control', [...a, String(server.pid)], { encoding: 'utf8', env: vgEnv });
  ctl('-i', 'on');
  const user = users[0];
  const kinds = {
    health: () => ['GET', '/health'],
    list: (i) => ['GET', `/api/tasks?limit=${LIMIT}`, undefined, users[i % users.length]],
    list_eddsa: (i) => ['GET', `/api/tasks?limit=${LIMIT}`, undefined, users[i % users.length], 'eddsa'],
    list_304: (i) => ['GET', `/api/tasks?limit=${LIMIT}`, undefined, users[i % users.length], undefined, { 'if-none-match': listTags[i % users.length] }],
    get: (i) => { const u = users[i % users.length]; return ['GET', `/api/tasks/${u.ids[i % u.ids.length]}`, undefined, u]; },
    create: (i) => ['POST', '/api/tasks', { title: 'Bench task', description: 'Created by the todo-api benchmark' }, users[i % users.length]],
    toggle: (i) => { const u = users[i % users.length]; return ['PATCH', `/api/tasks/${u.ids[i % u.ids.length]}/complete`, undefined, u]; },
    update: (i) => { const u = users[i % users.length]; return ['PUT', `/api/tasks/${u.ids[i % u.ids.length]}`, { title: `Renamed task ${i}` }, u]; },
  };
  // The tag of each user's list, for the 304 kind (read before any write kind runs).
  const listTags = [];
  for (const u of users) listTags.push((await api(server, u.hs256, 'GET', `/api/tasks?limit=${LIMIT}`)).headers.get('etag'));
  const result = { requests_per_kind: N, instructions_per_request: {} };
  const annotations = [];
  let dumpNo = 0;
  for (const [kind, make] of Object.entries(kinds)) {
    // Warm-up: every request the measured loop will make, once (a frontend
    // sends the same token for its 15 minutes: verified tokens are cached).
    for (let i = 0; i < Math.max(20, Math.min(N, users.length)); i++) { const [m, p, b, u, t, h] = make(i); await api(server, (u ?? user)[t ?? 'hs256'], m, p, b, h); }
    await sleep(200);
    ctl('-z');
    for (let i = 0; i < N; i++) {
      const [m, p, b, u, t, h] = make(i);
      const r = await api(server, (u ?? user)[t ?? 'hs256'], m, p, b, h);
      if (r.status >= (h ? 400 : 300)) throw new Error(`callgrind ${kind}: ${m} ${p} answered ${r.status}`);
    }
    await sleep(300);
    ctl('--dump=' + kind);
    dumpNo++;
    const file = `${outBase}.${server.pid}.${dumpNo}`;
    const text = fs.readFileSync(file, 'utf8');
    if (process.env.BENCH_KEEP_CALLGRIND) {
      fs.mkdirSync(opt.out, { recursive: true });
      fs.copyFileSync(file, path.join(opt.out, `callgrind-${STAMP}-${kind}.out`));
    }
    const m = text.match(/^(?:summary|totals): (\d+)/m);
    result.instructions_per_request[kind] = m ? Math.round(Number(m[1]) / N) : null;
    // The functions that executed the most instructions themselves (not inclusive).
    const annotate = spawnSync('callgrind_annotate', ['--inclusive=no', '--threshold=80', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
    annotations.push(`## ${kind} (${N} requests; ${result.instructions_per_request[kind]} instructions/request)\n` +
      (annotate.stdout || annotate.stderr).split('\n').filter((l) => /^\s*[\d,]+ \(/.test(l)).slice(0, 25).join('\n'));
    log(`callgrind ${kind}: ${result.instructions_per_request[kind]} instructions/request`);
  }
  await server.stop();
  fs.mkdirSync(opt.out, { recursive: true });
  result.annotate_file = path.join(opt.out, `callgrind-${STAMP}.txt`);
  fs.writeFileSync(result.annotate_file, `# callgrind_annotate --inclusive=no, server instructions by function\n\n${annotations.join('\n\n')}\n`);
  return result;
}

// ---------------------------------------------------------------------------
// Output.

function fmt(v, digits = 0) {
  if (v == null) return '-';
  return Number(v).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function pct(v) {
  return v == null ? '-' : `${(v * 100).toFixed(0)}%`;
}

function table(rows) {
  const header = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'peak RSS MiB', 'server CPU µs/req', 'PG CPU µs/req',
    'loadgen CPU µs/req', 'others CPU', 'vs pgbench', 'vs /health'];
  const body = rows.map((r) => [
    r.name, fmt(r.rps), fmt(r.latency_ms?.p50, 2), fmt(r.latency_ms?.p99, 2), fmt(r.errors?.total), fmt(r.server_peak_rss_mib, 1),
    fmt(r.cpu?.server_cpu_us_per_req), fmt(r.cpu?.pg_cpu_us_per_req), fmt(r.cpu?.load_generator_cpu_us_per_req),
    r.cpu ? `${fmt(r.cpu.others_pct_of_machine)}%` : '-', pct(r.ratio_vs_pgbench), pct(r.ratio_vs_health),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => String(b[i]).length)));
  const line = (cells) => '| ' + cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join(' | ') + ' |';
  return [line(header), '|' + widths.map((w, i) => (i === 0 ? ':' : '-') + '-'.repeat(w) + (i === 0 ? '-' : ':')).join('|') + '|', ...body.map(line)].join('\n');
}

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Cold start and a long list: timed one request at a time, not under load.

const STARTUP_RUNS = 10;
const LONG_LIST = 1000;
const LONG_LIST_REQUESTS = 200;

function median(values) {
  return percentile([...values].sort((a, b) => a - b), 50);
}

/** Milliseconds from spawning `todo-api serve` on SQLite to its first 200 from /health/ready (polled every ms). */
async function startupOnce({ bin, file, auth, tmp }) {
  const port = await freePort();
  const t0 = process.hrtime.bigint();
  const child = spawn(bin, ['serve'], {
    cwd: tmp,
    env: serverEnv({ DATABASE_URL: `sqlite://${file}?mode=rwc`, PORT: String(port), RUST_LOG: 'warn', ...auth }),
    stdio: 'ignore',
  });
  let exited = null;
  let last = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  try {
    for (;;) {
      if (exited) throw new Error(`server exited during start-up (${JSON.stringify(exited)})`);
      last = await new Promise((resolve) => {
        const req = net.connect(port, '127.0.0.1', () => {
          // write, not end: a half-closed socket may be taken as a client gone.
          req.write(`GET /health/ready HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n`);
        });
        req.setTimeout(5000, () => req.destroy(new Error('no answer in 5 s')));
        let head = '';
        req.on('data', (d) => { head += d; });
        req.on('end', () => resolve(head.split('\r\n')[0]));
        req.on('error', (e) => resolve(e.message));
      });
      if (last.startsWith('HTTP/1.1 200')) return Number(process.hrtime.bigint() - t0) / 1e6;
      if (Number(process.hrtime.bigint() - t0) > 30e9) throw new Error(`server not ready after 30 s (last answer: ${last})`);
      await sleep(1);
    }
  } finally {
    child.kill('SIGKILL');
    await new Promise((resolve) => (exited ? resolve() : child.on('exit', resolve)));
  }
}

/** Cold start to ready on SQLite: a new file (migrations run) and the same file again (nothing to migrate). */
async function startupScenario({ auth, tmp }) {
  const bin = serverUnderTest(tmp);
  const dir = path.join(tmp, 'startup');
  fs.mkdirSync(dir, { recursive: true });
  const fresh = [];
  const existing = [];
  for (let i = 0; i < STARTUP_RUNS; i++) {
    const file = path.join(dir, `start-${i}.db`);
    fresh.push(await startupOnce({ bin, file, auth, tmp }));
    existing.push(await startupOnce({ bin, file, auth, tmp }));
  }
  const r = (v) => ({ median_ms: round(median(v), 1), min_ms: round(Math.min(...v), 1), max_ms: round(Math.max(...v), 1) });
  return { runs: STARTUP_RUNS, new_file: r(fresh), existing_file: r(existing) };
}

/** GET one page of `limit` tasks on a kept-alive connection; ms to the last byte, and the body's size. */
function timedGet(agent, server, token, urlPath, headers = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.get(server.base + urlPath, { agent, headers: { authorization: `Bearer ${token}`, ...headers } }, (res) => {
      let bytes = 0;
      res.on('data', (d) => { bytes += d.length; });
      res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6, bytes, etag: res.headers.etag }));
    });
    req.on('error', reject);
  });
}

/**
 * One user with 1,000 tasks (each with a description), listed whole 50 times,
 * one request at a time. The time is the client's, to the last byte: an upper
 * bound of the server's (it includes loopback and Node's parsing); the
 * server's own CPU per request comes from /proc (10 ms ticks over the run).
 */
async function longListScenario({ server, secret, edKeys }) {
  const [user] = makeUsersFrom(UID_BASE + 999_999n, 1, secret, edKeys);
  for (let k = 0; k < LONG_LIST; k++) {
    const r = await api(server, user.hs256, 'POST', '/api/tasks', {
      title: `Long list task ${k + 1}`,
      description: `Seeded by the todo-api benchmark: task ${k + 1} of ${LONG_LIST} in one user's list.`,
    });
    if (r.status !== 201) throw new Error(`seeding the long list: POST /api/tasks answered ${r.status}: ${JSON.stringify(r.body)}`);
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const urlPath = `/api/tasks?limit=${LONG_LIST}`;
    for (let i = 0; i < 5; i++) await timedGet(agent, server, user.hs256, urlPath);
    const times = [];
    let bytes = 0;
    const cpuBefore = cpuSeconds(server.pid);
    for (let i = 0; i < LONG_LIST_REQUESTS; i++) {
      const r = await timedGet(agent, server, user.hs256, urlPath);
      if (r.status !== 200) throw new Error(`GET ${urlPath} answered ${r.status}`);
      times.push(r.ms);
      bytes = r.bytes;
    }
    const serverCpuMs = ((cpuSeconds(server.pid) - cpuBefore) * 1000) / LONG_LIST_REQUESTS;
    const sorted = [...times].sort((a, b) => a - b);
    return {
      tasks: LONG_LIST, requests: LONG_LIST_REQUESTS, body_bytes: bytes, server_cpu_ms_per_request: round(serverCpuMs, 2),
      median_ms: round(percentile(sorted, 50), 2), p90_ms: round(percentile(sorted, 90), 2), max_ms: round(sorted[sorted.length - 1], 2),
    };
  } finally {
    agent.destroy();
  }
}

/** `requests` sequential GETs of `urlPath` (headers per request from `headersFor(i)`): client ms and the server's CPU. */
async function sequentialGets({ server, token, urlPath, requests, headersFor = () => ({}), status, tokenFor }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 20; i++) await timedGet(agent, server, tokenFor ? tokenFor(i) : token, urlPath, headersFor(i));
    const times = [];
    const cpuBefore = cpuSeconds(server.pid);
    for (let i = 0; i < requests; i++) {
      const r = await timedGet(agent, server, tokenFor ? tokenFor(i) : token, urlPath, headersFor(i));
      if (r.status !== status) throw new Error(`GET ${urlPath} answered ${r.status}, not ${status}`);
      times.push(r.ms);
    }
    const serverCpuUs = ((cpuSeconds(server.pid) - cpuBefore) * 1e6) / requests;
    const sorted = [...times].sort((a, b) => a - b);
    return { requests, server_cpu_us_per_request: round(serverCpuUs, 0), median_ms: round(percentile(sorted, 50), 2), p90_ms: round(percentile(sorted, 90), 2) };
  } finally {
    agent.destroy();
  }
}

/**
 * A list of 20 tasks answered 200, then the same lists answered 304 from
 * each user's version (`If-None-Match` with the tag of the 200), one
 * request at a time over 50 users: the server's CPU per request of each.
 */
async function notModifiedScenario({ server, users }) {
  const some = users.slice(0, 50);
  const urlPath = '/api/tasks?limit=20';
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const tags = [];
  try {
    for (const u of some) tags.push((await timedGet(agent, server, u.hs256, urlPath)).etag);
  } finally {
    agent.destroy();
  }
  const requests = 2000;
  const tokenFor = (i) => some[i % some.length].hs256;
  const full = await sequentialGets({ server, urlPath, requests, status: 200, tokenFor });
  const cached = await sequentialGets({ server, urlPath, requests, status: 304, tokenFor, headersFor: (i) => ({ 'if-none-match': tags[i % some.length] }) });
  // The floor: a request that neither authenticates nor reads the database.
  const health = await sequentialGets({ server, urlPath: '/health', requests, status: 200, tokenFor });
  return { list_200: full, list_304: cached, health, cpu_ratio: round(cached.server_cpu_us_per_request / full.server_cpu_us_per_request, 3) };
}

/**
 * One user with 10,000 tasks (written straight into the database, versions
 * 1..10,000), then 10 toggles through the API: the feed's "10 changes since
 * a cursor", 200 times one after another.
 */
async function feedScenario({ pg, db, server, secret, edKeys }) {
  const [user] = makeUsersFrom(UID_BASE + 888_888n, 1, secret, edKeys);
  const n = 10_000;
  psql(pg.url(db), `INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at, version)
    SELECT '${user.sub}', 'Feed task ' || g, NULL, false, now(), now(), g FROM generate_series(1, ${n}) AS g`);
  psql(pg.url(db), `INSERT INTO task_lists (user_id, task_count, version) VALUES ('${user.sub}', ${n}, ${n})`);
  psql(pg.url(db), 'VACUUM (ANALYZE) tasks');
  const first = await api(server, user.hs256, 'GET', '/api/tasks?limit=10');
  for (const t of first.body) {
    const r = await api(server, user.hs256, 'PATCH', `/api/tasks/${t.id}/complete`);
    if (r.status !== 200) throw new Error(`feed scenario: toggle answered ${r.status}`);
  }
  const urlPath = `/api/tasks/changes?since=${n}`;
  const check = await api(server, user.hs256, 'GET', urlPath);
  if (check.body?.changes?.length !== 10) throw new Error(`feed scenario: ${JSON.stringify(check.body).slice(0, 200)}`);
  const r = await sequentialGets({ server, token: user.hs256, urlPath, requests: 200, status: 200 });
  return { tasks: n, changes: 10, ...r };
}

/**
 * Opens a live stream (GET /api/tasks/events) and calls `onEvent(event,
 * receivedAtNs)` for each event; resolves once the stream says `ready`.
 * Returns a function that closes it.
 */
function openStream(server, token, onEvent = () => {}) {
  return new Promise((resolve, reject) => {
    let buffer = '';
    let ready = false;
    const req = http.get(server.base + '/api/tasks/events', { headers: { authorization: `Bearer ${token}` } }, (res) => {
      if (res.statusCode !== 200) { reject(new Error(`events answered ${res.statusCode}`)); res.resume(); return; }
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        const at = process.hrtime.bigint();
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const ev = { id: null, event: 'message', data: '' };
          for (const line of frame.split('\n')) {
            const i = line.indexOf(':');
            if (i <= 0) continue;
            const [k, v] = [line.slice(0, i), line.slice(i + 1).replace(/^ /, '')];
            if (k === 'id') ev.id = v; else if (k === 'event') ev.event = v; else if (k === 'data') ev.data += v;
          }
          if (ev.event === 'ready' && !ready) { ready = true; resolve(() => req.destroy()); }
          else if (ev.event !== 'message') onEvent(ev, at);
        }
      });
    });
    req.on('error', (e) => { if (!ready) reject(e); });
  });
}

/**
 * Two instances on one database: streams of 50 users on B, writes of those
 * users on A at a steady rate; the time from each write's answer on A to
 * its event on B's stream.
 */
async function liveLatencyScenario({ pg, db, auth, tmp, server, users }) {
  const b = await startServer({ name: 'pg-live-b', databaseUrl: `${pg.url(db)}?sslmode=disable`, auth, tmp });
  const some = users.slice(0, 50);
  const sent = new Map(); // `${sub}:${version}` -> answer time (ns)
  const latencies = [];
  const closers = [];
  for (const u of some) {
    closers.push(await openStream(b, u.hs256, (ev, at) => {
      if (ev.event !== 'upsert') return;
      const key = `${u.sub}:${ev.id}`;
      const t = sent.get(key);
      if (t !== undefined) { latencies.push(Number(at - t) / 1e6); sent.delete(key); }
      else sent.set(key, -at); // the event came first (same instance clocks): rare
    }));
  }
  const rate = 100;
  const seconds = Math.max(5, Math.min(DURATION, 15));
  const started = process.hrtime.bigint();
  const pending = [];
  for (let i = 0; i < rate * seconds; i++) {
    const due = started + BigInt(Math.round((i * 1e9) / rate));
    const wait = Number(due - process.hrtime.bigint()) / 1e6;
    if (wait > 0) await sleep(wait);
    const u = some[i % some.length];
    pending.push(api(server, u.hs256, 'POST', '/api/tasks', { title: `live ${i}` }).then((r) => {
      const at = process.hrtime.bigint();
      const key = `${u.sub}:${r.body?.version}`;
      const early = sent.get(key);
      if (early !== undefined && early < 0n) { latencies.push(0); sent.delete(key); } else sent.set(key, at);
    }));
  }
  await Promise.all(pending);
  const deadline = Date.now() + 5000;
  while (sent.size > 0 && Date.now() < deadline) await sleep(50);
  for (const close of closers) close();
  await b.stop();
  const sorted = [...latencies].sort((x, y) => x - y);
  return {
    writes: rate * seconds, rate_per_s: rate, events: latencies.length, missing: rate * seconds - latencies.length,
    p50_ms: round(percentile(sorted, 50), 2), p99_ms: round(percentile(sorted, 99), 2), max_ms: round(sorted[sorted.length - 1], 2),
  };
}

/** `count` idle streams on one instance: its memory, and its CPU over a quiet minute of heartbeats. */
async function liveIdleScenario({ pg, db, auth, tmp, secret, edKeys }) {
  const count = 10_000;
  const perUser = 50;
  const server = await startServer({
    name: 'pg-live-idle', databaseUrl: `${pg.url(db)}?sslmode=disable`, auth, tmp,
    env: { MAX_STREAMS_PER_USER: String(perUser), MAX_STREAMS: String(count + 100), SSE_HEARTBEAT_SECONDS: '15' },
  });
  const before = memoryKiB(server.pid);
  const owners = makeUsersFrom(UID_BASE + 777_000n, Math.ceil(count / perUser), secret, edKeys);
  const closers = [];
  for (let i = 0; i < count; i += 100) {
    const batch = [];
    for (let k = i; k < Math.min(count, i + 100); k++) batch.push(openStream(server, owners[Math.floor(k / perUser)].hs256));
    closers.push(...(await Promise.all(batch)));
  }
  const opened = memoryKiB(server.pid);
  const quiet = 60;
  const cpuBefore = cpuSeconds(server.pid);
  await sleep(quiet * 1000);
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  const after = memoryKiB(server.pid);
  for (const close of closers) close();
  await server.stop();
  return {
    streams: count, rss_before_mib: round(before.rss / 1024, 1), rss_open_mib: round(opened.rss / 1024, 1),
    rss_after_quiet_mib: round(after.rss / 1024, 1), kib_per_stream: round((after.rss - before.rss) / count, 2),
    cpu_share_of_a_core: round(cpu / quiet, 4),
  };
}

async function main() {
  need('wrk');
  if (wantPg) { need('pgbench'); need('psql'); }
  if (!opt['no-build']) build();
  const bin = serverBinary();
  if (!fs.existsSync(bin)) die(`no server binary at ${bin} (build it, or pass --bin)`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'todo-bench-'));
  fs.chmodSync(tmp, 0o755);
  cleanups.push(() => { if (!opt.keep) fs.rmSync(tmp, { recursive: true, force: true }); });
  log(`working in ${tmp}${opt.keep ? ' (kept)' : ''}`);
  const load = os.loadavg()[0];
  if (load > 0.7) log(`warning: load average ${load.toFixed(2)} before the run: other work shares the CPUs, figures will be noisy (see "others CPU")`);

  const git = (...a) => { try { return execFileSync('git', ['-C', REPO, ...a], { encoding: 'utf8' }).trim(); } catch { return null; } };
  const started = STARTED;
  const results = {
    started_at: started.toISOString(),
    git: { commit: git('rev-parse', 'HEAD'), branch: git('rev-parse', '--abbrev-ref', 'HEAD'), server_sources_dirty: !!git('status', '--porcelain', '--', 'src', 'migration', 'Cargo.toml', 'Cargo.lock') },
    machine: { ...cpuModel(), memory_gib: round(os.totalmem() / 2 ** 30, 1), kernel: os.release(), load_avg_at_start: os.loadavg().map((l) => round(l, 2)) },
    tools: {
      node: process.version,
      wrk: (spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout || '').split('\n')[0].trim(),
      pgbench: wantPg ? execFileSync('pgbench', ['--version'], { encoding: 'utf8' }).trim() : null,
    },
    server: {
      binary: bin, binary_mtime: fs.statSync(bin).mtime.toISOString(), db_max_connections: opt['db-pool'] ?? 'server default', rust_log: opt['rust-log'] ?? 'server default',
    },
    options: {
      users: N_USERS, tasks_per_user: N_TASKS, duration_s: DURATION, warmup_s: WARMUP, connections: CONNECTIONS, threads: THREADS,
      pgbench_clients: PGBENCH_CLIENTS, mix: MIX, list_limit: LIMIT, pg: opt.pg, scenarios,
    },
    postgres: null,
    sql_trace: null,
    scenarios: [],
  };

  const secret = crypto.randomBytes(32).toString('hex');
  const edKeys = ed25519Keys('k1');
  const jwks = await startJwksServer(edKeys.jwks);
  cleanups.push(() => jwks.close());
  const auth = { BETTER_AUTH_SECRET: secret, BETTER_AUTH_JWKS_URL: jwks.url };
  const users = makeUsers(secret, edKeys);

  const record = (r) => {
    results.scenarios.push(r);
    const extra = r.tool === 'pgbench' ? ` (pgbench -c ${r.clients})` : '';
    log(`${r.name}${extra}: ${fmt(r.rps)} req/s, p50 ${fmt(r.latency_ms?.p50, 2)} ms, p99 ${fmt(r.latency_ms?.p99, 2)} ms, errors ${r.errors?.total}`);
  };

  if (want('startup')) {
    log(`startup: ${STARTUP_RUNS} cold starts to ready on a new SQLite file, and again on it`);
    results.startup = await startupScenario({ auth, tmp });
    log(`startup: new file ${results.startup.new_file.median_ms} ms, existing file ${results.startup.existing_file.median_ms} ms (medians)`);
  }

  // --- PostgreSQL -----------------------------------------------------------
  if (wantPg) {
    let pg;
    if (opt.pg === 'private') pg = await startPrivateCluster({ port: await freePort() });
    else if (opt.pg === 'shared') pg = await useSharedServer({ port: int(opt['pg-port'], 'pg-port') });
    else die('--pg must be private or shared');
    cleanups.push(() => pg.stop({ keep: opt.keep }));
    const db = `todo_bench_${process.pid}`;
    createDatabase(pg, db);
    cleanups.push(() => dropDatabase(pg, db));
    let pgss = true;
    try {
      psql(pg.url(db), 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
      pgssReset(pg, db);
    } catch (e) {
      pgss = false;
      log(`pg_stat_statements unavailable (${e.message.split('\n')[0]}): no per-statement counts`);
    }
    results.postgres = { kind: pg.kind, version: pg.version, port: pg.port, pg_stat_statements: pgss };
    log(`PostgreSQL ${pg.version} (${pg.kind}, port ${pg.port}, postmaster ${pg.pid})`);

    const server = await startServer({ name: 'pg', databaseUrl: `${pg.url(db)}?sslmode=disable`, auth, tmp });
    log(`server pid ${server.pid} on ${server.base}`);
    results.seed_seconds_pg = round(await seed(server, users), 1);
    const base = contiguousBase(users);
    const lastSeeded = base + N_USERS * N_TASKS - 1;
    await smoke(server, users);
    const hsData = path.join(tmp, 'data-hs256.lua');
    const edData = path.join(tmp, 'data-eddsa.lua');
    writeLuaData(hsData, users, 'hs256');
    writeLuaData(edData, users, 'eddsa');

    if (want('sql-trace')) {
      log('sql-trace: one request of each kind through a protocol tap, pool of one connection');
      results.sql_trace = await sqlTrace({ pg, db, auth, users, tmp });
    }

    if (want('pg-network')) {
      log(`pg-network: each request kind one at a time, PostgreSQL direct and ${opt['net-delay']} ms away each way`);
      results.network = await networkScenario({ pg, db, auth, users, tmp });
      resetData(pg, db, lastSeeded);
    }

    const ctx = { serverPid: server.pid, pgPid: pg.pid };
    const pgCtx = () => ({
      ...ctx,
      beforeMeasure: async () => { if (pgss) pgssReset(pg, db); },
    });
    const withStatements = (r) => {
      if (pgss) r.statements = labelStatements(pgssSnapshot(pg, db), r.requests);
      return r;
    };

    if (want('health')) {
      const m = await runWrk({ server, mix: 'health=1', duration: DURATION, label: 'health' });
      record({ name: 'health', description: 'GET /health (no auth, no DB): the HTTP ceiling', ...(await m(ctx)) });
    }
    const wrkPg = async (name, mix, dataFile, description) => {
      resetData(pg, db, lastSeeded);
      const m = await runWrk({ server, mix, dataFile, duration: DURATION, label: name });
      record(withStatements({ name, description, mix, ...(await m(pgCtx())) }));
    };
    if (want('pg-list')) await wrkPg('pg-list', `list=100`, hsData, `GET /api/tasks?limit=${LIMIT} only, HS256`);
    if (want('pg-mix')) await wrkPg('pg-mix', mixSpec(MIX), hsData, 'realistic mix, HS256 tokens');
    // A second instance on the same database with `env` (what a setting costs).
    const secondInstance = (name, env) => startServer({ name, databaseUrl: `${pg.url(db)}?sslmode=disable`, auth, tmp, env });
    // The mix through such an instance, recorded as `name`.
    const mixOnSecond = async (name, env, description) => {
      const other = await secondInstance(name, env);
      resetData(pg, db, lastSeeded);
      const m = await runWrk({ server: other, mix: mixSpec(MIX), dataFile: hsData, duration: DURATION, label: name });
      record(withStatements({ name, description, mix: mixSpec(MIX), ...(await m({ ...pgCtx(), serverPid: other.pid })) }));
      await other.stop();
    };
    // Without the request role (the bench's role is a superuser, so no
    // policy applies): what row-level security costs.
    if (want('pg-mix-rls-off')) await mixOnSecond('pg-mix-rls-off', { DB_ROW_LEVEL_SECURITY: 'off' }, 'realistic mix, HS256, row-level security off');
    if (want('pg-mix-rls-ab')) {
      // The mix on the main instance (on) and on a second one (off).
      const off = await secondInstance('pg-rls-ab-off', { DB_ROW_LEVEL_SECURITY: 'off' });
      const segment = Math.max(5, Math.round(DURATION / 2));
      results.rls_ab = { segment_s: segment };
      Object.assign(results.rls_ab, await interleavedPairs(RLS_AB_ROUNDS, async (on) => {
        const instance = on ? server : off;
        resetData(pg, db, lastSeeded);
        const m = await runWrk({ server: instance, mix: mixSpec(MIX), dataFile: hsData, duration: segment, label: `pg-mix-rls-ab-${on ? 'on' : 'off'}` });
        return m({ ...pgCtx(), serverPid: instance.pid });
      }));
      await off.stop();
      logPairs('pg-mix-rls-ab', results.rls_ab, segment, 'req/s', 'request');
    }
    if (want('pg-mix-eddsa')) {
      const fetchesBefore = jwks.fetches;
      await wrkPg('pg-mix-eddsa', mixSpec(MIX), edData, 'realistic mix, EdDSA tokens verified with keys from the JWKS server');
      results.scenarios[results.scenarios.length - 1].jwks_fetches = jwks.fetches - fetchesBefore;
    }
    if (want('profile')) {
      resetData(pg, db, lastSeeded);
      const r = await profileScenario({ server, dataFile: hsData, tmp, ctx });
      fs.mkdirSync(opt.out, { recursive: true });
      const perfFile = path.join(opt.out, `perf-${started.toISOString().replace(/[:.]/g, '-')}.txt`);
      fs.writeFileSync(perfFile, r.perf_report);
      delete r.perf_report;
      r.perf_report_file = perfFile;
      record({ name: 'profile-list', description: 'pg-list again under perf record -a (figures perturbed by perf)', ...r });
      log(`perf report written to ${perfFile}`);
    }
    for (const clients of PGBENCH_CLIENTS) {
      const suffix = clients === PGBENCH_CLIENTS[0] ? '' : `-c${clients}`;
      const pgb = async (name, mix, description, minimal = false, role = true) => {
        resetData(pg, db, lastSeeded);
        const m = await runPgbench({ pg, db, mix, clients, duration: DURATION, base, tmp, label: name, minimal, role });
        record(withStatements({ name, description, mix: mixSpec(mix), ...(await m(pgCtx())) }));
      };
      if (want('pgbench-list')) await pgb(`pgbench-list${suffix}`, { list: 100 }, `the list statement alone, pgbench -M prepared -c ${clients}`);
      if (want('pgbench-mix')) await pgb(`pgbench-mix${suffix}`, MIX, `the mix's statements with its weights, pgbench -M prepared -c ${clients}`);
      if (want('pgbench-mix-rls-off')) await pgb(`pgbench-mix-rls-off${suffix}`, MIX, `pgbench-mix as the superuser, not the request role (no policy applies), pgbench -M prepared -c ${clients}`, false, false);
      if (want('pgbench-mix-rls-ab') && clients === PGBENCH_CLIENTS[0]) {
        // pgbench-mix (the request role) and pgbench-mix-rls-off (the superuser).
        const segment = Math.max(5, Math.round(DURATION / 2));
        results.pgbench_rls_ab = { segment_s: segment, clients };
        Object.assign(results.pgbench_rls_ab, await interleavedPairs(RLS_AB_ROUNDS, async (role) => {
          resetData(pg, db, lastSeeded);
          const label = `pgbench-mix-rls-ab-${role ? 'on' : 'off'}`;
          const m = await runPgbench({ pg, db, mix: MIX, clients, duration: segment, base, tmp, label, role });
          return m(pgCtx());
        }));
        logPairs('pgbench-mix-rls-ab', results.pgbench_rls_ab, segment, 'tps', 'transaction');
      }
      if (want('pgbench-minimal-mix')) await pgb(`pgbench-minimal-mix${suffix}`, MIX, `the least SQL a Todo backend could send for the mix (bench/pgbench/minimal), pgbench -M prepared -c ${clients}`, true);
    }
    if (want('callgrind')) {
      resetData(pg, db, lastSeeded);
      log('callgrind: a second server instance under valgrind (slow)');
      results.callgrind = await callgrindScenario({ pg, db, auth, users, tmp });
    }
    if (want('pg-list-1000')) {
      // Last: its rows are not the seeded ones (the resets above would delete them).
      results.list_1000_pg = await longListScenario({ server, secret, edKeys });
      log(`pg-list-1000: median ${results.list_1000_pg.median_ms} ms, server CPU ${results.list_1000_pg.server_cpu_ms_per_request} ms per request`);
    }
    // An instance that sends no NOTIFY with its writes.
    if (want('pg-mix-notify-off')) await mixOnSecond('pg-mix-notify-off', { LIVE_NOTIFY: 'off' }, 'realistic mix, HS256, no NOTIFY with writes');
    if (want('pg-mix-streams')) {
      // The mix again with 1,000 live streams open on the same instance (5 on
      // each seeded user), each receiving its user's changes as they happen.
      let events = 0;
      const closers = [];
      for (let i = 0; i < 1000; i += 50) {
        const batch = [];
        for (let k = i; k < i + 50; k++) batch.push(openStream(server, users[k % users.length].hs256, () => { events++; }));
        closers.push(...(await Promise.all(batch)));
      }
      resetData(pg, db, lastSeeded);
      const m = await runWrk({ server, mix: mixSpec(MIX), dataFile: hsData, duration: DURATION, label: 'pg-mix-streams' });
      record(withStatements({ name: 'pg-mix-streams', description: 'realistic mix, HS256, with 1,000 live streams open and receiving', mix: mixSpec(MIX), ...(await m(pgCtx())) }));
      for (const close of closers) close();
      results.streams_events = events;
    }
    if (want('live-latency')) {
      results.live_latency = await liveLatencyScenario({ pg, db, auth, tmp, server, users });
      log(`live-latency: p50 ${results.live_latency.p50_ms} ms, p99 ${results.live_latency.p99_ms} ms over ${results.live_latency.events} events`);
    }
    if (want('live-idle')) {
      results.live_idle = await liveIdleScenario({ pg, db, auth, tmp, secret, edKeys });
      log(`live-idle: ${results.live_idle.streams} streams, RSS ${results.live_idle.rss_after_quiet_mib} MiB, CPU ${results.live_idle.cpu_share_of_a_core} of a core`);
    }
    if (want('pg-list-304')) {
      results.list_304 = await notModifiedScenario({ server, users });
      log(`pg-list-304: server CPU ${results.list_304.list_304.server_cpu_us_per_request} µs (304) vs ${results.list_304.list_200.server_cpu_us_per_request} µs (200) per request`);
    }
    if (want('pg-feed-10k')) {
      results.feed_10k = await feedScenario({ pg, db, server, secret, edKeys });
      log(`pg-feed-10k: median ${results.feed_10k.median_ms} ms, server CPU ${results.feed_10k.server_cpu_us_per_request} µs per request`);
    }
    results.server_log_bytes_pg = fs.statSync(server.logFile).size;
    await server.stop();
  }

  // --- SQLite ---------------------------------------------------------------
  if (wantSqlite) {
    const file = path.join(tmp, 'sqlite', 'todo.db');
    fs.mkdirSync(path.dirname(file));
    const server = await startServer({ name: 'sqlite', databaseUrl: `sqlite://${file}?mode=rwc`, auth, tmp });
    log(`server (SQLite ${file}) pid ${server.pid}`);
    results.seed_seconds_sqlite = round(await seed(server, users), 1);
    await smoke(server, users, { eddsa: false });
    const data = path.join(tmp, 'data-sqlite.lua');
    writeLuaData(data, users, 'hs256');
    const ctx = { serverPid: server.pid };
    // The list run first: it writes nothing, so both runs start from the seeded data.
    if (want('sqlite-list')) {
      const m = await runWrk({ server, mix: 'list=100', dataFile: data, duration: DURATION, label: 'sqlite-list' });
      record({ name: 'sqlite-list', description: `GET /api/tasks?limit=${LIMIT} only, SQLite file`, mix: 'list=100', ...(await m(ctx)) });
    }
    if (want('sqlite-mix')) {
      const m = await runWrk({ server, mix: mixSpec(MIX), dataFile: data, duration: DURATION, label: 'sqlite-mix' });
      record({ name: 'sqlite-mix', description: 'realistic mix, SQLite file (writes serialise)', mix: mixSpec(MIX), ...(await m(ctx)) });
    }
    if (want('sqlite-list-1000')) {
      results.list_1000_sqlite = await longListScenario({ server, secret, edKeys });
      log(`sqlite-list-1000: median ${results.list_1000_sqlite.median_ms} ms, server CPU ${results.list_1000_sqlite.server_cpu_ms_per_request} ms per request`);
    }
    if (want('sqlite-list-304')) {
      results.list_304_sqlite = await notModifiedScenario({ server, users });
      log(`sqlite-list-304: server CPU ${results.list_304_sqlite.list_304.server_cpu_us_per_request} µs (304) vs ${results.list_304_sqlite.list_200.server_cpu_us_per_request} µs (200) per request`);
    }
    results.server_log_bytes_sqlite = fs.statSync(server.logFile).size;
    await server.stop();
  }

  // --- Ratios -----------------------------------------------------------------
  const find = (n) => results.scenarios.find((s) => s.name === n);
  const health = find('health');
  for (const s of results.scenarios) {
    if (s.tool !== 'wrk' || s.name === 'health') continue;
    const ref = s.name.includes('list') ? find('pgbench-list') : find('pgbench-mix');
    s.ratio_vs_pgbench = ref ? round(s.rps / ref.rps, 3) : null;
    const best = Math.max(0, ...results.scenarios.filter((p) => p.tool === 'pgbench' && p.name.includes(s.name.includes('list') ? 'list' : 'mix')).map((p) => p.rps));
    s.ratio_vs_pgbench_best = best ? round(s.rps / best, 3) : null;
    s.ratio_vs_health = health ? round(s.rps / health.rps, 3) : null;
  }
  for (const s of results.scenarios) {
    if (s.tool === 'pgbench') s.ratio_vs_health = health ? round(s.rps / health.rps, 3) : null;
  }
  results.finished_at = new Date().toISOString();

  fs.mkdirSync(opt.out, { recursive: true });
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const jsonFile = path.join(opt.out, `bench-${stamp}.json`);
  fs.writeFileSync(jsonFile, JSON.stringify(results, null, 2) + '\n');
  fs.copyFileSync(jsonFile, path.join(opt.out, 'latest.json'));

  const out = [];
  out.push(`todo-api bench — ${results.git.commit?.slice(0, 10) ?? '?'}${results.git.server_sources_dirty ? ' (+uncommitted server changes)' : ''}, ${results.machine.cores} x ${results.machine.model}, PostgreSQL ${results.postgres?.version ?? '-'} (${results.postgres?.kind ?? '-'})`);
  out.push(`${N_USERS} users x ${N_TASKS} tasks, wrk -t${THREADS} -c${CONNECTIONS} ${DURATION} s (+${WARMUP} s warm-up), pgbench -M prepared -j${THREADS} -c ${PGBENCH_CLIENTS.join('/')}`);
  out.push('');
  out.push(table(results.scenarios));
  out.push('');
  out.push('vs pgbench: req/s as a share of pgbench running the same statements with the same weights (pgbench -c ' + PGBENCH_CLIENTS[0] + ').');
  out.push('vs /health: share of GET /health through the same server. CPU µs/req: utime+stime over the measured run / requests.');
  out.push('others CPU: share of the whole machine used by processes outside the bench during the run (other work: the figures are noisy when it is high).');
  const trace = results.sql_trace?.steady;
  if (trace) {
    out.push('');
    out.push('Per request, steady state (protocol tap, pool of one):');
    for (const [kind, t] of Object.entries(trace)) {
      out.push(`  ${kind.padEnd(13)} ${t.statements_executed} statement(s), ${t.round_trips} round trip(s) (${t.lone_syncs} bare Sync ping(s))`);
    }
  }
  if (results.network) {
    const n = results.network;
    out.push('');
    out.push(`PostgreSQL ${n.delay_ms_each_way} ms away each way, one request at a time (median ms, direct -> away; round trips = difference / ${2 * n.delay_ms_each_way} ms):`);
    for (const kind of Object.keys(n.round_trips)) {
      out.push(`  ${kind.padEnd(13)} ${fmt(n.median_ms_direct[kind], 2)} -> ${fmt(n.median_ms_delayed[kind], 2)} ms, ${n.round_trips[kind]} round trip(s)`);
    }
  }
  if (results.startup) {
    out.push('');
    out.push(`Cold start to ready, SQLite (median of ${results.startup.runs}): new file ${results.startup.new_file.median_ms} ms, existing file ${results.startup.existing_file.median_ms} ms`);
  }
  for (const [db, r] of [['PostgreSQL', results.list_1000_pg], ['SQLite', results.list_1000_sqlite]]) {
    if (r) out.push(`List of ${r.tasks} tasks, ${db}, one request at a time (${r.body_bytes} bytes): client time to last byte median ${r.median_ms} ms, p90 ${r.p90_ms} ms; server CPU ${r.server_cpu_ms_per_request} ms per request`);
  }
  if (results.live_latency) {
    const r = results.live_latency;
    out.push(`Live events, write answered on instance A to event on a stream on B, ${r.rate_per_s} writes/s: p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms, max ${r.max_ms} ms (${r.events} events, ${r.missing} missing)`);
  }
  if (results.live_idle) {
    const r = results.live_idle;
    out.push(`Idle live streams: ${fmt(r.streams)} on one instance, RSS ${r.rss_before_mib} -> ${r.rss_after_quiet_mib} MiB (${r.kib_per_stream} KiB each), CPU over a quiet minute ${pct(r.cpu_share_of_a_core)} of a core`);
  }
  const [quiet, streaming] = [find('pg-mix'), find('pg-mix-streams')];
  if (quiet && streaming) {
    out.push(`1,000 live streams open and receiving (${fmt(results.streams_events ?? 0)} events), pg-mix with vs without: req/s ${fmt(streaming.rps)} vs ${fmt(quiet.rps)} (${pct(streaming.rps / quiet.rps)}), p99 ${streaming.latency_ms?.p99} vs ${quiet.latency_ms?.p99} ms`);
  }
  const [notifying, silent] = [find('pg-mix'), find('pg-mix-notify-off')];
  if (notifying && silent) {
    out.push(`NOTIFY with each write, pg-mix on vs off: req/s ${fmt(notifying.rps)} vs ${fmt(silent.rps)} (${pct(notifying.rps / silent.rps)}), p99 ${notifying.latency_ms?.p99} vs ${silent.latency_ms?.p99} ms`);
  }
  for (const [db, r] of [['PostgreSQL', results.list_304], ['SQLite', results.list_304_sqlite]]) {
    if (!r) continue;
    out.push(`${db}: list of 20, one request at a time: 304 (If-None-Match) ${r.list_304.server_cpu_us_per_request} µs vs 200 ${r.list_200.server_cpu_us_per_request} µs of server CPU per request (${pct(r.cpu_ratio)}; /health ${r.health.server_cpu_us_per_request} µs); client median ${r.list_304.median_ms} vs ${r.list_200.median_ms} ms`);
  }
  if (results.feed_10k) {
    const r = results.feed_10k;
    out.push(`Changes feed, ${r.changes} changes since a cursor, user with ${fmt(r.tasks)} tasks: client median ${r.median_ms} ms, p90 ${r.p90_ms} ms; server CPU ${r.server_cpu_us_per_request} µs per request`);
  }
  if (results.callgrind) {
    out.push('');
    out.push('Server instructions per request (callgrind): ' + Object.entries(results.callgrind.instructions_per_request).map(([k, v]) => `${k} ${fmt(v)}`).join(', '));
  }
  for (const s of results.scenarios) {
    if (s.errors?.total) out.push(`WARNING: ${s.name} had ${s.errors.total} errors: ${JSON.stringify(s.errors)}${s.by_status ? ' ' + JSON.stringify(s.by_status) : ''}`);
  }
  const [mix, ours, least] = [find('pg-mix'), find('pgbench-mix'), find('pgbench-minimal-mix')];
  if (mix && (ours || least)) {
    const share = (ref) => (ref ? `${pct(mix.rps / ref.rps)} of ${ref.name} (${fmt(ref.rps)} tx/s, p99 ${ref.latency_ms?.p99} ms)` : '-');
    out.push('');
    out.push(`pg-mix ${fmt(mix.rps)} req/s, p99 ${mix.latency_ms?.p99} ms: ${share(ours)} [our SQL's ceiling]; ${share(least)} [the minimal SQL's ceiling]`);
  }
  const [on, off] = [find('pg-mix'), find('pg-mix-rls-off')];
  if (on && off) {
    const cpu = (r) => r.cpu?.pg_cpu_us_per_req;
    out.push('');
    out.push(`Row-level security, pg-mix on vs off: req/s ${fmt(on.rps)} vs ${fmt(off.rps)} (${pct(on.rps / off.rps)}), ` +
      `PostgreSQL CPU ${fmt(cpu(on))} vs ${fmt(cpu(off))} µs/req (${cpu(off) ? pct(cpu(on) / cpu(off)) : '-'}), p99 ${on.latency_ms?.p99} vs ${off.latency_ms?.p99} ms`);
  }
  const sqlPg = results.scenarios.filter((s) => s.statements && s.tool === 'wrk');
  for (const s of sqlPg) {
    const unknown = s.statements.filter((st) => !st.kind && st.calls > s.requests * 0.001);
    if (unknown.length) out.push(`NOTE: ${s.name} ran statements no pgbench script mirrors: ${unknown.map((u) => u.query.slice(0, 80)).join(' | ')}`);
  }
  out.push('');
  out.push(`JSON: ${jsonFile}`);
  console.log(out.join('\n'));
  // No error is acceptable: a run with any makes the command fail (after writing its results).
  if (results.scenarios.some((s) => s.errors?.total)) process.exitCode = 3;
}

try {
  await main();
} catch (e) {
  console.error(`error: ${e.stack || e.message}`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
