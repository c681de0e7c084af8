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
 *
 * End-to-end window (source -> target): the target acknowledges the bytes its QEMU has taken
 * (BatchAck.bytes, cumulative, every CREDIT_EVERY_BYTES) and the source stops reading from its
 * QEMU while more than `windowBytes` (Accepted.window_bytes) are unacknowledged. Without it the
 * gRPC and socket buffers absorb tens of MiB: QEMU would see a bandwidth the path does not have,
 * stop the VM too early, and the final bytes would wait behind that backlog (downtime).
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { encodeStream } from '../wire/frame-codec';
import { STREAM_CHUNK_BYTES } from '../wire/protocol';

/**
 * DROVER_TUNNEL_TRACE=<dir>: one line per StreamData message (either way), per eof and per QMP event of
 * the migrating QEMUs (traceQmp), with wall-clock ms: the switchover's timeline.
 */
const TRACE_DIR = process.env.DROVER_TUNNEL_TRACE;
export function trace(what: string): void {
  if (TRACE_DIR) fs.appendFileSync(`${TRACE_DIR}/tunnel-${process.pid}.log`, `${(performance.timeOrigin + performance.now()).toFixed(1)} ${what}\n`);
}

/** Traces the QMP events of `qmp` (QEMU's own timestamps) while DROVER_TUNNEL_TRACE is set. */
export function traceQmp(qmp: { on(ev: 'event', f: (e: { event: string; data?: unknown; timestampMs: number }) => void): unknown }, side: string): void {
  if (!TRACE_DIR) return;
  qmp.on('event', (e) => trace(`qmp ${side} ${e.event} ${JSON.stringify(e.data ?? {})} qemu-ts ${e.timestampMs.toFixed(1)}`));
}

/** The target acknowledges delivered bytes at least this often (a quarter of the default window). */
export const CREDIT_EVERY_BYTES = 256 * 1024;

/** Bytes a tunnel queues for its socket before it pauses the gRPC stream. */
const DELIVER_QUEUE_BYTES = 2 * 1024 * 1024;

/** The message side of a tunnel: a gRPC duplex stream (client or server call). */
export interface MessageStream {
  write(b: Buffer): boolean;
  once(ev: 'drain', cb: () => void): unknown;
  pause(): unknown;
  resume(): unknown;
  /** A gRPC server call's TLS context: the peer's verified certificate (target side, native TLS authz). */
  getAuthContext?(): { sslPeerCertificate?: { raw?: Buffer } } | null;
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
  /** Source: bytes the target acknowledged; window (0 = none). */
  private credited = 0;
  private windowBytes = 0;
  /** Target: bytes written into the socket and taken by the kernel; last credit sent. */
  private delivered = 0;
  private lastCredit = 0;
  /** The gRPC side is paused because the socket's queue is full. */
  private inPaused = false;
  /** Source: a drainTo waiting for in-flight bytes to fall to `bytes`. */
  private drainWaiter: { bytes: number; release: () => void } | undefined;
  /** Target: called with the cumulative delivered bytes (send a BatchAck). */
  onCredit: ((bytes: number) => void) | undefined;
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
      trace('socket end');
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
    this.releaseDrain();
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
    if (TRACE_DIR) trace(`out ${this.asAck ? 'ack' : 'frame'} ${this.pendingBytes} B`);
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
      this.stream.once('drain', () => { this.waitingDrain = false; this.updateReading(); });
    }
    this.updateReading();
  }

  /** Reads from the socket only while the gRPC stream takes more and the window is open. */
  private updateReading(): void {
    if (this.closed || this.ended) return;
    const blocked = this.waitingDrain || (this.windowBytes > 0 && this.stats.outBytes - this.credited >= this.windowBytes);
    if (blocked && !this.socket.isPaused()) this.socket.pause();
    else if (!blocked && this.socket.isPaused()) this.socket.resume();
  }

  /** Source: sets the end-to-end window (Accepted.window_bytes; smaller before a switchover). */
  setWindow(bytes: number): void {
    this.windowBytes = bytes;
    this.updateReading();
  }

  /** Source: bytes sent and not yet acknowledged by the target. */
  get inFlight(): number {
    return this.stats.outBytes - this.credited;
  }

  /**
   * Source: narrows the window to `bytes` and resolves once at most that much is in flight (or
   * after `timeoutMs`): what QEMU writes next does not wait behind a full pipe.
   */
  drainTo(bytes: number, timeoutMs: number): Promise<void> {
    this.setWindow(bytes);
    if (this.inFlight <= bytes || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.releaseDrain(), timeoutMs);
      this.drainWaiter = { bytes, release: () => { clearTimeout(timer); resolve(); } };
    });
  }

  /** Resolves a pending drainTo (drained, timed out or closed). */
  private releaseDrain(): void {
    const w = this.drainWaiter;
    this.drainWaiter = undefined;
    w?.release();
  }

  /** Source: the target's cumulative count of bytes its QEMU took. */
  credit(bytes: number): void {
    if (bytes > this.credited) this.credited = bytes;
    if (this.drainWaiter && this.inFlight <= this.drainWaiter.bytes) this.releaseDrain();
    this.updateReading();
  }

  /** Delivers a StreamData received from the peer agent to the socket. */
  deliver(data: Buffer, eof: boolean): void {
    if (TRACE_DIR) trace(`in ${data.length} B${eof ? ' eof' : ''}${this.closed || this.socket.writableEnded ? ' (dropped)' : ''}`);
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return;
    if (data.length) {
      this.stats.inBytes += data.length;
      const n = data.length;
      const done = () => {
        this.delivered += n;
        // every CREDIT_EVERY_BYTES, and whenever the queue to QEMU runs empty (a narrowed window
        // at the source must not wait for a full credit step)
        const idle = this.socket.writableLength === 0 && this.delivered > this.lastCredit;
        if (this.onCredit && (this.delivered - this.lastCredit >= CREDIT_EVERY_BYTES || idle)) {
          this.lastCredit = this.delivered;
          this.onCredit(this.delivered);
        }
      };
      this.socket.write(data, done);
      // Keep up to DELIVER_QUEUE_BYTES queued in libuv (it refills the socket without a JS turn);
      // beyond that, stop reading the gRPC stream until the socket drains (HTTP/2 flow control).
      if (this.socket.writableLength > DELIVER_QUEUE_BYTES && !this.inPaused) {
        this.inPaused = true;
        this.stream.pause();
        this.socket.once('drain', () => { this.inPaused = false; this.stream.resume(); });
      }
    }
    if (eof) this.socket.end();
  }

  /** Closes the socket at once (failure: QEMU sees a broken stream). */
  destroy(): void {
    this.closed = true;
    this.releaseDrain();
    this.socket.destroy();
  }
}
