#!/usr/bin/env node
// Writes link/symbol-order.txt: the functions the server runs (start-up on
// PostgreSQL and SQLite, every endpoint with HS256 and EdDSA tokens, the
// errors a frontend meets, CORS preflights, shutdown), most instructions first.
// build.rs hands it to the linker, which places those functions together at
// the start of .text. The kernel maps a binary's code 64 KiB around each page
// that faults, so spread over 10 MiB of code the few hundred KiB that run
// dragged in most of the rest (7.8 MiB of code resident); together they do
// not (docs/performance.md, fourth pass).
//
//   node bench/link-order.mjs            # build, record, write the file
//   node bench/link-order.mjs --check    # how much of the file the current build still has
//
// Options: --no-build, --bin PATH, --pg-url URL (a server where it may create
// and drop a database; default $TEST_DATABASE_URL or the local one),
// --out FILE [link/symbol-order.txt], --keep (keep the temp dir).
//
// The names are the binary's mangled symbols; they stay the same across edits
// of the code (a function's name changes only when its path, its type
// parameters, the crate's version or the toolchain do). Names the binary no
// longer has are ignored by the linker; regenerate when `--check` finds the
// file covering much less than it did.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mintHs256, mintEdDsa, ed25519Keys, startJwksServer } from './lib/tokens.mjs';
import { buildRelease, freePort, serverBinary as libServerBinary } from './lib/build.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');

const opt = { out: path.join(REPO, 'link', 'symbol-order.txt'), 'pg-url': process.env.TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test' };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (['--check', '--no-build', '--keep'].includes(a)) opt[a.slice(2)] = true;
  else if (['--bin', '--pg-url', '--out'].includes(a)) opt[a.slice(2)] = process.argv[++i];
  else if (a === '-h' || a === '--help') { console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n')); process.exit(0); }
  else die(`unknown argument ${a} (--help)`);
}

function die(msg) { console.error(`[link-order] ${msg}`); process.exit(2); }
function log(msg) { console.error(`[link-order] ${msg}`); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const serverBinary = () => libServerBinary(opt.bin);

/** Defined function symbols of the binary: name -> size in bytes. */
function functionSymbols(bin) {
  const out = execFileSync('nm', ['-S', '--defined-only', bin], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const sizes = new Map();
  for (const line of out.split('\n')) {
    const [, size, type, name] = line.split(' ');
    if (name && /^[tTwW]$/.test(type)) sizes.set(name, parseInt(size, 16));
  }
  return sizes;
}

function readOrderFile(file) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
}

if (opt.check) {
  const bin = serverBinary();
  const sizes = functionSymbols(bin);
  const names = readOrderFile(opt.out);
  const found = names.filter((n) => sizes.has(n));
  const bytes = found.reduce((s, n) => s + sizes.get(n), 0);
  console.log(`${path.relative(REPO, opt.out)}: ${found.length} of ${names.length} functions are in ${bin} (${(bytes / 1024).toFixed(0)} KiB of code placed first)`);
  process.exit(0);
}

if (!opt['no-build']) {
  log('cargo build --release (no-op when up to date)');
  if (!buildRelease()) die('cargo build --release failed');
}
for (const tool of ['valgrind', 'nm', 'psql']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) die(`needs ${tool}`);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'todo-link-order-'));
const cleanups = [];
async function cleanup() {
  for (const f of cleanups.reverse()) { try { await f(); } catch { /* best effort */ } }
  if (!opt.keep) fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('SIGINT', async () => { await cleanup(); process.exit(130); });

/** The server under callgrind, counting from its first instruction. */
async function startUnderCallgrind(name, env) {
  const bin = path.join(tmp, 'todo-api');
  if (!fs.existsSync(bin)) fs.copyFileSync(serverBinary(), bin);
  fs.chmodSync(bin, 0o755);
  const port = await freePort();
  const logFd = fs.openSync(path.join(tmp, `server-${name}.log`), 'w');
  const child = spawn('valgrind', ['--tool=callgrind', `--callgrind-out-file=${path.join(tmp, `callgrind.${name}.%p`)}`,
    '--demangle=no', '--dump-instr=no', '--collect-jumps=no', bin, 'serve'], {
    cwd: tmp,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8', HOST: '127.0.0.1', PORT: String(port), CORS_ORIGINS: 'http://localhost:3000', ...env },
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  let exited = null;
  const done = new Promise((resolve) => child.on('exit', (code, signal) => { exited = { code, signal }; resolve(); }));
  const server = {
    base: `http://127.0.0.1:${port}`,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 60000);
      await done;
      clearTimeout(t);
    },
  };
  cleanups.push(() => server.stop());
  const deadline = Date.now() + 180000;
  for (;;) {
    if (exited) die(`server ${name} exited ${JSON.stringify(exited)}; log in ${tmp} (--keep)`);
    try { if ((await fetch(`${server.base}/health/ready`)).ok) break; } catch { /* not yet */ }
    if (Date.now() > deadline) die(`server ${name} not ready in 180 s`);
    await sleep(200);
  }
  return server;
}

/** What a frontend does, for a few users, and the mistakes it makes. */
async function exercise(server, tokens) {
  const call = async (method, p, { token, body, headers = {} } = {}) => {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(server.base + p, { method, headers: h, body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)) });
    const text = await r.text();
    return { status: r.status, json: text && r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : null };
  };
  const expect = (r, status, what) => { if (r.status !== status) die(`${what}: ${r.status}, expected ${status}`); return r; };
  for (let round = 0; round < 3; round++) {
    await call('GET', '/health');
    await call('GET', '/health/ready');
    await call('OPTIONS', '/api/tasks', { headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });
    for (const token of tokens) {
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(expect(await call('POST', '/api/tasks', { token, body: { title: `Task ${i}`, description: 'recorded for the link order' } }), 201, 'create').json.id);
      expect(await call('GET', '/api/tasks?limit=20', { token }), 200, 'list');
      expect(await call('GET', '/api/tasks', { token, headers: { origin: 'http://localhost:3000' } }), 200, 'list');
      expect(await call('GET', '/api/tasks?status=pending&sort=title&order=asc&limit=10&offset=0', { token }), 200, 'list filtered');
      expect(await call('GET', `/api/tasks/${ids[0]}`, { token }), 200, 'get');
      expect(await call('PATCH', `/api/tasks/${ids[1]}/complete`, { token }), 200, 'toggle');
      expect(await call('PUT', `/api/tasks/${ids[2]}`, { token, body: { title: 'Renamed', completed: true } }), 200, 'update');
      expect(await call('DELETE', `/api/tasks/${ids[3]}`, { token }), 200, 'delete');
      await call('GET', `/api/tasks/${ids[3]}`, { token }); // 404
      await call('POST', '/api/tasks', { token, body: { title: '' } }); // 422
      await call('POST', '/api/tasks', { token, body: '{"title": ' }); // 400
      await call('GET', '/api/tasks/not-a-number', { token });
    }
    await call('GET', '/api/tasks'); // 401: no token
    await call('GET', '/api/tasks', { token: `${tokens[0]}x` }); // 401: bad signature
  }
}

