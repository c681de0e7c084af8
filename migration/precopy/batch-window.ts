/**
 * The source's view of the target during one migration: the page batches in flight and the
 * window they must fit in, the pool of batch builders they are written with, the acks that
 * answer them, and the migration's first failure, which wakes every waiter.
 *
 * Waits are event-driven: a waiter sleeps until an ack or the failure arrives, then re-checks
 * its condition. A builder goes back to the pool only once the target acknowledged its batch
 * (grpc-js may still hold the frame, which is a view of the builder's buffer, until then).
 */
import { DroverError } from '../../lib/errors';
import { BatchBuilder } from '../wire/frame-codec';
import { DEFAULT_WINDOW_BYTES, MAX_BATCH_PAYLOAD_BYTES, type Ack } from '../wire/protocol';
import { PAGE_SIZE } from '../../hypervisor/types';

/** Pages in one batch (MAX_BATCH_PAYLOAD_BYTES of payload). */
export const BATCH_PAGES = MAX_BATCH_PAYLOAD_BYTES / PAGE_SIZE;

/** A sent batch the target has not acknowledged yet. */
interface InFlight { seq: number; builder: BatchBuilder; bytes: number }

/** The target's Verified ack. */
export type VerifiedAck = Extract<Ack, { kind: 'verified' }>;

/** Batches in flight, acks, and the failure that ends every wait. */
export class BatchWindow {
  private readonly inflight: InFlight[] = [];
  private readonly pool: BatchBuilder[] = [];
  private inflightBytes = 0;
  private windowBytes = DEFAULT_WINDOW_BYTES;
  private seq = 0;
  private waiters: (() => void)[] = [];
  private firstFailure: DroverError | undefined;
  private signalFailed!: () => void;
  /** Resolves when the migration failed (to race against waits on other things; renewed by a post-copy recovery). */
  failed = new Promise<void>((r) => { this.signalFailed = r; });
  /** The target accepted Start. */
  accepted = false;
  /** The target's Verified ack, once it came. */
  verified: VerifiedAck | undefined;
  /** Wall clock the target resumed the guest at, from its Activated ack, once it came. */
  activatedAt: number | undefined;
  /** The target recorded its ownership (protocol 2's Owned). */
  owned = false;
  /** Post-copy: the target offered it (Accepted.postcopy). */
  postcopyOffered = false;
  /** Post-copy: pages the target's vCPUs wait for, a range table of requests not taken yet. */
  pageRequests: number[] = [];
  /** Post-copy: the target's PostcopyDone (every page there, its guest's waits), once it came. */
  postcopyDone: Extract<Ack, { kind: 'postcopyDone' }> | undefined;
  /** Post-copy recovery: the target's Resumed ack to the latest reconnection, once it came. */
  resumed: Extract<Ack, { kind: 'resumed' }> | undefined;
  /** When the latest ack arrived (performance.now()). */
  lastAckAt = performance.now();
  /** The payload encodings the target decodes (Accepted.encodings; 0 = raw only). */
  peerEncodings = 0;
  /** Called for each batch the target acknowledged, with the ack's arrival (performance.now()). */
  onDelivered: ((seq: number, atMs: number) => void) | undefined;

  /** The first failure, if the migration failed. */
  get failure(): DroverError | undefined {
    return this.firstFailure;
  }

  /** Batches sent and not yet acknowledged. */
  get inFlightCount(): number {
    return this.inflight.length;
  }

  /** Sequence number of the latest batch (= batches sent). */
  get lastSeq(): number {
    return this.seq;
  }

  /** A builder for the next batch: a pooled one whose batch was acknowledged, or a new one. */
  takeBuilder(): BatchBuilder {
    return this.pool.pop() ?? new BatchBuilder(MAX_BATCH_PAYLOAD_BYTES, 2 * BATCH_PAGES);
  }

  /** Returns a builder that holds no unacknowledged batch. */
  recycle(builder: BatchBuilder): void {
    this.pool.push(builder);
  }

  /** The next batch sequence number. */
  nextSeq(): number {
    return ++this.seq;
  }

  /** Records batch `seq`, written with `builder`, `bytes` long on the wire, as in flight. */
  push(seq: number, builder: BatchBuilder, bytes: number): void {
    this.inflight.push({ seq, builder, bytes });
    this.inflightBytes += bytes;
  }

  /** Handles one ack from the target and wakes the waiters. */
  handleAck(ack: Ack): void {
    this.lastAckAt = performance.now();
    switch (ack.kind) {
      case 'accepted':
        this.accepted = true;
        if (ack.windowBytes > 0) this.windowBytes = ack.windowBytes;
        this.peerEncodings = ack.encodings ?? 0;
        this.postcopyOffered = !!ack.postcopy;
        break;
      case 'pageRequest':
        this.pageRequests.push(...ack.ranges);
        break;
      case 'postcopyDone':
        this.postcopyDone = ack;
        break;
      case 'resumed':
        this.resumed = ack;
        break;
      case 'batch':
        // Acks are cumulative: every batch up to `seq` landed.
        while (this.inflight.length > 0 && this.inflight[0].seq <= ack.seq) {
          const f = this.inflight.shift()!;
          this.inflightBytes -= f.bytes;
          this.pool.push(f.builder);
          this.onDelivered?.(f.seq, this.lastAckAt);
        }
        break;
      case 'verified':
        this.verified = ack;
        break;
      case 'activated':
        this.activatedAt = ack.resumedAtMs;
        break;
      case 'owned':
        this.owned = true;
        break;
    }
    this.notify();
  }

  /** Records the migration's failure (the first one wins) and wakes every waiter. */
  fail(err: DroverError): void {
    if (this.firstFailure) return;
    this.firstFailure = err;
    this.signalFailed();
    this.notify();
  }

  /** Throws the failure, if there is one. */
  check(): void {
    if (this.firstFailure) throw this.firstFailure;
  }

  /** Waits until `cond` holds; throws the failure if one happens first. */
  async until(cond: () => boolean): Promise<void> {
    while (!cond()) {
      this.check();
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.check();
  }

  /**
   * Post-copy recovery: the old stream is gone with whatever it had in flight. Forgets the
   * failure, the batches in flight (their builders too: the dead call may still hold them) and
   * the page requests (the target repeats those that still wait) and the previous Resumed.
   */
  resetForResume(): void {
    this.firstFailure = undefined;
    this.failed = new Promise<void>((r) => { this.signalFailed = r; });
    this.inflight.length = 0;
    this.inflightBytes = 0;
    this.pageRequests = [];
    this.resumed = undefined;
    this.lastAckAt = performance.now();
  }

  /** Post-copy recovery: the target applied batches up to `lastSeq`; the next batch is `lastSeq + 1`. */
  continueFrom(lastSeq: number): void {
    this.seq = lastSeq;
  }

  /** Lowers the window to `bytes` (post-copy: requested pages must not queue behind a long push). */
  limitWindow(bytes: number): void {
    this.windowBytes = Math.min(this.windowBytes, bytes);
  }

  /** Bytes sent and not yet acknowledged. */
  get bytesInFlight(): number {
    return this.inflightBytes;
  }

  /** Waits until the bytes in flight fit the window again. */
  untilRoom(): Promise<void> {
    return this.until(() => this.inflightBytes < this.windowBytes);
  }

  /** Waits until the target acknowledged every batch sent. */
  untilDrained(): Promise<void> {
    return this.until(() => this.inflight.length === 0);
  }

  /** Waits for `p` or the failure, whichever comes first; throws the failure. */
  async race(p: Promise<unknown>): Promise<void> {
    await Promise.race([p, this.failed]);
    this.check();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
