// Headless Chromium test of the real frontend flow: a page served by Better Auth signs a user
// up/in, gets a JWT, and calls the Rust API cross-origin (CORS). A second origin must be blocked.
// Env: API_URL (the running Rust API, default http://127.0.0.1:8123), AUTH_PORT (3000),
//      OTHER_PORT (3001), CHROMIUM_PATH (/usr/bin/chromium). Exits non-zero on any failure.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const API_URL = (process.env.API_URL || "http://127.0.0.1:8123").replace(/\/$/, "");
const AUTH_PORT = process.env.AUTH_PORT || "3000";
const OTHER_PORT = process.env.OTHER_PORT || "3001";
const STEP_TIMEOUT_MS = 15000;
const TOTAL_TIMEOUT_MS = 120000;

let server;
let context;
let userDataDir;
const consoleLines = [];

// Starts server.mjs and resolves once it prints READY (or rejects on exit/timeout).
function startAuthServer() {
  server = spawn(process.execPath, [new URL("./server.mjs", import.meta.url).pathname], {
    env: {
      ...process.env,
      PORT: AUTH_PORT,
      HOST: "127.0.0.1",
      BASE_URL: `http://localhost:${AUTH_PORT}`,
      OTHER_PORT,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).on("line", (l) => l.startsWith("READY ") && resolve(l.slice(6)));
    server.once("exit", (code) => reject(new Error(`server.mjs exited early (code ${code})`)));
    setTimeout(() => reject(new Error("server.mjs printed no READY line")), STEP_TIMEOUT_MS).unref();
  });
}

function withTimeout(promise, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

// Runs one named step; fn returns a detail string on success or throws.
async function step(name, fn) {
  try {
    const detail = await withTimeout(fn(), name);
    console.log(`PASS ${name}${detail ? ` (${detail})` : ""}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    throw e;
  }
}

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function cleanup() {
  await context?.close().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    await withTimeout(exited, "server.mjs shutdown").catch(() => server.kill("SIGKILL"));
  }
}

async function main() {
  await step("start Better Auth server", async () => startAuthServer());

  userDataDir = mkdtempSync(join(tmpdir(), "interop-chromium-"));
  await step("launch Chromium", async () => {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
      headless: true,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
      ],
    });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.on("console", (m) => consoleLines.push(`[console.${m.type()}] ${m.text()}`));
    return context.browser()?.version() ?? "persistent context";
  });

  const page = await context.newPage();
  await step(`open http://localhost:${AUTH_PORT}/`, async () => {
    const res = await page.goto(`http://localhost:${AUTH_PORT}/`);
    expect(res.status() === 200, `status ${res.status()}`);
    await page.waitForFunction(() => typeof window.callApi === "function");
  });

  const email = `browser-${Date.now()}@example.com`;
  const password = "browser-password-1";
  let session;
  let jwt;
  let sub;

  await step("sign up (same-origin POST /api/auth/sign-up/email)", async () => {
    const r = await page.evaluate(([e, p]) => window.signUp(e, p, "Browser User"), [email, password]);
    expect(r.status === 200 && r.sessionToken, `status ${r.status} ${JSON.stringify(r.body)}`);
  });
  await step("sign in (same-origin POST /api/auth/sign-in/email)", async () => {
    const r = await page.evaluate(([e, p]) => window.signIn(e, p), [email, password]);
    expect(r.status === 200 && r.sessionToken, `status ${r.status} ${JSON.stringify(r.body)}`);
    session = r.sessionToken;
  });
  await step("get JWT with session cookie (GET /api/auth/token)", async () => {
    const r = await page.evaluate(() => window.getJwt());
    expect(r.status === 200 && r.token, `status ${r.status}`);
  });
  await step("get JWT with bearer session token (GET /api/auth/token)", async () => {
    const r = await page.evaluate((s) => window.getJwt(s), session);
    expect(r.status === 200 && r.token, `status ${r.status}`);
    jwt = r.token;
    sub = JSON.parse(Buffer.from(jwt.split(".")[1], "base64url")).sub;
    return `sub ${sub}`;
  });

  const api = (method, path, body) =>
    page.evaluate(([u, m, p, j, b]) => window.callApi(u, m, p, j, b), [API_URL, method, path, jwt, body]);
  const ok = (r, status) => {
    expect(!r.error, `fetch rejected: ${r.error}: ${r.message}`);
    expect(r.status === status, `expected ${status}, got ${r.status}: ${r.text}`);
  };

  let task;
  await step("list tasks cross-origin (GET /api/tasks -> 200 array)", async () => {
    const r = await api("GET", "/api/tasks");
    ok(r, 200);
    expect(Array.isArray(r.body), `not an array: ${r.text}`);
    return `${r.body.length} tasks, X-Total-Count=${r.totalCount}`;
  });
  await step("create task (POST /api/tasks -> 201)", async () => {
    const r = await api("POST", "/api/tasks", { title: "Buy milk from the browser" });
    ok(r, 201);
    task = r.body;
    for (const f of ["id", "user_id", "title", "description", "completed", "created_at", "updated_at"]) {
      expect(task && f in task, `missing field ${f}: ${r.text}`);
    }
    expect(task.title === "Buy milk from the browser" && task.completed === false, `unexpected task ${r.text}`);
    return `id ${task.id}, user_id ${task.user_id}, Location=${r.location}`;
  });
  await step("toggle task (PATCH /api/tasks/{id}/complete -> 200, completed flips)", async () => {
    const r = await api("PATCH", `/api/tasks/${task.id}/complete`);
    ok(r, 200);
    expect(r.body?.id === task.id && r.body.completed === !task.completed, `unexpected ${r.text}`);
  });
  await step("delete task (DELETE /api/tasks/{id} -> 200 {id,deleted:true})", async () => {
    const r = await api("DELETE", `/api/tasks/${task.id}`);
    ok(r, 200);
    expect(r.body?.id === task.id && r.body.deleted === true, `unexpected ${r.text}`);
  });
  await step("list again (GET /api/tasks -> 200 [])", async () => {
    const r = await api("GET", "/api/tasks");
    ok(r, 200);
    expect(Array.isArray(r.body) && r.body.length === 0, `expected empty array, got ${r.text}`);
  });

  const other = await context.newPage();
  await step(`open disallowed origin http://localhost:${OTHER_PORT}/`, async () => {
    const res = await other.goto(`http://localhost:${OTHER_PORT}/`);
    expect(res.status() === 200, `status ${res.status()}`);
    await other.waitForFunction(() => typeof window.callApi === "function");
  });
  await step("CORS blocks API call from disallowed origin (fetch rejects with TypeError)", async () => {
    const r = await other.evaluate(([u, j]) => window.callApi(u, "GET", "/api/tasks", j), [API_URL, jwt]);
    expect(r.error === "TypeError", `expected TypeError, got ${JSON.stringify(r)}`);
    return r.message;
  });
}

const overall = setTimeout(() => {
  console.log(`FAIL overall timeout ${TOTAL_TIMEOUT_MS} ms`);
  cleanup().finally(() => process.exit(1));
}, TOTAL_TIMEOUT_MS);

let failed = false;
try {
  await main();
  console.log("PASS browser-test: all steps");
} catch (e) {
  failed = true;
  if (consoleLines.length) console.log(`browser console:\n${consoleLines.join("\n")}`);
  console.log(`FAIL browser-test: ${e.message}`);
} finally {
  clearTimeout(overall);
  await cleanup();
}
process.exit(failed ? 1 : 0);
