/**
 * The QEMU tunnel's byte pump (protocol.ts, "QEMU tunnel"): one unix socket of a QEMU migration
 * stream <-> StreamData messages on the agents' Transfer stream, both directions, used by the
 * source (qemu-source.ts: frames out, acks in) and the target (qemu-target.ts: acks out, frames in).
 *
 * Socket -> gRPC: reads are gathered into messages of up to STREAM_CHUNK_BYTES (what arrived in one
 * event-loop turn, so the return path's small page requests are not held back) and encoded with
 * one copy (frame-codec encodeStream). When grpc-js' write buffer is full the socket is paused
 * until 'drain'. gRPC -> socket: data views are written as they are; when the socket's buffer is
 * full the gRPC stream is paused until the socket drains. Nothing is per byte.
 */
import type * as net from 'node:net';
import { encodeStream } from './frame-codec';
import { STREAM_CHUNK_BYTES } from './protocol';

/** The message side of a tunnel: a gRPC duplex stream (client or server call). */
export interface MessageStream {
  write(b: Buffer): boolean;
  once(ev: 'drain', cb: () => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** Counters of one tunnel. */
export interface TunnelStats {
  /** Socket bytes sent as StreamData. */
  outBytes: number;
  /** StreamData bytes written to the socket. */
  inBytes: number;
  /** StreamData messages sent. */
  outMessages: number;
  /** Encoded bytes sent (what went on the wire, framing included). */
  outWireBytes: number;
}

/** Pumps one socket <-> one message stream. */
export class SocketTunnel {
  readonly stats: TunnelStats = { outBytes: 0, inBytes: 0, outMessages: 0, outWireBytes: 0 };
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private scheduled = false;
  private ended = false;
  private closed = false;
  private waitingDrain = false;
  /** Resolves when the socket has ended (all its bytes sent as StreamData, then eof). */
  readonly socketEnded: Promise<void>;
  private endedResolve!: () => void;

  /**
   * @param socket the QEMU side
   * @param stream the gRPC side
   * @param asAck  encode outgoing StreamData as acks (target) instead of frames (source)
   * @param onError called once when the socket fails or closes before it ended cleanly
   */
  constructor(
    readonly socket: net.Socket,
    private readonly stream: MessageStream,
    private readonly asAck: boolean,
    private readonly onError: (err: Error) => void,
  ) {
    this.socketEnded = new Promise((r) => { this.endedResolve = r; });
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('end', () => {
      this.flush();
      this.ended = true;
      this.send(encodeStream([], 0, true, this.asAck));
      this.endedResolve();
    });
    socket.on('error', (err) => { if (!this.ended) this.fail(err); });
    socket.on('close', () => {
      if (!this.ended) this.fail(new Error('QEMU migration socket closed before the stream ended'));
    });
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.onError(err);
  }

  private onData(d: Buffer): void {
    this.pending.push(d);
    this.pendingBytes += d.length;
    if (this.pendingBytes >= STREAM_CHUNK_BYTES) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => { this.scheduled = false; this.flush(); });
    }
  }

  private flush(): void {
    if (this.pendingBytes === 0) return;
    const msg = encodeStream(this.pending, 0, false, this.asAck);
    this.stats.outBytes += this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.send(msg);
  }

  private send(msg: Buffer): void {
    if (this.closed) return;
    this.stats.outMessages++;
    this.stats.outWireBytes += msg.length;
    if (!this.stream.write(msg) && !this.waitingDrain) {
      this.waitingDrain = true;
      this.socket.pause();
      this.stream.once('drain', () => { this.waitingDrain = false; if (!this.closed) this.socket.resume(); });
    }
  }

  /** Delivers a StreamData received from the peer agent to the socket. */
  deliver(data: Buffer, eof: boolean): void {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return;
    if (data.length) {
      this.stats.inBytes += data.length;
      if (!this.socket.write(data)) {
        this.stream.pause();
        this.socket.once('drain', () => this.stream.resume());
      }
    }
    if (eof) this.socket.end();
  }

  /** Closes the socket at once (failure: QEMU sees a broken stream). */
  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
