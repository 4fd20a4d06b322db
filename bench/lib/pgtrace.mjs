// A PostgreSQL wire-protocol tap: a TCP proxy on 127.0.0.1 that forwards
// everything unchanged and records each frontend (client -> server) message.
// The bench points a server instance with a pool of one connection at it and
// sends one request of each kind, so what a request costs the database can be
// read off exactly: every statement (Parse/Bind/Execute, simple Query) and
// every Sync, i.e. every round trip, including ones that carry no SQL at all
// (sqlx's ping before handing out a pooled connection is a lone Sync).

import net from 'node:net';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

function cstr(buf, off) {
  const end = buf.indexOf(0, off);
  return [buf.toString('utf8', off, end), end + 1];
}

/** Decodes one frontend message into a small record. */
function decode(type, body) {
  switch (type) {
    case 'P': {
      const [name, o1] = cstr(body, 0);
      const [sql, o2] = cstr(body, o1);
      const nparams = body.readInt16BE(o2);
      const oids = [];
      for (let i = 0; i < nparams; i++) oids.push(body.readInt32BE(o2 + 2 + 4 * i));
      return { msg: 'Parse', name, sql, paramTypeOids: oids };
    }
    case 'B': {
      const [portal, o1] = cstr(body, 0);
      const [name] = cstr(body, o1);
      return { msg: 'Bind', portal, name };
    }
    case 'D': return { msg: 'Describe', what: String.fromCharCode(body[0]), name: cstr(body, 1)[0] };
    case 'E': return { msg: 'Execute', portal: cstr(body, 0)[0] };
    case 'S': return { msg: 'Sync' };
    case 'H': return { msg: 'Flush' };
    case 'Q': return { msg: 'Query', sql: cstr(body, 0)[0] };
    case 'C': return { msg: 'Close', what: String.fromCharCode(body[0]), name: cstr(body, 1)[0] };
    case 'X': return { msg: 'Terminate' };
    case 'p': return { msg: 'Password' };
    default: return { msg: `'${type}'` };
  }
}

/**
 * Starts the proxy. `events` receives {t, conn, msg, ...} records in order.
 * Returns {port, events, close()}.
 */
export async function startPgTap(targetHost, targetPort) {
  const events = [];
  let nextConn = 0;
  const sockets = new Set();
  const server = net.createServer((client) => {
    const conn = ++nextConn;
    const upstream = net.connect(targetPort, targetHost);
    sockets.add(client); sockets.add(upstream);
    let buf = Buffer.alloc(0);
    let started = false; // past the untyped start-up message(s)
    client.on('data', (chunk) => {
      upstream.write(chunk);
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (!started) {
          if (buf.length < 8) break;
          const len = buf.readInt32BE(0);
          if (buf.length < len) break;
          const code = buf.readInt32BE(4);
          if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
            events.push({ t: Date.now(), conn, msg: code === SSL_REQUEST ? 'SSLRequest' : 'GSSENCRequest' });
          } else if (code === CANCEL_REQUEST) {
            events.push({ t: Date.now(), conn, msg: 'CancelRequest' });
          } else {
            events.push({ t: Date.now(), conn, msg: 'Startup' });
            started = true;
          }
          buf = buf.subarray(len);
          continue;
        }
        if (buf.length < 5) break;
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) break;
        const type = String.fromCharCode(buf[0]);
        events.push({ t: Date.now(), conn, ...decode(type, buf.subarray(5, 1 + len)) });
        buf = buf.subarray(1 + len);
      }
    });
    upstream.on('data', (chunk) => {
      // Only where answers fall between the client's messages matters (the round trips).
      if (events.length && events[events.length - 1].msg !== 'Answer') events.push({ t: Date.now(), conn, msg: 'Answer' });
      client.write(chunk);
    });
    const end = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('close', end); upstream.on('close', end);
    client.on('error', end); upstream.on('error', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    events,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** One line per message, for the report. */
export function describeEvents(list) {
  return list.filter((e) => e.msg !== 'Answer').map((e) => {
    switch (e.msg) {
      case 'Parse': return `Parse   ${e.name ? `[${e.name}] ` : ''}${e.sql}`;
      case 'Query': return `Query   ${e.sql}`;
      case 'Bind': return `Bind    ${e.name ? `[${e.name}]` : '(unnamed)'}`;
      case 'Describe': return `Describe ${e.what} ${e.name || '(unnamed)'}`;
      case 'Execute': return 'Execute';
      case 'Close': return `Close ${e.what === 'P' ? 'portal' : 'statement'} ${e.name || '(unnamed)'}`;
      default: return e.msg;
    }
  });
}

/**
 * Round trips: the client's bursts of messages that ask for an answer (a
 * Sync or a simple Query), each burst ended by the server's answer. A
 * pipelined transaction (BEGIN, statements, COMMIT sent together) is one.
 */
export function summarise(list) {
  const sent = list.filter((e) => e.msg !== 'Answer');
  const count = (m) => list.filter((e) => e.msg === m).length;
  const statements = list.filter((e) => e.msg === 'Execute' || e.msg === 'Query').length;
  let roundTrips = 0;
  let asking = false;
  for (const e of list) {
    if (e.msg === 'Answer') { if (asking) roundTrips++; asking = false; }
    else if (e.msg === 'Sync' || e.msg === 'Query') asking = true;
  }
  if (asking) roundTrips++;
  return {
    round_trips: roundTrips,
    messages_asking_for_an_answer: count('Sync') + count('Query'),
    statements_executed: statements,
    parses: count('Parse'),
    lone_syncs: sent.filter((e, i) => e.msg === 'Sync' && (i === 0 || sent[i - 1].msg === 'Sync')).length,
    sql: [...new Set(list.filter((e) => e.msg === 'Parse' || e.msg === 'Query').map((e) => e.sql))],
  };
}
