// PostgreSQL for the bench: a private throw-away cluster (default) or the
// shared server on 127.0.0.1:5432 (--pg shared).
//
// The private cluster runs as the postgres user from a data directory under
// /tmp on a free port, with pg_stat_statements preloaded, so every process of
// it is ours to measure and nothing of the shared server is disturbed.

import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';

function pgBinDir(version) {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => b - a) : [];
  const v = version || versions[0];
  if (!v) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql');
  return path.join(root, v, 'bin');
}

function asPostgres(cmd, args, opts = {}) {
  const isRoot = process.getuid?.() === 0;
  const [c, a] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const r = spawnSync(c, a, { encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** psql -At against `url`; returns stdout. */
export function psql(url, sql, { fieldSep = '\t' } = {}) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-X', '-q', '-At', '-F', fieldSep, '-c', sql], {
    encoding: 'utf8',
    env: { ...process.env, PGSSLMODE: 'disable' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export async function startPrivateCluster({ port, settings = {} }) {
  const bin = pgBinDir();
  const dataDir = fs.mkdtempSync('/tmp/todo-bench-pg-');
  const isRoot = process.getuid?.() === 0;
  if (isRoot) execFileSync('chown', ['postgres:postgres', dataDir]);
  asPostgres(path.join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-instructions'], {});
  const conf = {
    listen_addresses: "'127.0.0.1'",
    port,
    unix_socket_directories: `'${dataDir}'`,
    max_connections: 200,
    shared_preload_libraries: "'pg_stat_statements'",
    'pg_stat_statements.track': "'top'",
    'pg_stat_statements.max': 1000,
    logging_collector: 'off',
    ...settings,
  };
  fs.appendFileSync(
    path.join(dataDir, 'postgresql.conf'),
    '\n# todo-api bench\n' + Object.entries(conf).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n',
  );
  const log = path.join(dataDir, 'server.log');
  asPostgres(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-l', log, '-w', '-t', '60', 'start'], {});
  const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const version = psql(admin, 'SHOW server_version').trim();
  return {
    kind: 'private',
    host: '127.0.0.1',
    port,
    pid,
    dataDir,
    log,
    version,
    url: (db) => `postgres://postgres@127.0.0.1:${port}/${db}`,
    async stop({ keep = false } = {}) {
      try {
        asPostgres(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', 'stop'], {});
      } catch (e) {
        console.error(`warning: could not stop the private cluster: ${e.message}`);
      }
      if (!keep) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The shared server: CPU figures then include whatever else it is doing. */
export async function useSharedServer({ host = '127.0.0.1', port = 5432 }) {
  const admin = `postgres://postgres@${host}:${port}/postgres`;
  const version = psql(admin, 'SHOW server_version').trim();
  const dataDir = psql(admin, 'SHOW data_directory').trim();
  const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  return {
    kind: 'shared',
    host,
    port,
    pid,
    dataDir,
    version,
    url: (db) => `postgres://postgres@${host}:${port}/${db}`,
    async stop() {},
  };
}

export function createDatabase(pg, name) {
  const admin = pg.url('postgres');
  psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  psql(admin, `CREATE DATABASE ${name}`);
}

export function dropDatabase(pg, name) {
  try {
    psql(pg.url('postgres'), `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } catch (e) {
    console.error(`warning: could not drop ${name}: ${e.message.split('\n')[0]}`);
  }
}
