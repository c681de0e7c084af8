/**
 * Whether the source LZ4-encodes a page batch (QEMU's multifd-zstd idea: compress where the link
 * is the bottleneck, not where the CPU is). `always` encodes every batch that shrinks enough,
 * `never` none; `auto` measures instead of guessing, per migration: it sends spans of batches
 * raw and encoded in turn and compares the rate the target acknowledges page bytes at for each
 * (acknowledgements come at the bottleneck's pace, whether that is the link, the source's CPU or
 * the target's), then keeps the faster one and re-tries the other now and then, less often each
 * time it loses again (the link or the guest's data may change). A span crossing a round's end is
 * not measured (the window drains there, which says nothing about either encoding).
 */
import type { CompressionMode } from '../types';
import { lz4Encode } from '../wire/payload-codec';

/** An encoded batch larger than this share of its pages is sent raw: the decode would cost more than the bytes saved. */
export const MAX_USEFUL_RATIO = 0.9;
/** Batches per measured span: 4 MiB, three acknowledgement intervals to time a rate, few enough to decide early in round 1. */
export const SPAN_BATCHES = 4;
/** Measured spans of each kind before auto decides (one alone may catch a hiccup). */
export const MIN_SPANS = 2;
/** Encoding must beat raw by this factor to be chosen: it costs both CPUs, so a tie goes to raw. */
export const PAYS_FACTOR = 1.1;
/** Spans between re-tries of the losing kind, at first and at most (doubling each time it loses again). */
export const REPROBE_SPANS_FIRST = 8;
const REPROBE_SPANS_MAX = 256;
/** Weight of the newest span in a kind's rate (EWMA). */
const RATE_WEIGHT = 0.5;

/** Counters of what the compressor did (MigrationResult.compressed*). */
export interface CompressionStats {
  /** Batches sent encoded. */
  batches: number;
  /** Page bytes those batches held. */
  pageBytes: number;
  /** Their encoded size. */
  encodedBytes: number;
}

/** One span being measured: its kind and the acknowledgements seen. */
interface Span { encoded: boolean; sent: number; acked: number; bytes: number; firstAt: number; lastAt: number; measurable: boolean }

/** The per-batch choice of one migration (see the module doc). */
export class BatchCompressor {
  readonly stats: CompressionStats = { batches: 0, pageBytes: 0, encodedBytes: 0 };
  /** Page bytes per ms of each kind, once measured (EWMA), and how many spans measured it. */
  private readonly rate = { raw: 0, lz4: 0 };
  private readonly spansMeasured = { raw: 0, lz4: 0 };
  private readonly spans: Span[] = [];
  private readonly pending = new Map<number, { span: Span; pageBytes: number }>();
  private choice: 'raw' | 'lz4' | undefined;
  private sinceProbe = 0;
  private reprobeEvery = REPROBE_SPANS_FIRST;

  /** `mode` from the policy; `peerDecodes`: the target's Accepted listed LZ4. */
  constructor(private readonly mode: CompressionMode, private readonly peerDecodes: boolean) {}

  /** Whether any batch may be encoded in this migration. */
  get active(): boolean {
    return this.peerDecodes && this.mode !== 'never';
  }

  /** What auto settled on so far ('raw', 'lz4', or undefined while it measures); for the result. */
  get decision(): 'raw' | 'lz4' | undefined {
    return this.mode === 'auto' ? this.choice : this.active && this.mode === 'always' ? 'lz4' : 'raw';
  }

  /**
   * The encoded payload of batch `seq` whose page bytes are `raw`, or undefined to send it raw.
   * `final`: the paused last round, which measures nothing (it goes the way auto chose, raw if
   * undecided).
   */
  encode(seq: number, raw: Buffer, final = false): Buffer | undefined {
    if (!this.active || raw.length === 0) return undefined;
    const encoded = this.mode === 'always' || (final ? this.choice === 'lz4' : this.nextKind() === 'lz4');
    const span = final ? undefined : this.spanFor(encoded);
    let out: Buffer | undefined;
    if (encoded) {
      const e = lz4Encode(raw);
      if (e.length <= raw.length * MAX_USEFUL_RATIO) out = e;
    }
    if (out) {
      this.stats.batches++;
      this.stats.pageBytes += raw.length;
      this.stats.encodedBytes += out.length;
    }
    if (span) { span.sent++; this.pending.set(seq, { span, pageBytes: raw.length }); }
    return out;
  }

  /** Batch `seq` was acknowledged at `atMs` (performance.now()). */
  delivered(seq: number, atMs: number): void {
    const p = this.pending.get(seq);
    if (!p) return;
    this.pending.delete(seq);
    const s = p.span;
    if (s.acked === 0) s.firstAt = atMs; else s.bytes += p.pageBytes; // the first ack opens the clock
    s.lastAt = atMs;
    s.acked++;
    if (s.acked === SPAN_BATCHES) this.measured(s);
  }

  /** A round ended (the window drained): the spans still open are not measured. */
  roundEnded(): void {
    for (const s of this.spans) s.measurable = false;
    this.spans.length = 0;
    this.pending.clear();
  }

  /** Auto's kind for the next batch: alternate spans until both kinds are measured, then the faster, re-trying the other. */
  private nextKind(): 'raw' | 'lz4' {
    const open = this.spans[this.spans.length - 1];
    if (open && open.sent < SPAN_BATCHES) return open.encoded ? 'lz4' : 'raw';
    if (this.choice === undefined) {
      // Measuring: raw first, then the kind with fewer spans sent so far.
      const sent = { raw: 0, lz4: 0 };
      for (const s of this.spans) sent[s.encoded ? 'lz4' : 'raw']++;
      return this.spansMeasured.raw + sent.raw <= this.spansMeasured.lz4 + sent.lz4 ? 'raw' : 'lz4';
    }
    if (++this.sinceProbe >= this.reprobeEvery) {
      this.sinceProbe = 0;
      return this.choice === 'lz4' ? 'raw' : 'lz4';
    }
    return this.choice;
  }

  /** The span batch of kind `encoded` belongs to (a new one when the last is full or of the other kind). */
  private spanFor(encoded: boolean): Span {
    const open = this.spans[this.spans.length - 1];
    if (open && open.encoded === encoded && open.sent < SPAN_BATCHES) return open;
    const s: Span = { encoded, sent: 0, acked: 0, bytes: 0, firstAt: 0, lastAt: 0, measurable: true };
    this.spans.push(s);
    return s;
  }

  /** A full span was acknowledged: fold its rate in and decide. */
  private measured(s: Span): void {
    const i = this.spans.indexOf(s);
    if (i >= 0) this.spans.splice(i, 1);
    if (!s.measurable || s.lastAt <= s.firstAt) return;
    const kind = s.encoded ? 'lz4' : 'raw';
    const r = s.bytes / (s.lastAt - s.firstAt);
    this.rate[kind] = this.spansMeasured[kind] === 0 ? r : RATE_WEIGHT * r + (1 - RATE_WEIGHT) * this.rate[kind];
    this.spansMeasured[kind]++;
    if (this.spansMeasured.raw < MIN_SPANS || this.spansMeasured.lz4 < MIN_SPANS) return;
    const next = this.rate.lz4 > this.rate.raw * PAYS_FACTOR ? 'lz4' : 'raw';
    if (this.choice !== undefined && next === this.choice && kind !== this.choice) {
      this.reprobeEvery = Math.min(REPROBE_SPANS_MAX, this.reprobeEvery * 2); // the re-try lost again
    } else if (next !== this.choice) this.reprobeEvery = REPROBE_SPANS_FIRST;
    this.choice = next;
  }
}