const secret = crypto.randomBytes(32).toString('hex');
const edKeys = ed25519Keys('k1');
const jwks = await startJwksServer(edKeys.jwks);
cleanups.push(() => jwks.close());
const now = Math.floor(Date.now() / 1000);
const tokens = [0, 1].flatMap((u) => {
  const claims = { sub: `link-order-user-${u}`, iat: now, exp: now + 3600 };
  return [mintHs256(secret, claims), mintEdDsa(edKeys, claims)];
});
const auth = { BETTER_AUTH_SECRET: secret, BETTER_AUTH_JWKS_URL: jwks.url };

try {
  const db = `todo_link_order_${process.pid}`;
  const admin = opt['pg-url'];
  execFileSync('psql', [admin, '-qc', `CREATE DATABASE ${db}`]);
  cleanups.push(() => execFileSync('psql', [admin, '-qc', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]));
  const pgUrl = new URL(admin);
  pgUrl.pathname = `/${db}`;
  for (const [name, url] of [['postgres', pgUrl.toString()], ['sqlite', `sqlite://${path.join(tmp, 'todo.db')}?mode=rwc`]]) {
    log(`${name}: server under callgrind (start-up, every endpoint, errors, shutdown)`);
    const server = await startUnderCallgrind(name, { ...auth, DATABASE_URL: url });
    await exercise(server, tokens);
    await server.stop();
  }

  // Self cost per function, per database.
  const cost = new Map();
  const seenIn = new Map(); // function -> Set of databases whose server ran it
  for (const f of fs.readdirSync(tmp).filter((f) => f.startsWith('callgrind.'))) {
    const database = f.split('.')[1];
    const names = new Map();
    let current = null;
    let callCost = false;
    for (const line of fs.readFileSync(path.join(tmp, f), 'utf8').split('\n')) {
      const fn = line.match(/^(c?)fn=\((\d+)\)(?: (.*))?$/);
      if (fn) {
        if (fn[3]) names.set(fn[2], fn[3]);
        if (!fn[1]) current = names.get(fn[2]);
        continue;
      }
      if (line.startsWith('calls=')) { callCost = true; continue; }
      if (/^[0-9+*-]/.test(line) && current) {
        // The line after `calls=` is the callee's inclusive cost, not ours.
        if (callCost) { callCost = false; continue; }
        const ir = Number(line.split(' ')[1]);
        if (ir > 0) {
          cost.set(current, (cost.get(current) ?? 0) + ir);
          if (!seenIn.has(current)) seenIn.set(current, new Set());
          seenIn.get(current).add(database);
        }
      }
    }
  }
  const sizes = functionSymbols(serverBinary());
  // What both servers run first, then what only the PostgreSQL one runs, then
  // SQLite's: each server's code is then one stretch (two for SQLite).
  const group = (n) => (seenIn.get(n).size > 1 ? 0 : seenIn.get(n).has('postgres') ? 1 : 2);
  const ordered = [...cost.entries()].filter(([n]) => sizes.has(n))
    .sort((a, b) => group(a[0]) - group(b[0]) || b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([n]) => n);
  const groupBytes = [0, 1, 2].map((g) => ordered.filter((n) => group(n) === g).reduce((s, n) => s + sizes.get(n), 0));
  const bytes = ordered.reduce((s, n) => s + sizes.get(n), 0);
  const total = [...sizes.values()].reduce((s, n) => s + n, 0);
  fs.mkdirSync(path.dirname(opt.out), { recursive: true });
  fs.writeFileSync(opt.out, [
    '# Functions the server runs, most instructions first: the linker places them',
    '# together at the start of .text (build.rs). Written by `node bench/link-order.mjs`;',
    '# names the build no longer has are skipped (`node bench/link-order.mjs --check`).',
    ...ordered, '',
  ].join('\n'));
  const kib = (b) => `${(b / 1024).toFixed(0)} KiB`;
  log(`${ordered.length} functions, ${kib(bytes)} of ${kib(total)} of code (both databases ${kib(groupBytes[0])}, PostgreSQL only ${kib(groupBytes[1])}, SQLite only ${kib(groupBytes[2])}), written to ${path.relative(REPO, opt.out)}`);
} finally {
  await cleanup();
}
