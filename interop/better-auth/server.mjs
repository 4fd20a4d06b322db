// Real Better Auth server (jwt + bearer plugins, in-memory DB) for interop tests.
// Env: PORT (3000; 0 = pick a free one), HOST (127.0.0.1), BASE_URL (http://localhost:PORT),
//      BETTER_AUTH_SECRET (random), JWT_ALG (EdDSA|ES256|ES512|RS256|PS256),
//      ENABLE_TEST_ROUTES=1 (adds POST /test/rotate-keys), OTHER_PORT (second origin serving page.html).
// Prints exactly one "READY <base url>" line on stdout once everything listens.
import http from "node:http";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { bearer, jwt } from "better-auth/plugins";
import { createJwk } from "better-auth/plugins/jwt";

const ALGS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"];
const alg = process.env.JWT_ALG || "EdDSA";
if (!ALGS.includes(alg)) {
  console.error(`JWT_ALG must be one of ${ALGS.join(", ")}, got ${alg}`);
  process.exit(2);
}
const host = process.env.HOST || "127.0.0.1";
const page = readFileSync(new URL("./page.html", import.meta.url));

// Same options object is reused by the rotation route so new keys match the plugin's config.
const jwtOptions = { jwks: { keyPairConfig: { alg } } };

let auth; // created after listen(), because baseURL may depend on the OS-chosen port
let authHandler;

function sendPage(res) {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(page);
}

function sendJson(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

// Rotation = what jwks.rotationInterval does, but on demand: mint a new key with the
// plugin's own createJwk(), then expire the older keys so signing picks the new one.
// Expired keys stay published at /jwks for the grace period (30 days), so tokens issued
// before the rotation still verify.
async function rotateKeys() {
  const ctx = await auth.$context;
  const before = await ctx.adapter.findMany({ model: "jwks" });
  const key = await createJwk({ context: ctx }, jwtOptions);
  const now = new Date();
  for (const old of before) {
    await ctx.adapter.update({ model: "jwks", where: [{ field: "id", value: old.id }], update: { expiresAt: now } });
  }
  return key.id;
}

async function mainHandler(req, res) {
  const path = new URL(req.url, "http://x").pathname;
  if (path === "/api/auth" || path.startsWith("/api/auth/")) return authHandler(req, res);
  if (req.method === "GET" && (path === "/" || path === "/page.html")) return sendPage(res);
  if (path === "/favicon.ico") return res.writeHead(204).end(); // keeps the browser console clean
  if (process.env.ENABLE_TEST_ROUTES === "1" && req.method === "POST" && path === "/test/rotate-keys") {
    return sendJson(res, 200, { kid: await rotateKeys() });
  }
  sendJson(res, 404, { error: "not found" });
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server.address().port));
  });
}

const onError = (res, err) => {
  console.error(err);
  if (!res.headersSent) sendJson(res, 500, { error: String(err?.message || err) });
  else res.destroy();
};

const mainServer = http.createServer((req, res) => mainHandler(req, res).catch((e) => onError(res, e)));
const servers = [mainServer];

try {
  const port = await listen(mainServer, Number(process.env.PORT ?? 3000));
  // Only the origin: it becomes iss/aud, and a path (even a trailing "/") would move the routes.
  const baseURL = new URL(process.env.BASE_URL || `http://localhost:${port}`).origin;
  auth = betterAuth({
    baseURL,
    secret: process.env.BETTER_AUTH_SECRET || randomBytes(32).toString("hex"),
    // In-memory DB (no native modules); the adapter needs every table pre-created.
    database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
    emailAndPassword: { enabled: true, requireEmailVerification: false },
    plugins: [jwt(jwtOptions), bearer()],
    rateLimit: { enabled: false }, // tests sign in many times; keep them deterministic
    telemetry: { enabled: false }, // never phone home; only loopback is allowed
  });
  authHandler = toNodeHandler(auth);

  if (process.env.OTHER_PORT) {
    // A second origin that only serves the page: used to prove the API's CORS rejects it.
    const other = http.createServer((req, res) => (req.method === "GET" ? sendPage(res) : sendJson(res, 404, { error: "not found" })));
    servers.push(other);
    await listen(other, Number(process.env.OTHER_PORT));
  }
  console.log(`READY ${baseURL}`);
} catch (err) {
  console.error("startup failed:", err);
  process.exit(1);
}

function shutdown() {
  for (const s of servers) {
    s.close();
    s.closeAllConnections();
  }
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
