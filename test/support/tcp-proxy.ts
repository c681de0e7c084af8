/**
 * Test support: a TCP proxy between two agents on loopback whose link a test cuts for real.
 * `cut(ms)` destroys every open connection (both ends see the stream drop) and refuses new ones
 * (accepted and closed at once) for `ms`, then forwards again. TLS passes through untouched.
 */
import * as net from 'node:net';

/** A running proxy to one upstream address. */
export interface TcpProxy {
  /** HOST:PORT to dial instead of the upstream. */
  readonly address: string;
  /** Sockets (both sides of each connection) dropped by cuts, and connections refused during them. */
  readonly stats: { dropped: number; refused: number };
  /** Drops every connection and refuses new ones for `ms`; resolves when the link is back. */
  cut(ms: number): Promise<void>;
  close(): Promise<void>;
}

/** Starts a proxy on 127.0.0.1 (a free port) to `upstream` (HOST:PORT). */
export async function startTcpProxy(upstream: string): Promise<TcpProxy> {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.slice(upstream.lastIndexOf(':') + 1))];
  const open = new Set<net.Socket>();
  const stats = { dropped: 0, refused: 0 };
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      stats.refused++;
      client.destroy();
      return;
    }
    const up = net.connect(port, host);
    for (const s of [client, up]) {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => { client.destroy(); up.destroy(); });
    }
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port: listenPort } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${listenPort}`,
    stats,
    cut: async (ms) => {
      down = true;
      stats.dropped += open.size;
      for (const s of [...open]) s.resetAndDestroy();
      await new Promise((r) => setTimeout(r, ms));
      down = false;
    },
    close: () => new Promise<void>((r) => {
      for (const s of [...open]) s.destroy();
      server.close(() => r());
    }),
  };
}
