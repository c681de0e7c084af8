/**
 * The target's bulk listener (protocol.ts "Bulk channel"): one per agent, on the host its gRPC
 * server binds, a port of its own. With TLS it is a node:tls server with the agent's node
 * certificate that requires a client certificate from the cluster CA (the same mutual TLS as the
 * agents' gRPC server; a client without one fails the handshake); the caller's identity is then
 * checked per migration against the reservation, as on Transfer (incoming-auth.ts). Without TLS
 * (agents run --insecure) a plain TCP server. Each accepted socket becomes a BulkSocket handed to
 * `onSocket` with the peer's verified certificate.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { DroverError } from '../../lib/errors';
import { BulkSocket } from './bulk-socket';
import { BULK_TCP, BULK_TLS } from '../wire/protocol';

/** A bulk listener: the mode and port Accepted offers, and how to stop it. */
export interface BulkListener {
  /** Start.bulk mode it speaks: "tls" or "tcp". */
  mode: string;
  port: number;
  /** New TLS options (certificates reloaded): new connections use them, open sockets keep theirs. */
  reload(tlsOptions: tls.TlsOptions): void;
  close(): Promise<void>;
}

/** A socket the listener accepted, with the client certificate TLS verified (undefined in plain text). */
export type BulkAccept = (socket: BulkSocket, peerCertificate: tls.PeerCertificate | undefined) => void;

/** The listener could not bind its host and port (in use, not an address of this host, not allowed). */
export class BulkListenError extends DroverError {
  /** What the system said (Node's listen error, e.g. "listen EADDRINUSE: address already in use 127.0.0.1:7443"). */
  readonly reason: string;

  constructor(host: string, port: number, cause: Error) {
    super('UNAVAILABLE', `bulk listener cannot listen on ${host}:${port}: ${cause.message}`, { cause });
    this.name = 'BulkListenError';
    this.reason = cause.message;
  }
}

/** Seconds a client may take for its TLS handshake before the listener drops it. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Listens on `host`, port `port` (0 = any free); `tls`: node:tls server options (tls-options.ts tlsServerOptions), absent = plain TCP. A bind that fails is a BulkListenError. */
export function startBulkListener(host: string, port: number, tlsOptions: tls.TlsOptions | undefined, onSocket: BulkAccept): Promise<BulkListener> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)); };
  const server: net.Server = tlsOptions
    ? tls.createServer({ ...tlsOptions, handshakeTimeout: HANDSHAKE_TIMEOUT_MS }, (s) => { track(s); onSocket(new BulkSocket(s, `${s.remoteAddress}:${s.remotePort}`), s.getPeerCertificate()); })
    : net.createServer((s) => { track(s); onSocket(new BulkSocket(s, `${s.remoteAddress}:${s.remotePort}`), undefined); });
  server.on('tlsClientError', () => { /* a refused handshake (no or a foreign certificate): the socket is closed, nothing to do */ });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new BulkListenError(host, port, err)));
    server.listen(port, host, () => {
      const bound = (server.address() as net.AddressInfo).port;
      resolve({
        mode: tlsOptions ? BULK_TLS : BULK_TCP,
        port: bound,
        reload: (o) => { if (server instanceof tls.Server) server.setSecureContext(o); },
        close: () => new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
      });
    });
  });
}
