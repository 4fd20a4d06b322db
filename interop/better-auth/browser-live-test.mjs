// Headless Chromium, live: two pages of one user and a page of another, each reading the live
// stream (GET /api/tasks/events) with fetch through HAProxy, each stream on its own instance of
// the Rust API. A create, a rename, a toggle and a delete in one page appear in the other page
// of the user within 1 s; the other user's page sees none of them; a stale edit from the second
// page gets 412 with the task as it is, and the page reconciles from the changes feed.
// Env: API_URL (HAProxy), STATS_URL (HAProxy's stats page, for which instance holds which
//      stream), AUTH_PORT (3002), CHROMIUM_PATH (/usr/bin/chromium). Exits non-zero on failure.
import { expect, launchChromium, run, startAuthServer, step } from "./browser-harness.mjs";

const API_URL = (process.env.API_URL || "http://127.0.0.1:8080").replace(/\/$/, "");
const STATS_URL = process.env.STATS_URL || "http://127.0.0.1:8404/stats";
const AUTH_PORT = process.env.AUTH_PORT || "3002";
const ORIGIN = `http://localhost:${AUTH_PORT}`;
// How soon a change made in one page must show in the other.
const LIVE_MS = 1000;

// Open connections per instance of the API, from HAProxy's CSV statistics.
async function openPerInstance() {
  const csv = await (await fetch(`${STATS_URL};csv`)).text();
  const [header, ...rows] = csv.trim().split("\n");
  const columns = header.replace(/^# /, "").split(",");
  const [px, sv, scur] = ["pxname", "svname", "scur"].map((c) => columns.indexOf(c));
  return rows
    .map((r) => r.split(","))
    .filter((r) => r[px] === "todo_api_streams" && !["FRONTEND", "BACKEND"].includes(r[sv]))
    .map((r) => [r[sv], Number(r[scur])]);
}

async function main() {
  await step("start Better Auth server", async () => startAuthServer(AUTH_PORT));
  const context = await launchChromium();
  const [mine, second, theirs] = [await context.newPage(), await context.newPage(), await context.newPage()];
  for (const page of [mine, second, theirs]) {
    await page.goto(`${ORIGIN}/`);
    await page.waitForFunction(() => typeof window.openStream === "function");
  }

  // Two users, each signed up and holding a JWT (bearer session: one browser, two accounts).
  const jwtOf = async (who) => {
    const email = `${who}-${Date.now()}@example.com`;
    const up = await mine.evaluate(([e]) => window.signUp(e, "live-password-1", "Live"), [email]);
    expect(up.status === 200 && up.sessionToken, `sign-up ${up.status}`);
    const token = await mine.evaluate((s) => window.getJwt(s), up.sessionToken);
    expect(token.status === 200 && token.token, `token ${token.status}`);
    return token.token;
  };
  let alice, bob;
  await step("sign up two users and get their JWTs", async () => {
    [alice, bob] = [await jwtOf("alice"), await jwtOf("bob")];
  });

  await step("three pages open the live stream through HAProxy, each on its own instance", async () => {
    for (const [page, jwt] of [[mine, alice], [second, alice], [theirs, bob]]) {
      const r = await page.evaluate(([u, j]) => window.openStream(u, j), [API_URL, jwt]);
      expect(r.status === 200, `stream: ${r.status} ${r.text}`);
      await page.waitForFunction(() => window.live.ready !== null);
    }
    const open = await openPerInstance();
    const holding = open.filter(([, n]) => n === 1).map(([name]) => name);
    expect(holding.length === 3, `one stream per instance expected, HAProxy says ${JSON.stringify(open)}`);
    return holding.join(", ");
  });

  const api = (page, jwt, method, path, body, headers) =>
    page.evaluate(([u, m, p, j, b, h]) => window.callApi(u, m, p, j, b, h), [API_URL, method, path, jwt, body, headers]);
  // Waits until `page` has received the change with this version; its latency after the write.
  const seen = async (page, version, written) => {
    await page.waitForFunction((v) => window.live.events.some((e) => e.change.version === v), version, {
      timeout: LIVE_MS,
      polling: 10,
    });
    return Math.round(performance.now() - written);
  };

  let task;
  const latencies = [];
  await step("create in one page: the other page of the user has it within 1 s", async () => {
    const written = performance.now();
    const r = await api(mine, alice, "POST", "/api/tasks", { title: "live milk" });
    expect(r.status === 201, `create ${r.status} ${r.text}`);
    task = r.body;
    latencies.push(await seen(second, task.version, written));
    const copy = await second.evaluate((id) => window.live.tasks[id], task.id);
    expect(JSON.stringify(copy) === JSON.stringify(task), `second page has ${JSON.stringify(copy)}`);
    return `${latencies.at(-1)} ms`;
  });
  await step("rename in one page: the other page has the new title within 1 s", async () => {
    const written = performance.now();
    const r = await api(mine, alice, "PUT", `/api/tasks/${task.id}`, { title: "oat milk" });
    expect(r.status === 200, `rename ${r.status} ${r.text}`);
    latencies.push(await seen(second, r.body.version, written));
    const copy = await second.evaluate((id) => window.live.tasks[id], task.id);
    expect(copy.title === "oat milk", `second page has ${JSON.stringify(copy)}`);
    return `${latencies.at(-1)} ms`;
  });
  await step("toggle in one page: the other page has it completed within 1 s", async () => {
    const written = performance.now();
    const r = await api(mine, alice, "PATCH", `/api/tasks/${task.id}/complete`);
    expect(r.status === 200 && r.body.completed === true, `toggle ${r.status} ${r.text}`);
    latencies.push(await seen(second, r.body.version, written));
    const copy = await second.evaluate((id) => window.live.tasks[id], task.id);
    expect(copy.completed === true, `second page has ${JSON.stringify(copy)}`);
    return `${latencies.at(-1)} ms`;
  });
  await step("delete in one page: the other page drops it within 1 s", async () => {
    // The delete's version: the next of the user's, after the toggle's.
    const deleted = (await second.evaluate(() => window.live.events.at(-1).change.version)) + 1;
    const written = performance.now();
    const r = await api(mine, alice, "DELETE", `/api/tasks/${task.id}`);
    expect(r.status === 200, `delete ${r.status} ${r.text}`);
    latencies.push(await seen(second, deleted, written));
    const last = await second.evaluate(() => window.live.events.at(-1));
    expect(last.event === "delete" && last.change.id === task.id, `last event ${JSON.stringify(last)}`);
    expect(!(await second.evaluate((id) => id in window.live.tasks, task.id)), "still listed");
    return `${latencies.at(-1)} ms`;
  });

  await step("a stale edit from the second page gets 412, and the page reconciles from the feed", async () => {
    const created = await api(mine, alice, "POST", "/api/tasks", { title: "call mum" });
    await seen(second, created.body.version, performance.now() - 0);
    // The second page's user starts editing the task as that page shows it...
    const shown = await second.evaluate((id) => window.live.tasks[id], created.body.id);
    const cursor = await second.evaluate(() => window.live.events.at(-1).id);
    // ...while the first page renames it.
    const renamed = await api(mine, alice, "PUT", `/api/tasks/${shown.id}`, { title: "call mum tonight" });
    expect(renamed.status === 200, `rename ${renamed.status}`);
    const stale = await api(second, alice, "PUT", `/api/tasks/${shown.id}`, { title: "call dad" }, {
      "If-Match": `"${shown.version}"`,
    });
    expect(stale.status === 412, `stale edit: ${stale.status} ${stale.text}`);
    expect(stale.body.code === "precondition_failed", stale.text);
    expect(stale.body.task.title === "call mum tonight", `412 carries ${JSON.stringify(stale.body.task)}`);
    expect(stale.etag === `"${renamed.body.version}"`, `412 ETag ${stale.etag}`);
    // Reconcile: what changed since the page's cursor, applied to its copy.
    const feed = await api(second, alice, "GET", `/api/tasks/changes?since=${cursor}`);
    expect(feed.status === 200, `feed ${feed.status} ${feed.text}`);
    await second.evaluate((changes) => changes.forEach(window.apply), feed.body.changes);
    const copy = await second.evaluate((id) => window.live.tasks[id], shown.id);
    expect(JSON.stringify(copy) === JSON.stringify(renamed.body), `reconciled to ${JSON.stringify(copy)}`);
    // Nothing was overwritten.
    const now = await api(second, alice, "GET", `/api/tasks/${shown.id}`);
    expect(now.body.title === "call mum tonight", `stored ${now.text}`);
  });

  await step("the other user's page saw none of it, and sees its own change", async () => {
    const before = await theirs.evaluate(() => window.live.events.length);
    expect(before === 0, `bob's page received ${before} of alice's events`);
    const own = await api(theirs, bob, "POST", "/api/tasks", { title: "bob's" });
    expect(own.status === 201, `create ${own.status}`);
    await seen(theirs, own.body.version, performance.now());
    const events = await theirs.evaluate(() => window.live.events.map((e) => e.change.task?.id));
    expect(events.length === 1 && events[0] === own.body.id, `bob's page: ${JSON.stringify(events)}`);
  });
  console.log(`measured: write answered -> event in the other page: ${latencies.join(", ")} ms`);
}

await run("browser-live-test", main, 120000);
