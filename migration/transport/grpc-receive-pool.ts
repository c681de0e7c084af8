/**
 * Reused receive buffers for a Transfer call (the gRPC path's twin of the bulk socket's pool):
 * grpc-js assembles each message of a call in a fresh buffer (its StreamDecoder concatenates the
 * 16 KiB HTTP/2 DATA frames of a 1 MiB batch into a new Buffer per message) and offers no option
 * for it. `poolReceiveBuffers` swaps the call's decoder for one that assembles messages in pooled
 * buffers (frame-pool.ts) with the same framing, limits and errors, and returns how to give a
 * message back once nothing reads it (for a page batch: once the receiver's apply settled).
 *
 * It reaches into grpc-js' private call object, as lib/grpc-window.ts does for the receive
 * window: when the shape is not the one it knows (another grpc-js version), or the call's decoder
 * is inside a message, it changes nothing and returns undefined: the call then allocates as before.
 */
import { FramePool } from './frame-pool';

/** Bytes in front of every gRPC message: the compressed flag and the length (u32 big-endian). */
const GRPC_PREFIX_BYTES = 5;

/** The part of grpc-js' StreamDecoder (stream-decoder.ts, 1.x) this module replaces and checks. */
interface GrpcDecoder {
  write(data: Buffer): Buffer[];
  maxReadMessageLength: number;
  /** 0 = between messages (ReadState.NO_DATA). */
  readState: number;
}

/** A link of grpc-js' server call chain (every field optional: private shape). */
interface CallLink { decoder?: unknown; nextCall?: CallLink }

/** grpc-js' framing of a call's messages, assembled in pooled buffers; returns the framed messages (prefix included), as StreamDecoder does. */
class PooledGrpcDecoder {
  private readonly head = Buffer.alloc(GRPC_PREFIX_BYTES);
  private headFill = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;

  constructor(private readonly maxReadMessageLength: number, private readonly pool: FramePool) {}

  write(data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < data.length) {
      if (!this.body) {
        const take = Math.min(GRPC_PREFIX_BYTES - this.headFill, data.length - at);
        data.copy(this.head, this.headFill, at, at + take);
        this.headFill += take;
        at += take;
        if (this.headFill < GRPC_PREFIX_BYTES) break;
        const n = this.head.readUInt32BE(1);
        if (this.maxReadMessageLength !== -1 && n > this.maxReadMessageLength) {
          throw new Error(`Received message larger than max (${n} vs ${this.maxReadMessageLength})`);
        }
        this.body = this.pool.take(GRPC_PREFIX_BYTES + n);
        this.head.copy(this.body, 0);
        this.bodyFill = GRPC_PREFIX_BYTES;
      }
      const take = Math.min(this.body.length - this.bodyFill, data.length - at);
      data.copy(this.body, this.bodyFill, at, at + take);
      this.bodyFill += take;
      at += take;
      if (this.bodyFill === this.body.length) {
        out.push(this.body);
        this.body = undefined;
        this.headFill = 0;
      }
    }
    return out;
  }
}

/**
 * Makes server call `call` (a grpc-js ServerDuplexStream) assemble its messages in pooled buffers;
 * returns the function that gives a message (the Buffer the call emitted) back, or undefined when
 * the call could not be changed. Call it between two messages (the Start frame and the next).
 */
export function poolReceiveBuffers(call: unknown): ((message: Buffer) => void) | undefined {
  let c: CallLink | undefined = (call as { call?: CallLink } | null | undefined)?.call;
  for (let i = 0; c && i < 8; i++, c = c.nextCall) {
    const d = c.decoder as Partial<GrpcDecoder> | undefined;
    if (!d || typeof d.write !== 'function') continue;
    if (typeof d.maxReadMessageLength !== 'number' || d.readState !== 0) return undefined; // not between two messages
    // grpc-js hands on message.subarray(5) (the prefix stripped): that view gives the buffer back.
    const pool = new FramePool(undefined, GRPC_PREFIX_BYTES);
    c.decoder = new PooledGrpcDecoder(d.maxReadMessageLength, pool);
    return (m) => pool.give(m);
  }
  return undefined;
}
