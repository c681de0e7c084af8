/**
 * A byte pipe between two unix sockets: listens on `listenPath` and, for every connection,
 * connects to `targetPath` and copies both ways. It stands in for the node agents' gRPC stream
 * bridge in tests and the bench. When either side fails, both sides of that connection close,
 * so QEMU sees the failure as a broken migration stream.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

/** A running bridge between two unix sockets (a Node pipe in the middle, standing in for the agents). */
export interface UnixBridge {
  /** Path QEMU's source connects to (`migrate uri=unix:<path>`). */
  readonly path: string;
  /** Bytes copied source→target so far. */
  bytes(): number;
  /** Connections accepted so far (multifd opens several). */
  connections(): number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts a bridge from `listenPath` to `targetPath`. */
export async function bridgeUnixSockets(listenPath: string, targetPath: string): Promise<UnixBridge> {
  fs.rmSync(listenPath, { force: true });
  let bytes = 0;
  let conns = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((src) => {
    conns++;
    const dst = net.createConnection(targetPath);
    sockets.add(src);
    sockets.add(dst);
    src.on('data', (d: Buffer) => { bytes += d.length; });
    src.pipe(dst);
    dst.pipe(src);
    const kill = () => { src.destroy(); dst.destroy(); sockets.delete(src); sockets.delete(dst); };
    src.on('error', kill).on('close', kill);
    dst.on('error', kill).on('close', kill);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPath, () => resolve());
  });
  return {
    path: listenPath,
    bytes: () => bytes,
    connections: () => conns,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
