// Headless Chromium test of the real frontend flow: a page served by Better Auth signs a user
// up/in, gets a JWT, and calls the Rust API cross-origin (CORS). A second origin must be blocked.
// Env: API_URL (the running Rust API, default http://127.0.0.1:8123), AUTH_PORT (3000),
//      OTHER_PORT (3001), CHROMIUM_PATH (/usr/bin/chromium). Exits non-zero on any failure.
import { expect, launchChromium, run, startAuthServer, step } from "./browser-harness.mjs";

const API_URL = (process.env.API_URL || "http://127.0.0.1:8123").replace(/\/$/, "");
const AUTH_PORT = process.env.AUTH_PORT || "3000";
const OTHER_PORT = process.env.OTHER_PORT || "3001";

async function main() {
  await step("start Better Auth server", async () => startAuthServer(AUTH_PORT, OTHER_PORT));
  let context;
  await step("launch Chromium", async () => {
    context = await launchChromium();
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

await run("browser-test", main, 120000);
