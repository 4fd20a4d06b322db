// The server binary the bench scripts run, and a loopback port for it.

import { spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `bin` if given, else the release build under $CARGO_TARGET_DIR or ./target. */
export function serverBinary(bin) {
  if (bin) return path.resolve(bin);
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target');
  return path.join(target, 'release', 'todo-api');
}

/** `cargo build --release` of the server (a no-op when up to date); false when it failed. */
export function buildRelease() {
  const r = spawnSync('cargo', ['build', '--release', '--bin', 'todo-api'], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
  return r.status === 0;
}

/** A port free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
