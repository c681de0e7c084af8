/**
 * Receive buffers that a bulk socket reuses for the messages it assembles (a 1 MiB page batch
 * arrives as ~64 reads of 16 KiB TLS records and is copied into one buffer). A fresh buffer per
 * frame costs an allocation, the first-touch faults of memory the heap had not used yet and the
 * GCs that V8's external-memory accounting triggers every few dozen MiB; a buffer taken again
 * right after its frame was applied is still in the CPU's cache when the receiver copies it into
 * guest RAM.
 *
 * The consumer gives a message back (`give`) once nothing reads it any more: for a page batch,
 * when the receiver's apply has settled (receiver.ts IncomingMigration.apply promises it keeps no
 * view of the payload after that). A message never given back is simply garbage collected; a
 * message given back twice, or a view other than the message, is ignored, so a stale release can
 * never free a buffer that carries another message. The message is the buffer `take` returned,
 * less `headerBytes` in front (grpc-js strips its 5-byte prefix before it hands a message on).
 */

/** Messages shorter than this get a buffer of their own (acks, control frames: not worth a pooled 1 MiB). */
export const POOLED_MIN_BYTES = 64 * 1024;
/** Pooled buffers are sized in steps of this, so batches of slightly different lengths share them. */
const CAPACITY_STEP_BYTES = 64 * 1024;
/**
 * Free buffers a pool keeps. A target applies each frame within the event-loop turn that
 * completed it, so one or two are in use at a time; the rest absorbs a burst of reads.
 */
export const POOL_FREE_BUFFERS = 4;

/** A pool of receive buffers for one reader. */
export class FramePool {
  private readonly free: ArrayBuffer[] = [];
  /** The view lent out per backing store. */
  private readonly lent = new WeakMap<ArrayBuffer, Buffer>();
  /** Messages given back: a second give of one (its store may carry another message by then) is ignored. */
  private readonly given = new WeakSet<Buffer>();

  /** `headerBytes`: bytes of a lent buffer in front of the message the consumer gives back. */
  constructor(private readonly maxFree = POOL_FREE_BUFFERS, private readonly headerBytes = 0) {}

  /** A buffer of exactly `n` bytes (uninitialised): pooled from POOLED_MIN_BYTES on, else a fresh one. */
  take(n: number): Buffer {
    if (n < POOLED_MIN_BYTES) return Buffer.allocUnsafe(n);
    let store: ArrayBuffer | undefined;
    for (let i = 0; i < this.free.length; i++) {
      if (this.free[i].byteLength >= n) { store = this.free.splice(i, 1)[0]; break; }
    }
    store ??= Buffer.allocUnsafeSlow(Math.ceil(n / CAPACITY_STEP_BYTES) * CAPACITY_STEP_BYTES).buffer as ArrayBuffer;
    const b = Buffer.from(store, 0, n);
    this.lent.set(store, b);
    return b;
  }

  /**
   * Gives back the message in a buffer `take` returned (that buffer less `headerBytes` in front)
   * once nothing reads it any more; anything else, or a second give of the same message, is ignored.
   */
  give(m: Buffer): void {
    const store = m.buffer as ArrayBuffer;
    const lent = this.lent.get(store);
    if (!lent || this.given.has(m) || m.byteOffset !== lent.byteOffset + this.headerBytes || m.length !== lent.length - this.headerBytes) return;
    this.given.add(m);
    this.lent.delete(store);
    if (this.free.length < this.maxFree) this.free.push(store);
  }

  /** Free buffers held (tests). */
  get freeCount(): number {
    return this.free.length;
  }
}
