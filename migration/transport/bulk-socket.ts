/**
 * The bulk channel's socket (protocol.ts "Bulk channel"): a raw TLS (or, between --insecure
 * agents, plain TCP) socket carrying the same encoded frames and acks as a Transfer stream, each
 * prefixed by its length (u32 big-endian). No HTTP/2 framing, no per-16-KiB callback into
 * JavaScript beyond the socket's own reads, no copies but the one into a message's buffer when a
 * message spans reads; those buffers come from a pool (frame-pool.ts) and the consumer gives each
 * message back (`release`) once it applied it, so a target reuses a few warm buffers instead of
 * allocating 1 MiB per frame. Backpressure is the socket's: `write` returns false once its buffer is
 * full and 'drain' says when it took it. Both sides use it: the source dials (`dialBulk`), the
 * target's listener wraps what it accepts (bulk-listener.ts).
 *
 * Events: 'data' (one whole message, valid until it is released: see `release`), 'end' (the peer
 * closed cleanly), 'error' (a DroverError: the socket failed or the peer broke the framing),
 * 'drain', 'connect' (secure, when dialled).
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { DroverError } from '../../lib/errors';
import { encodeFrame } from '../wire/frame-codec';
import { FramePool } from './frame-pool';
import { MAX_FRAME_BYTES, type Frame } from '../wire/protocol';

/** Bytes of the length prefix in front of every message. */
export const LENGTH_PREFIX_BYTES = 4;
/** Largest message a bulk socket takes: a frame at the receiver's limit (acks are far smaller). */
export const MAX_BULK_MESSAGE_BYTES = MAX_FRAME_BYTES;
/** Messages up to this size go out as one write (prefix copied in front); larger ones as prefix + body, uncopied. */
const COALESCE_BELOW_BYTES = 64 * 1024;
/** A dial that has not connected (and finished its TLS handshake) by then fails, and auto falls back to gRPC. */
export const BULK_CONNECT_TIMEOUT_MS = 5000;
/**
 * Bytes the socket buffers in user space before `write` says "wait": a few batches, so the
 * engine's writes rarely wait on a drain while the kernel still holds plenty to send.
 */
const WRITE_HIGH_WATER_BYTES = 4 * 1024 * 1024;

/**
 * Splits a byte stream into length-prefixed messages. A message that spans chunks is assembled
 * in a pooled buffer (`pool`), which `release` gives back for the next one: the consumer must
 * not read a message after releasing it. A message inside one chunk is a view of that chunk.
 */
export class MessageReader {
  private head = Buffer.alloc(LENGTH_PREFIX_BYTES);
  private headFill = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;

  constructor(private readonly onMessage: (m: Buffer) => void, private readonly maxBytes = MAX_BULK_MESSAGE_BYTES, private readonly pool = new FramePool()) {}

  /** Gives message `m` back: its buffer may carry the next message. Releasing twice, or a message not assembled here, does nothing. */
  release(m: Buffer): void {
    this.pool.give(m);
  }

  /** Feeds one chunk; calls onMessage for each message it completes. Throws INVALID_ARGUMENT on an oversized length. */
  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (!this.body) {
        // A whole prefix and message inside this chunk: hand out a view, no copy.
        if (this.headFill === 0 && chunk.length - at >= LENGTH_PREFIX_BYTES) {
          const n = this.lengthOf(chunk.readUInt32BE(at));
          if (chunk.length - at - LENGTH_PREFIX_BYTES >= n) {
            this.onMessage(chunk.subarray(at + LENGTH_PREFIX_BYTES, at + LENGTH_PREFIX_BYTES + n));
            at += LENGTH_PREFIX_BYTES + n;
            continue;
          }
        }
        const take = Math.min(LENGTH_PREFIX_BYTES - this.headFill, chunk.length - at);
        chunk.copy(this.head, this.headFill, at, at + take);
        this.headFill += take;
        at += take;
        if (this.headFill < LENGTH_PREFIX_BYTES) return;
        this.body = this.pool.take(this.lengthOf(this.head.readUInt32BE(0)));
        this.bodyFill = 0;
        if (this.body.length === 0) { this.complete(); continue; }
      }
      const take = Math.min(this.body.length - this.bodyFill, chunk.length - at);
      chunk.copy(this.body, this.bodyFill, at, at + take);
      this.bodyFill += take;
      at += take;
      if (this.bodyFill === this.body.length) this.complete();
    }
  }

  /** The message being read is whole: hand it out and start the next prefix. */
  private complete(): void {
    const m = this.body!;
    this.body = undefined;
    this.headFill = 0;
    this.onMessage(m);
  }

  /** True when no message is partly read (a clean end of stream). */
  get idle(): boolean {
    return !this.body && this.headFill === 0;
  }

  private lengthOf(n: number): number {
    if (n > this.maxBytes) throw new DroverError('INVALID_ARGUMENT', `bulk message of ${n} bytes exceeds the limit of ${this.maxBytes}`);
    return n;
  }
}

