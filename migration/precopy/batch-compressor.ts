/**
 * Whether the source LZ4-encodes a page batch (QEMU's multifd-zstd idea: compress where the link
 * is the bottleneck, not where the CPU is). `always` encodes every batch that shrinks enough,
 * `never` none. `auto` decides per migration from measured rates, as a model: while it sends raw
 * it measures the rate the target acknowledges page bytes at (R) and the share of one CPU the
 * source agent spends meanwhile (u); one batch in SAMPLE_EVERY goes LZ4-encoded, which measures
 * LZ4's own CPU cost per byte (c) and its ratio (r). Encoding every batch would then run at
 * min(1 / ((u / R)(1 - w + w r) + c), R / r): of the source's CPU per page byte (u / R) the share
 * w that goes with the wire bytes (WIRE_CPU_SHARE) shrinks by r, LZ4 adds c, and the link carries
 * r of the bytes (when the source was not CPU-bound; when it was, the link's limit is unknown
 * and only the CPU term counts). It pays when that beats R by PAYS_FACTOR. A/B timing of raw and encoded spans
 * was tried first and dropped: acknowledgements come in bursts and an encoded span sent between
 * raw ones shares their backlog, which made the comparison noise. Encoding is re-checked with a
 * raw run every RECHECK_BATCHES; a round's end (the window drains) restarts the raw run.
 */
import type { CompressionMode } from '../types';
import { lz4Encode } from '../wire/payload-codec';
import { processCpuMsWithout } from '../../lib/thread-cpu';
import { VCPU_THREAD_PREFIX } from '../../hypervisor/sim/thread-name';

/** An encoded batch larger than this share of its pages is sent raw: the decode would cost more than the bytes saved. */
export const MAX_USEFUL_RATIO = 0.9;
/** While sending raw, one batch in this many goes encoded (LZ4's cost and ratio on this guest's pages) until auto first decides... */
export const SAMPLE_EVERY = 8;
/** ...and one in this many after it decided raw (each sample costs a CPU-bound source its encoding). */
export const SAMPLE_EVERY_DECIDED = 32;
/** Raw acknowledgements a measurement of R and u spans: 16 MiB, long enough that bursts of acknowledgements average out. */
export const RAW_RUN_BATCHES = 16;
/** Encoding must be predicted to beat raw by this factor: it costs both CPUs, so a near tie goes to raw. */
export const PAYS_FACTOR = 1.2;
/**
 * Share of the source's CPU per page byte that scales with the bytes on the wire (gRPC framing,
 * TLS, socket writes, copies of the frame) rather than with the pages (packing, hashing): a CPU
 * profile of the source put packing at about a third of its time. Encoding shrinks that share by r.
 */
export const WIRE_CPU_SHARE = 0.65;
/** A source using at least this share of a CPU is CPU-bound: the link's own limit is not known then. */
export const CPU_BOUND_SHARE = 0.85;
/** While encoding, a raw run re-measures R and u every this many batches (the link or the load may change). */
export const RECHECK_BATCHES = 64;

/** The agent's own CPU time, ms: the process without its sim guests' vCPU threads (a busy guest is not the agent's load). */
function processCpuMs(): number {
  return processCpuMsWithout(VCPU_THREAD_PREFIX);
}

/** What auto measured and predicted at its latest decision (for tests and logs). */
export interface CompressionEstimate {
  /** Page bytes per ms acknowledged while sending raw. */
  rawRate: number;
  /** The source's CPU share meanwhile (1 = one core busy). */
  cpuShare: number;
  /** LZ4 CPU ms per page byte, and encoded / page bytes. */
  encodeMsPerByte: number;
  ratio: number;
  /** Page bytes per ms predicted with every batch encoded. */
  lz4Rate: number;
}

/** Counters of what the compressor did (MigrationResult.compressed*). */
export interface CompressionStats {
  /** Batches sent encoded. */
  batches: number;
  /** Page bytes those batches held. */
  pageBytes: number;
  /** Their encoded size. */
  encodedBytes: number;
}

/** The per-batch choice of one migration (see the module doc). */
export class BatchCompressor {
  readonly stats: CompressionStats = { batches: 0, pageBytes: 0, encodedBytes: 0 };
  /** The latest decision's figures (auto only). */
  estimate: CompressionEstimate | undefined;
  private choice: 'raw' | 'lz4' | undefined;
  /** Sampled encodings: page bytes in, bytes out, ms spent. */
  private sampledIn = 0;
  private sampledOut = 0;
  private sampledMs = 0;
  /** Batches sent since the last one encoded as a sample, and since the latest recheck. */
  private sinceSample = 0;
  private sinceCheck = 0;
  /** Raw batches in flight that a raw run will count, by seq. */
  private readonly pending = new Map<number, number>();
  /** The raw run being measured: its first acknowledgement, bytes after it, the CPU clock then. */
  private run: { startAt: number; startCpu: number; bytes: number; acks: number } | undefined;
  /** Raw runs still to skip: the first one of a migration measures its start (the target faulting memory in, windows opening), not the path. */
  private warmupRuns = 1;
  /** A raw run is being sent (while encoding: a recheck). */
  private rawRunLeft = RAW_RUN_BATCHES + 1;

  /** `mode` from the policy; `peerDecodes`: the target's Accepted listed LZ4; the clocks can be replaced in tests. */
  constructor(private readonly mode: CompressionMode, private readonly peerDecodes: boolean,
    private readonly cpuMs: () => number = processCpuMs, private readonly nowMs: () => number = () => performance.now()) {}

