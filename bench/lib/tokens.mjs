// Bearer tokens for the bench users: HS256 with the server's shared secret,
// and EdDSA (Ed25519) with a key published by a tiny JWKS server on loopback.

import crypto from 'node:crypto';
import http from 'node:http';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const json64 = (obj) => b64url(JSON.stringify(obj));

export function mintHs256(secret, claims) {
  const input = `${json64({ alg: 'HS256', typ: 'JWT' })}.${json64(claims)}`;
  const sig = crypto.createHmac('sha256', Buffer.from(secret, 'utf8')).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

export function ed25519Keys(kid = 'k1') {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return {
    kid,
    privateKey,
    jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x: jwk.x, kid, alg: 'EdDSA', use: 'sig' }] },
  };
}

export function mintEdDsa(keys, claims) {
  const input = `${json64({ alg: 'EdDSA', kid: keys.kid, typ: 'JWT' })}.${json64(claims)}`;
  const sig = crypto.sign(null, Buffer.from(input), keys.privateKey);
  return `${input}.${b64url(sig)}`;
}

/** Serves the JWKS at http://127.0.0.1:PORT/jwks; counts fetches. */
export async function startJwksServer(jwks) {
  const state = { fetches: 0 };
  const body = JSON.stringify(jwks);
  const server = http.createServer((req, res) => {
    if (req.url === '/jwks') {
      state.fetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${server.address().port}/jwks`;
  state.close = () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); });
  return state;
}