/** One end of a bulk channel socket. */
export class BulkSocket extends EventEmitter {
  private readonly reader: MessageReader;
  private failed = false;
  private ended = false;

  /** `socket`: a connected (or connecting) net or TLS socket; `label`: names the peer in errors. */
  constructor(readonly socket: net.Socket, private readonly label: string) {
    super();
    this.reader = new MessageReader((m) => this.emit('data', m));
    socket.setNoDelay(true); // acks and the last batches before Complete must not wait for Nagle
    socket.on('data', (chunk: Buffer) => {
      try {
        this.reader.push(chunk);
      } catch (err) {
        this.fail(DroverError.from(err));
      }
    });
    socket.on('drain', () => this.emit('drain'));
    socket.on('end', () => {
      if (!this.reader.idle) return this.fail(new DroverError('UNAVAILABLE', `bulk socket ${label} ended inside a message`));
      this.ended = true;
      this.emit('end');
      socket.end();
    });
    socket.on('error', (err) => this.fail(new DroverError('UNAVAILABLE', `bulk socket ${label}: ${err.message}`, { cause: err })));
    socket.on('close', () => {
      if (!this.ended) this.fail(new DroverError('UNAVAILABLE', `bulk socket ${label} closed`));
    });
  }

  /**
   * Gives a message this socket emitted back once the consumer no longer reads it (for a page
   * batch: once the receiver's apply settled); its buffer then carries a later message. A message
   * never released is garbage collected instead; releasing twice does nothing.
   */
  release(m: Buffer): void {
    this.reader.release(m);
  }

  /** Sends one frame (encoded here) or encoded message; false = wait for 'drain'. */
  write(frame: Frame | Buffer): boolean {
    const body = Buffer.isBuffer(frame) ? frame : encodeFrame(frame);
    if (body.length < COALESCE_BELOW_BYTES) {
      const m = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES + body.length);
      m.writeUInt32BE(body.length, 0);
      body.copy(m, LENGTH_PREFIX_BYTES);
      return this.socket.write(m);
    }
    const head = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES);
    head.writeUInt32BE(body.length, 0);
    this.socket.write(head);
    return this.socket.write(body);
  }

  /** True while the socket's buffer is full (the channel's backpressure). */
  get writableNeedDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** True once the socket is gone. */
  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  /** Closes our side cleanly (the peer sees 'end'). */
  end(): void {
    this.ended = true;
    this.socket.end();
  }

  /** Drops the socket at once (the peer sees a reset or a close inside the stream). */
  cancel(): void {
    this.ended = true;
    this.socket.destroy();
  }

  /** Stops reading (the peer's writes then wait on TCP's window). */
  pause(): void {
    this.socket.pause();
  }

  /** Reads again. */
  resume(): void {
    this.socket.resume();
  }

  private fail(err: DroverError): void {
    if (this.failed || this.ended) return;
    this.failed = true;
    this.socket.destroy();
    this.emit('error', err);
  }
}

/** How a source dials a target's bulk listener: TLS options (our certificate, the expected target identity), or plain TCP. */
export interface BulkDialer {
  /** Start.bulk mode this dialer speaks. */
  mode: 'tls' | 'tcp';
  /** node:tls options for a TLS dial (tls-options.ts tlsClientOptions); absent for plain TCP. */
  tls?: tls.ConnectionOptions;
}

/** The SNI every node certificate carries (agent-client.ts TLS_SERVER_NAME); identity is checked by checkServerIdentity, not the name. */
const BULK_SERVER_NAME = 'drover';

/** Dials `host:port`; the socket buffers writes until it connected and fails with 'error' when it cannot within BULK_CONNECT_TIMEOUT_MS. */
export function dialBulk(dialer: BulkDialer, host: string, port: number): BulkSocket {
  const opts = { host, port, writableHighWaterMark: WRITE_HIGH_WATER_BYTES };
  const socket = dialer.tls ? tls.connect({ ...dialer.tls, ...opts, servername: BULK_SERVER_NAME }) : net.connect(opts);
  const s = new BulkSocket(socket, `${host}:${port}`);
  socket.setTimeout(BULK_CONNECT_TIMEOUT_MS, () => socket.destroy(new Error(`no connection within ${BULK_CONNECT_TIMEOUT_MS} ms`)));
  socket.once(dialer.tls ? 'secureConnect' : 'connect', () => {
    socket.setTimeout(0);
    s.emit('connect');
  });
  return s;
}

/** The host part of a gRPC target address `host:port` (brackets of an IPv6 literal removed). */
export function hostOf(address: string): string {
  const a = address.replace(/^(dns|ipv4|ipv6):(\/\/\/)?/, '');
  return a.slice(0, a.lastIndexOf(':')).replace(/^\[|\]$/g, '');
}
