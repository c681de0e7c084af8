/**
 * Test support: a TCP proxy in front of an agent whose link a test breaks for real. TLS passes
 * through untouched. Three controls:
 * - `cutAfter` (an option): the n-th connection is closed once it carried so many bytes from the
 *   client (a stream or a bulk socket dropped mid-round);
 * - `cut(ms)`: every open connection is reset (both ends see the stream drop) and new ones are
 *   refused (accepted and closed at once) for `ms`, then the proxy forwards again;
 * - `silence(ms)`: the link goes silent: no byte passes in either direction, nothing is closed or
 *   reset (as a partition or a dead path looks to TCP); bytes sent meanwhile are held and
 *   forwarded once it speaks again. New connections during the silence are accepted and held the
 *   same way, unless `existingOnly` (a dead path that new connections route around).
 */
import * as net from 'node:net';

/** Where a proxy listens and which connection it cuts on its own. */
export interface TcpProxyOptions {
  /** Address to listen on (default 127.0.0.1). */
  listenHost?: string;
  /** Port to listen on (default 0: any free one). */
  listenPort?: number;
  /** The `connection`-th connection (1-based) is closed once it carried more than `bytes` from the client. */
  cutAfter?: { connection: number; bytes: number };
}

/** What the proxy did so far. */
export interface TcpProxyStats {
  /** Connections accepted (refused ones included). */
  connections: number;
  /** Sockets (both sides of each connection) reset by cuts, and connections refused during them. */
  dropped: number;
  refused: number;
  /** True once the `cutAfter` connection was closed. */
  cutAfterDone: boolean;
  /** Silences begun, and the bytes held back by them (forwarded when the link spoke again). */
  silences: number;
  heldBytes: number;
}

/** A running proxy to one upstream address. */
export interface TcpProxy {
  /** HOST:PORT to dial instead of the upstream. */
  readonly address: string;
  readonly stats: TcpProxyStats;
  /** Resets every connection and refuses new ones for `ms`; resolves when the link is back. */
  cut(ms: number): Promise<void>;
  /**
   * Goes silent for `ms` (no byte passes either way, nothing closes), then forwards what was held;
   * resolves when the link speaks again. `existingOnly`: connections opened meanwhile pass.
   */
  silence(ms: number, opts?: { existingOnly?: boolean }): Promise<void>;
  /** Ends the current silence now (its promise resolves); nothing when the link speaks. */
  speak(): void;
  close(): Promise<void>;
}

/** One direction of a connection: bytes from `src` to `dst`, held while the link is silent. */
class Pipe {
  private held: Buffer[] = [];
  /** The source ended during the silence: the end is forwarded after the held bytes. */
  private endHeld = false;

  constructor(private readonly src: net.Socket, private readonly dst: net.Socket, private readonly silent: () => boolean, private readonly onBytes: (n: number) => boolean, private readonly onHeld: (n: number) => void) {
    src.on('data', (d: Buffer) => {
      if (!this.onBytes(d.length)) return;
      if (this.silent()) {
        this.held.push(d);
        this.onHeld(d.length);
        src.pause(); // TCP backpressure reaches the sender, as on a link that carries nothing
        return;
      }
      if (!dst.write(d)) src.pause();
    });
    dst.on('drain', () => { if (!this.silent()) src.resume(); });
    src.on('end', () => { if (!this.silent()) dst.end(); else this.endHeld = true; });
  }

  /** The link speaks again: forwards what was held, then reads on. */
  flush(): void {
    if (this.dst.destroyed) return;
    const held = this.held;
    this.held = [];
    let room = true;
    for (const d of held) room = this.dst.write(d);
    if (this.endHeld) this.dst.end();
    else if (room) this.src.resume();
  }
}

/** One proxied connection and whether the current silence holds it. */
interface Conn { client: net.Socket; up: net.Socket; pipes: Pipe[]; silent: boolean }

/** Starts a proxy to `upstream` (HOST:PORT). */
export async function startTcpProxy(upstream: string, opts: TcpProxyOptions = {}): Promise<TcpProxy> {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.slice(upstream.lastIndexOf(':') + 1))];
  const listenHost = opts.listenHost ?? '127.0.0.1';
  const conns = new Set<Conn>();
  const stats: TcpProxyStats = { connections: 0, dropped: 0, refused: 0, cutAfterDone: false, silences: 0, heldBytes: 0 };
  let down = false;
  /** The current silence: whether it holds connections opened during it. */
  let silence: { existingOnly: boolean; end: () => void } | undefined;
  const server = net.createServer((client) => {
    const nth = ++stats.connections;
    if (down) {
      stats.refused++;
      client.destroy();
      return;
    }
    const up = net.connect(port, host);
    const c: Conn = { client, up, pipes: [], silent: !!silence && !silence.existingOnly };
    conns.add(c);
    let carried = 0;
    const cut = opts.cutAfter?.connection === nth ? opts.cutAfter.bytes : Infinity;
    const fromClient = (n: number): boolean => {
      carried += n;
      if (carried <= cut) return true;
      stats.cutAfterDone = true;
      client.destroy();
      up.destroy();
      return false;
    };
    const held = (n: number): void => { stats.heldBytes += n; };
    c.pipes = [new Pipe(client, up, () => c.silent, fromClient, held), new Pipe(up, client, () => c.silent, () => true, held)];
    for (const [s, other] of [[client, up], [up, client]]) {
      s.on('error', () => { client.destroy(); up.destroy(); });
      // A graceful close ends the other side after what it still has to write; an error drops it.
      s.on('close', (hadError) => {
        if (hadError) other.destroy();
        else if (!other.destroyed) other.end();
        if (other.closed) conns.delete(c);
      });
    }
  });
  await new Promise<void>((r) => server.listen(opts.listenPort ?? 0, listenHost, r));
  const { port: listenPort } = server.address() as net.AddressInfo;
  return {
    address: `${listenHost}:${listenPort}`,
    stats,
    cut: async (ms) => {
      down = true;
      for (const c of [...conns]) {
        stats.dropped += 2;
        c.client.resetAndDestroy();
        c.up.resetAndDestroy();
      }
      await new Promise((r) => setTimeout(r, ms));
      down = false;
    },
    silence: async (ms, o = {}) => {
      stats.silences++;
      for (const c of conns) c.silent = true;
      await new Promise<void>((r) => {
        const timer = setTimeout(r, ms);
        silence = { existingOnly: !!o.existingOnly, end: () => { clearTimeout(timer); r(); } };
      });
      silence = undefined;
      for (const c of conns) {
        if (!c.silent) continue;
        c.silent = false;
        for (const p of c.pipes) p.flush();
      }
    },
    speak: () => silence?.end(),
    close: () => new Promise<void>((r) => {
      for (const c of [...conns]) { c.client.destroy(); c.up.destroy(); }
      server.close(() => r());
    }),
  };
}
