/** A TCP proxy for tests that cut one connection of a migration partway (a stream or a bulk socket dropped mid-round). */
import * as net from 'node:net';

/** A running proxy: its address, whether it cut, how many connections it took, and a stop. */
export interface CuttingProxy {
  address: string;
  cut: () => boolean;
  connections: () => number;
  close: () => void;
}

/**
 * A TCP proxy to `target` (HOST:PORT) listening on `listenHost`:`listenPort` (0 = any free): the
 * `cutConnection`-th connection (1-based) is closed once it carried `cutAfterBytes` from the
 * client (0 = none is).
 */
export async function cuttingProxy(target: string, cutConnection: number, cutAfterBytes: number, listenHost = '127.0.0.1', listenPort = 0): Promise<CuttingProxy> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  let n = 0;
  let didCut = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const nth = ++n;
    const outbound = net.connect(port, host);
    sockets.add(inbound).add(outbound);
    let carried = 0;
    inbound.on('data', (d) => {
      carried += d.length;
      if (nth === cutConnection && carried > cutAfterBytes) {
        didCut = true;
        inbound.destroy();
        outbound.destroy();
        return;
      }
      outbound.write(d);
    });
    outbound.on('data', (d) => inbound.write(d));
    for (const s of [inbound, outbound]) {
      s.on('error', () => { inbound.destroy(); outbound.destroy(); });
      s.on('close', () => { inbound.destroy(); outbound.destroy(); sockets.delete(s); });
    }
  });
  await new Promise<void>((r) => server.listen(listenPort, listenHost, () => r()));
  const addr = server.address() as net.AddressInfo;
  return { address: `${listenHost}:${addr.port}`, cut: () => didCut, connections: () => n, close: () => { server.close(); for (const s of sockets) s.destroy(); } };
}
