// A TCP proxy on 127.0.0.1 that holds every chunk for `ms` milliseconds in
// each direction (order kept): PostgreSQL "a network away", so that each
// round trip a request makes costs it 2 x ms of latency, as on Neon.

import net from 'node:net';

export async function startDelayProxy(targetHost, targetPort, ms) {
  const sockets = new Set();
  const delayed = (from, to) => {
    from.on('data', (chunk) => setTimeout(() => { if (!to.destroyed) to.write(chunk); }, ms));
  };
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(targetPort, targetHost);
    upstream.setNoDelay(true);
    sockets.add(client); sockets.add(upstream);
    delayed(client, upstream);
    delayed(upstream, client);
    const end = () => setTimeout(() => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); }, ms);
    client.on('close', end); upstream.on('close', end);
    client.on('error', end); upstream.on('error', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
