/**
 * The batch sequence numbers a multi-stream migration applied (protocol.ts "Parallel streams"):
 * batches of one round land in any order across streams, each seq exactly once, and Complete
 * (which carries the last seq) waits until every batch 1..last seq was applied.
 */
import { DroverError, invalidArgument } from '../../lib/errors';

/** How far ahead of the batches applied so far a seq may be: the source's window bounds what is in flight far below this. */
export const MAX_SEQ_AHEAD = 1 << 20;

/** A set of applied seqs with a wait for "all of 1..n". */
export class AppliedSeqs {
  private bits = new Uint8Array(4096);
  private count = 0;
  private max = 0;
  private waiter: { n: number; resolve: () => void; reject: (e: DroverError) => void } | undefined;
  private failure: DroverError | undefined;

  /** Batches applied. */
  get applied(): number {
    return this.count;
  }

  /** Refuses (INVALID_ARGUMENT) a seq that is not a positive integer, too far ahead, already applied or past a waiting Complete's last seq. */
  check(seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 1) throw invalidArgument(`batch seq ${seq} is not a positive integer`);
    if (seq > this.count + MAX_SEQ_AHEAD) throw invalidArgument(`batch ${seq} is more than ${MAX_SEQ_AHEAD} ahead of the ${this.count} batches applied`);
    if (this.has(seq)) throw invalidArgument(`batch ${seq} arrived twice (a page may be in flight on one stream only)`);
    if (this.waiter && seq > this.waiter.n) throw invalidArgument(`batch ${seq} arrived after Complete named ${this.waiter.n} as the last batch`);
  }

  /** Records `seq` (checked) as applied; wakes a Complete that waited for it. */
  add(seq: number): void {
    if (seq >> 3 >= this.bits.length) {
      const grown = new Uint8Array(Math.max(this.bits.length * 2, (seq >> 3) + 1));
      grown.set(this.bits);
      this.bits = grown;
    }
    this.bits[seq >> 3] |= 1 << (seq & 7);
    this.count++;
    if (seq > this.max) this.max = seq;
    const w = this.waiter;
    if (w && this.count === w.n) { this.waiter = undefined; w.resolve(); }
  }

  /** Resolves once batches 1..n were all applied; INVALID_ARGUMENT when one beyond n already was. */
  untilAll(n: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.max > n || this.count > n) return Promise.reject(invalidArgument(`Complete names ${n} as the last batch but batch ${this.max} was applied`));
    if (this.count === n) return Promise.resolve();
    if (this.waiter) return Promise.reject(invalidArgument('a second Complete while the first waits for its batches'));
    return new Promise((resolve, reject) => { this.waiter = { n, resolve, reject }; });
  }

  /** The migration was discarded: a waiting Complete fails with `err`. */
  abort(err: DroverError): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  private has(seq: number): boolean {
    return seq >> 3 < this.bits.length && (this.bits[seq >> 3] & (1 << (seq & 7))) !== 0;
  }
}
