// Smoke test of server.mjs, driven over HTTP exactly like the Rust interop tests will:
// sign up two users, get their JWTs, check them against the JWKS, rotate keys, check the kid.
// Env: JWT_ALG (one alg; default: run all five). Exits non-zero on any failure.
import { spawn } from "node:child_process";
import { createPublicKey, verify, constants } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";

const ALGS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"];
const TIMEOUT_MS = 15000;

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

// Start server.mjs on an OS-chosen port; resolve with the child and its READY base URL.
async function startServer(env) {
  const child = spawn(process.execPath, [new URL("./server.mjs", import.meta.url).pathname], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", ENABLE_TEST_ROUTES: "1", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const ready = new Promise((resolve, reject) => {
    lines.on("line", (l) => l.startsWith("READY ") && resolve(l.slice(6).trim()));
    child.once("exit", (code) => reject(new Error(`server exited early (code ${code})`)));
  });
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("no READY line")), TIMEOUT_MS).unref());
  try {
    return { child, baseURL: await Promise.race([ready, timeout]) };
  } catch (e) {
    child.kill("SIGTERM");
    throw e;
  }
}

const b64json = (s) => JSON.parse(Buffer.from(s, "base64url").toString());

// Independent JWS check with node:crypto (not Better Auth's own code).
function verifyJws(token, jwks) {
  const [h, p, s] = token.split(".");
  const header = b64json(h);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  check(jwk, `kid ${header.kid} is in the JWKS`);
  const key = createPublicKey({ key: jwk, format: "jwk" });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, "base64url");
  const ok = {
    EdDSA: () => verify(null, data, key, sig),
    ES256: () => verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, sig),
    ES512: () => verify("sha512", data, { key, dsaEncoding: "ieee-p1363" }, sig),
    RS256: () => verify("sha256", data, key, sig),
    PS256: () => verify("sha256", data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig),
  }[header.alg]();
  check(ok, `signature of ${header.alg} token verifies with JWKS key ${header.kid}`);
  return { header, payload: b64json(p) };
}

async function runFor(alg) {
  const { child, baseURL } = await startServer({ JWT_ALG: alg });
  try {
    const port = new URL(baseURL).port;
    const url = (p) => `http://127.0.0.1:${port}${p}`;
    const req = async (method, path, { body, bearer } = {}) => {
      const headers = { "content-type": "application/json" };
      // Node's fetch sends Sec-Fetch-Mode, which makes Better Auth demand a trusted Origin.
      if (method === "POST") headers.origin = new URL(baseURL).origin;
      if (bearer) headers.authorization = `Bearer ${bearer}`;
      const res = await fetch(url(path), {
        method, headers, body: body && JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      return { res, json: await res.json().catch(() => null) };
    };

    const users = [];
    for (const name of ["alice", "bob"]) {
      const email = `${name}-${Date.now()}@example.com`;
      const { res, json } = await req("POST", "/api/auth/sign-up/email", { body: { email, password: "password-123", name } });
      check(res.status === 200, `sign-up ${name} -> 200 (got ${res.status} ${JSON.stringify(json)})`);
      const session = res.headers.get("set-auth-token");
      check(session, "sign-up returns set-auth-token header");
      users.push({ name, email, id: json.user.id, session });
    }
    // Sign-in too, to prove the password flow works (its token replaces the sign-up one).
    const signIn = await req("POST", "/api/auth/sign-in/email", { body: { email: users[0].email, password: "password-123" } });
    check(signIn.res.status === 200, `sign-in -> 200 (got ${signIn.res.status})`);
    users[0].session = signIn.res.headers.get("set-auth-token");

    const getJwt = async (u) => {
      const { res, json } = await req("GET", "/api/auth/token", { bearer: u.session });
      check(res.status === 200 && typeof json?.token === "string", `GET /token for ${u.name} -> 200 {token}`);
      return json.token;
    };
    const getJwks = async () => (await req("GET", "/api/auth/jwks")).json;

    let jwks = await getJwks();
    const tokens = [];
    for (const u of users) {
      const token = await getJwt(u);
      const { header, payload } = verifyJws(token, jwks);
      check(header.alg === alg, `header alg ${header.alg} === ${alg}`);
      check(payload.sub === u.id && payload.email === u.email, "sub/email match the user");
      check(payload.iss === baseURL && payload.aud === baseURL, "iss and aud are the base URL");
      check(payload.exp - payload.iat === 900, "lifetime is 15 minutes");
      tokens.push(token);
    }
    const oldKid = b64json(tokens[0].split(".")[0]).kid;
    check(jwks.keys.length === 1, "one key before rotation");

    const rot = await req("POST", "/test/rotate-keys");
    check(rot.res.status === 200 && rot.json?.kid && rot.json.kid !== oldKid, "rotate-keys returns a new kid");
    const newToken = await getJwt(users[0]);
    jwks = await getJwks();
    const { header } = verifyJws(newToken, jwks);
    check(header.kid === rot.json.kid, `new token kid ${header.kid} === rotated kid ${rot.json.kid}`);
    check(jwks.keys.some((k) => k.kid === oldKid), "old key still published after rotation");
    verifyJws(tokens[1], jwks); // pre-rotation tokens keep verifying

    console.log(`PASS ${alg}: kid ${oldKid} -> ${header.kid}, jwk ${JSON.stringify(Object.keys(jwks.keys[0]))}`);
  } finally {
    child.kill("SIGTERM");
    await once(child, "exit");
  }
}

const algs = process.env.JWT_ALG ? [process.env.JWT_ALG] : ALGS;
let failed = false;
for (const alg of algs) {
  try {
    await runFor(alg);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${alg}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