  /** Whether any batch may be encoded in this migration. */
  get active(): boolean {
    return this.peerDecodes && this.mode !== 'never';
  }

  /** What auto settled on so far ('raw', 'lz4', or undefined while it measures); for the result. */
  get decision(): 'raw' | 'lz4' | undefined {
    return this.mode === 'auto' ? this.choice : this.active && this.mode === 'always' ? 'lz4' : 'raw';
  }

  /** Why batches went raw or encoded, in words with the figures behind auto's latest decision (MigrationResult.compressReason). */
  get reason(): string {
    if (this.mode === 'never') return 'never: compression is off for this migration';
    if (!this.peerDecodes) return 'raw: the target does not decode LZ4';
    if (this.mode === 'always') return `always: every batch LZ4 shrinks below ${MAX_USEFUL_RATIO}x goes encoded`;
    const e = this.estimate;
    if (!this.choice || !e) return 'auto: raw, undecided (too few raw batches acknowledged to measure the path)';
    const mbps = (perMs: number) => `${(perMs / 1000).toFixed(perMs < 10_000 ? 1 : 0)} MB/s`;
    return `auto: ${this.choice === 'lz4' ? 'LZ4' : 'raw'}: raw pages acknowledged at ${mbps(e.rawRate)} with the source ${Math.round(e.cpuShare * 100)}% busy; ` +
      `LZ4 costs ${(e.encodeMsPerByte * 2 ** 20).toFixed(2)} CPU ms/MiB at ratio ${e.ratio.toFixed(2)}, predicted ${mbps(e.lz4Rate)} encoded ` +
      `(${this.choice === 'lz4' ? 'beats' : 'does not beat'} raw by ${PAYS_FACTOR}x)`;
  }

  /**
   * The encoded payload of batch `seq` whose page bytes are `raw`, or undefined to send it raw.
   * `final`: the paused last round, which measures nothing (it goes the way auto chose, raw if
   * undecided).
   */
  encode(seq: number, raw: Buffer, final = false): Buffer | undefined {
    if (!this.active || raw.length === 0) return undefined;
    const encode = this.mode === 'always' || (final ? this.choice === 'lz4' : this.nextIsEncoded());
    if (!encode) {
      if (!final && this.mode === 'auto') this.pending.set(seq, raw.length);
      return undefined;
    }
    const t0 = this.nowMs();
    const e = lz4Encode(raw);
    this.sampledMs += this.nowMs() - t0;
    this.sampledIn += raw.length;
    this.sampledOut += e.length;
    if (e.length > raw.length * MAX_USEFUL_RATIO) return undefined;
    this.stats.batches++;
    this.stats.pageBytes += raw.length;
    this.stats.encodedBytes += e.length;
    return e;
  }

  /** Batch `seq` was acknowledged at `atMs` (performance.now()). */
  delivered(seq: number, atMs: number): void {
    const bytes = this.pending.get(seq);
    if (bytes === undefined) return;
    this.pending.delete(seq);
    if (!this.run) { this.run = { startAt: atMs, startCpu: this.cpuMs(), bytes: 0, acks: 0 }; return; }
    this.run.bytes += bytes;
    this.run.acks++;
    if (this.run.acks >= RAW_RUN_BATCHES) this.decide(atMs);
  }

  /** A round ended (the window drained): the raw run in progress is not measured. */
  roundEnded(): void {
    this.run = undefined;
    this.pending.clear();
  }

  /** Auto: whether the next batch goes encoded (a sample while raw; all while LZ4 won, but for a recheck's raw run). */
  private nextIsEncoded(): boolean {
    if (this.choice === 'lz4') {
      if (this.rawRunLeft > 0) { this.rawRunLeft--; return false; }
      if (++this.sinceCheck >= RECHECK_BATCHES) { this.sinceCheck = 0; this.rawRunLeft = RAW_RUN_BATCHES + 1; this.run = undefined; }
      return true;
    }
    if (++this.sinceSample >= (this.choice === undefined ? SAMPLE_EVERY : SAMPLE_EVERY_DECIDED)) { this.sinceSample = 0; return true; }
    return false;
  }

  /** A raw run was acknowledged: R and u from it, c and r from the samples; the model decides. */
  private decide(atMs: number): void {
    const run = this.run!;
    this.run = undefined;
    const wall = atMs - run.startAt;
    if (this.warmupRuns > 0) { this.warmupRuns--; return; }
    if (!(wall > 0) || this.sampledIn === 0) return;
    const rawRate = run.bytes / wall;
    const cpuShare = Math.min(1, Math.max(0, (this.cpuMs() - run.startCpu) / wall));
    const encodeMsPerByte = this.sampledMs / this.sampledIn;
    const ratio = this.sampledOut / this.sampledIn;
    const cpuLimited = 1 / ((cpuShare / rawRate) * (1 - WIRE_CPU_SHARE + WIRE_CPU_SHARE * ratio) + encodeMsPerByte);
    const linkLimited = cpuShare >= CPU_BOUND_SHARE ? Infinity : rawRate / Math.max(ratio, 0.01);
    const lz4Rate = Math.min(cpuLimited, linkLimited);
    this.estimate = { rawRate, cpuShare, encodeMsPerByte, ratio, lz4Rate };
    this.choice = ratio <= MAX_USEFUL_RATIO && lz4Rate > rawRate * PAYS_FACTOR ? 'lz4' : 'raw';
    if (this.choice === 'lz4') this.rawRunLeft = 0;
  }
}
