// What the browser tests share: the Better Auth server (server.mjs) serving page.html, headless
// Chromium (Debian's, driven by playwright-core), named steps with a timeout, and the run that
// prints PASS/FAIL lines, cleans up and exits non-zero on any failure.
// Env: CHROMIUM_PATH (/usr/bin/chromium).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const STEP_TIMEOUT_MS = 15000;

let server;
let context;
let userDataDir;
const consoleLines = [];

// Starts server.mjs on `port` (and page.html on `otherPort` too, if given); resolves once it
// prints READY (or rejects on exit/timeout).
export function startAuthServer(port, otherPort) {
  const env = { ...process.env, PORT: port, HOST: "127.0.0.1", BASE_URL: `http://localhost:${port}` };
  if (otherPort) env.OTHER_PORT = otherPort;
  else delete env.OTHER_PORT;
  server = spawn(process.execPath, [new URL("./server.mjs", import.meta.url).pathname], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).on("line", (l) => l.startsWith("READY ") && resolve(l.slice(6)));
    server.once("exit", (code) => reject(new Error(`server.mjs exited early (code ${code})`)));
    setTimeout(() => reject(new Error("server.mjs printed no READY line")), STEP_TIMEOUT_MS).unref();
  });
}

// Headless Chromium with a throw-away profile; its pages' console lines are kept for a failure.
export async function launchChromium() {
  userDataDir = mkdtempSync(join(tmpdir(), "interop-chromium-"));
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
  return context;
}

export function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

// Runs one named step; fn returns a detail string on success or throws.
export async function step(name, fn) {
  try {
    const detail = await withTimeout(fn(), name);
    console.log(`PASS ${name}${detail ? ` (${detail})` : ""}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    throw e;
  }
}

export function expect(cond, msg) {
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

// Runs `main` within `totalMs`, then cleans up and exits (1 on any failure).
export async function run(name, main, totalMs) {
  const overall = setTimeout(() => {
    console.log(`FAIL overall timeout ${totalMs} ms`);
    cleanup().finally(() => process.exit(1));
  }, totalMs);
  let failed = false;
  try {
    await main();
    console.log(`PASS ${name}: all steps`);
  } catch (e) {
    failed = true;
    if (consoleLines.length) console.log(`browser console:\n${consoleLines.join("\n")}`);
    console.log(`FAIL ${name}: ${e.message}`);
  } finally {
    clearTimeout(overall);
    await cleanup();
  }
  process.exit(failed ? 1 : 0);
}
