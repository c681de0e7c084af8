/**
 * The source side of one migration: iterative pre-copy, stop-and-copy, commit or rollback
 * (design.md stages 2-5), driving a Domain and a frame stream. Transport-agnostic: the node
 * agent hands it a `FrameChannel` over the gRPC Transfer stream.
 *
 * Round 1 sends every page (zero pages as flags only, and not even that when the target is
 * known to hold zeros); round n sends the pages dirtied during round n-1, skipping those dirtied
 * again while the round runs (Xen's to_skip: they would be sent twice). Dirty bits are taken
 * with get-and-clear, and folded back into the domain's log if the migration fails.
 *
 * Rollback: any failure before the source sends its commit (Complete with activate, or
 * Activate) aborts the stream, resumes the source and leaves its memory as it was. After the
 * commit the source never resumes on its own.
 */
import { PAGE_SIZE, type PagedDomain } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { BatchBuilder } from '../wire/frame-codec';
import { frames, MAX_BATCH_PAYLOAD_BYTES, DEFAULT_WINDOW_BYTES, MAX_ROUND_RANGES, type Ack, type Frame } from '../wire/protocol';
import { hashPage, foldChecksum, checksumBytes, ImageDigest } from '../wire/page-hash';
import { dirtyRuns, rangeTable, popcount, testBit } from '../wire/range-table';
import { Pacer, roundRate } from '../policy/rate-control';
import { nextThrottle, THROTTLE_MAX, shouldStop } from '../policy/stop-conditions';
import { completionTimeoutMs, PHASES_AFTER_SWITCHOVER, type DowntimeBreakdown, type MigrationPhase, type MigrationPolicy, type MigrationProgress, type MigrationResult, type StopReason } from '../types';

/** Pages in one batch (MAX_BATCH_PAYLOAD_BYTES of payload). */
export const BATCH_PAGES = MAX_BATCH_PAYLOAD_BYTES / PAGE_SIZE;
/** Re-read the live dirty bitmap (to_skip) every this many batches. */
export const SKIP_REFRESH_BATCHES = 8;
/** A round must move this much to time the landing rate from it (smaller ones are all latency). */
export const MIN_TIMED_ROUND_BYTES = 2 * 1024 * 1024;
/** Progress events at most this often, ms. */
export const PROGRESS_INTERVAL_MS = 200;
/** Progress timeout: no page acknowledged for this long fails the migration. */
export const PROGRESS_TIMEOUT_MS = 30_000;

/** The frame stream to the target, as the engine needs it. */
export interface FrameChannel {
  /** Writes a frame; false means the transport buffer is full (wait for `drained`). */
  write(frame: Frame | Buffer): boolean;
  /** Resolves when the transport can take more. */
  drained(): Promise<void>;
  /** Ends the stream (after a commit or an abort). */
  end(): void;
  /** Registers the handler of acks, and of the stream's failure. */
  onAck(handler: (ack: Ack) => void, onError: (err: DroverError) => void): void;
}

/** Everything one source-side migration needs. */
export interface PrecopySourceOptions {
  migrationId: string;
  domain: PagedDomain;
  channel: FrameChannel;
  policy: MigrationPolicy;
  sourceName: string;
  targetName: string;
  /** Migration token and id from PrepareIncoming. */
  token: string;
  /** Called with progress at most every PROGRESS_INTERVAL_MS and at each phase change. */
  onProgress?: (p: MigrationProgress) => void;
  /** Cancels the migration (honoured in every phase before switchover). */
  signal?: AbortSignal;
  /** With externalCommit: resolves when the control plane recorded the new owner. */
  waitForCommit?: () => Promise<void>;
}

interface InFlight { seq: number; builder: BatchBuilder; bytes: number }

/** Runs one migration from the source side. */
export class PrecopySource {
  private phase: MigrationPhase = 'reserving';
  private readonly digest: ImageDigest;
  private readonly pacer = new Pacer();
  private readonly inflight: InFlight[] = [];
  private readonly pool: BatchBuilder[] = [];
  private inflightBytes = 0;
  /** The bitmap the current round works through (taken from the dirty log): folded back on failure. */
  private roundBitmap: Uint32Array | undefined;
  private windowBytes = DEFAULT_WINDOW_BYTES;
  private seq = 0;
  private failure: DroverError | undefined;
  private waiters: (() => void)[] = [];
  private signalFailed!: () => void;
  /** Resolves when the migration failed (to race against waits on other things). */
  private readonly failed = new Promise<void>((r) => { this.signalFailed = r; });
  private accepted = false;
  private verified: Extract<Ack, { kind: 'verified' }> | undefined;
  private activatedAt = NaN;
  /** Auto-converge throttle applied to the source's vCPUs (0 = none). */
  private throttle = 0;
  private committed = false;
  private lastAckAt = performance.now();

  // statistics
  private readonly t0 = performance.now();
  private round = 0;
  private bytesSent = 0;
  private pageBytes = 0;
  private zeroPages = 0;
  private deviceBytes = 0;
  private sendingMs = 0;
  private nonzeroBytes = 0;
  private dirtyRate = 0;
  private roundRemaining = 0;
  private lastProgressAt = 0;
  private lastProgressBytes = 0;
  private rate = 0;
  /** Landing rate of the latest round that moved at least MIN_TIMED_ROUND_BYTES, bytes/s. */
  private roundRateEstimate = 0;
  private pausedAt = NaN;
  private pausedWall = NaN;
  private stopReason: StopReason | '' = '';
  private readonly breakdown: DowntimeBreakdown = { pauseMs: 0, finalRoundMs: 0, finalPages: 0, deviceMs: 0, verifyMs: 0, commitMs: 0, activateMs: 0 };

  constructor(private readonly o: PrecopySourceOptions) {
    this.digest = new ImageDigest(o.domain.pageCount);
    o.channel.onAck((ack) => this.handleAck(ack), (err) => this.fail(err));
    o.signal?.addEventListener('abort', () => {
      if (!PHASES_AFTER_SWITCHOVER.has(this.phase) && !this.committed) this.fail(new DroverError('CANCELLED', `migration ${o.migrationId} cancelled in phase ${this.phase}`));
    });
  }

  /** The current phase (read by cancel to refuse after switchover). */
  get currentPhase(): MigrationPhase {
    return this.phase;
  }

  /** Runs the migration; resolves with the result on success, rejects after rolling back. */
  async run(): Promise<MigrationResult> {
    const d = this.o.domain;
    const timeoutMs = completionTimeoutMs(this.o.policy, d.spec.memBytes);
    const timer = setTimeout(() => this.fail(new DroverError('DEADLINE_EXCEEDED', `migration ${this.o.migrationId} exceeded its completion timeout of ${Math.round(timeoutMs)} ms`)), timeoutMs);
    const idle = setInterval(() => {
      if (this.inflight.length > 0 && performance.now() - this.lastAckAt > PROGRESS_TIMEOUT_MS) {
        this.fail(new DroverError('DEADLINE_EXCEEDED', `migration ${this.o.migrationId}: no progress for ${PROGRESS_TIMEOUT_MS} ms (target stopped acknowledging pages)`));
      }
    }, 1000);
    try {
      this.o.channel.write(frames.start(this.o.migrationId, this.o.token, PAGE_SIZE, d.pageCount));
      await this.until(() => this.accepted);
      d.startDirtyLog();
      this.setPhase('precopy');
      // Round 1: every page that may be non-zero (never-touched pages are zero on both sides).
      let bitmap = d.populatedBitmap();
      this.roundBitmap = bitmap;
      let previousSent = NaN;
      let stalled = 0;
      let lastDirty = Infinity;
      for (;;) {
        this.round++;
        const before = this.pageBytes;
        const wireBefore = this.bytesSent;
        const roundStart = performance.now();
        this.pacer.setRate(roundRate(this.round, this.dirtyRate, this.o.policy.bandwidthBytesPerSec));
        await this.sendRound(bitmap, true);
        // A round ends when the target has applied it: the rate that predicts the last round's
        // length is the rate pages land at, not the rate they fill local buffers at.
        await this.until(() => this.inflight.length === 0);
        const roundMs = performance.now() - roundStart;
        const wire = this.bytesSent - wireBefore;
        // Later rounds rewrite pages the target has already faulted in: the latest round that
        // moved enough data to time it is the best predictor of the next.
        if (roundMs > 0 && wire >= MIN_TIMED_ROUND_BYTES) this.roundRateEstimate = (wire * 1000) / roundMs;
        this.sendingMs += roundMs;
        const sent = this.pageBytes - before;
        bitmap = d.getAndClearDirtyLog();
        this.roundBitmap = bitmap;
        const dirtyBytes = popcount(bitmap) * PAGE_SIZE;
        this.dirtyRate = roundMs > 0 ? (dirtyBytes * 1000) / roundMs : 0;
        stalled = dirtyBytes >= lastDirty ? stalled + 1 : 0;
        lastDirty = dirtyBytes;
        const reason = shouldStop({
          round: this.round, dirtyBytes, sentThisRound: sent, sentPreviousRound: previousSent, sentTotal: this.pageBytes,
          throughputBytesPerSec: this.roundRateEstimate || this.linkRate(), memBytes: d.spec.memBytes, elapsedMs: performance.now() - this.t0, roundsWithoutProgress: stalled,
        }, this.o.policy, timeoutMs);
        previousSent = sent;
        // Auto-converge (QEMU's, vMotion's SDPS): a guest that dirties faster than the link moves
        // pages is slowed step by step instead of being stopped with a large last round.
        // Once throttling, every round that still does not fit the target takes another step.
        const slowDown = reason === 'stalled' || (this.throttle > 0 && reason === null);
        if (slowDown && d.setThrottle && this.throttle < THROTTLE_MAX) {
          this.throttle = nextThrottle(this.throttle);
          d.setThrottle(this.throttle);
          stalled = 0;
          continue;
        }
        if (reason) { this.stopReason = reason; break; }
      }
      await this.stopAndCopy(bitmap);
      return await this.finish();
    } catch (err) {
      const e = this.failure ?? DroverError.from(err);
      if (!this.committed) await this.rollback(e);
      throw e;
    } finally {
      clearTimeout(timer);
      clearInterval(idle);
    }
  }

  /** Measured link throughput so far, bytes/s. */
  private linkRate(): number {
    return this.sendingMs > 0 ? (this.bytesSent * 1000) / this.sendingMs : 0;
  }

  private setPhase(p: MigrationPhase): void {
    this.phase = p;
    this.progress(true);
  }

  private progress(force = false): void {
    const now = performance.now();
    if (!force && now - this.lastProgressAt < PROGRESS_INTERVAL_MS) return;
    if (this.lastProgressAt > 0 && now > this.lastProgressAt) this.rate = ((this.bytesSent - this.lastProgressBytes) * 1000) / (now - this.lastProgressAt);
    this.lastProgressAt = now;
    this.lastProgressBytes = this.bytesSent;
    const link = this.linkRate();
    this.o.onProgress?.({
      migrationId: this.o.migrationId, phase: this.phase, round: this.round, remainingBytes: this.roundRemaining,
      dirtyRateBytesPerSec: this.dirtyRate, rateBytesPerSec: this.rate, sentBytes: this.bytesSent,
      etaMs: link > 0 ? (this.roundRemaining / Math.max(1, link - this.dirtyRate)) * 1000 : NaN, elapsedMs: now - this.t0,
    });
  }

  private fail(err: DroverError): void {
    if (this.failure) return;
    this.failure = err;
    this.signalFailed();
    this.notify();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Waits (event-driven) until `cond` holds; throws the failure if one happens first. */
  private async until(cond: () => boolean): Promise<void> {
    while (!cond()) {
      this.check();
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.check();
  }

  private handleAck(ack: Ack): void {
    this.lastAckAt = performance.now();
    switch (ack.kind) {
      case 'accepted':
        this.accepted = true;
        if (ack.windowBytes > 0) this.windowBytes = ack.windowBytes;
        break;
      case 'batch':
        while (this.inflight.length > 0 && this.inflight[0].seq <= ack.seq) {
          const f = this.inflight.shift()!;
          this.inflightBytes -= f.bytes;
          this.pool.push(f.builder);
        }
        break;
      case 'verified':
        this.verified = ack;
        break;
      case 'activated':
        this.activatedAt = ack.resumedAtMs;
        break;
    }
    this.notify();
  }

  private takeBuilder(): BatchBuilder {
    return this.pool.pop() ?? new BatchBuilder(MAX_BATCH_PAYLOAD_BYTES, 2 * BATCH_PAGES);
  }

  private async send(frame: Frame | Buffer): Promise<void> {
    this.check();
    const bytes = Buffer.isBuffer(frame) ? frame.length : 0;
    this.bytesSent += bytes;
    if (!this.o.channel.write(frame)) await Promise.race([this.o.channel.drained(), this.failed]);
    this.check();
  }

  /**
   * Sends the pages set in `bitmap`. With `skip`, pages found dirty again in the live log are
   * left for the next round (they stay dirty there).
   */
  private async sendRound(bitmap: Uint32Array, skip: boolean, final = false): Promise<void> {
    const d = this.o.domain;
    const total = popcount(bitmap);
    this.roundRemaining = total * PAGE_SIZE;
    let announce: number[] = [];
    if (this.round === 1) {
      announce = rangeTable(bitmap, d.pageCount, 0x7fffffff, d.slotPages);
      if (announce.length > MAX_ROUND_RANGES) announce = [];
    }
    // The stop-and-copy round goes unannounced: the target needs nothing from it, and every
    // frame in the downtime costs a trip through both event loops.
    if (!final) await this.send(frames.round(this.round, total, announce));
    let toSkip: Uint32Array | undefined;
    let batches = 0;
    let builder = this.takeBuilder();
    let payload = builder.payloadView();
    let words = new Int32Array(payload.buffer, payload.byteOffset, payload.length >> 2);
    let used = 0;
    let pages = 0;
    let ranges: number[] = [];
    let zeroRanges: number[] = [];
    let checksum = 0;

    const flush = async (): Promise<void> => {
      if (pages === 0 && zeroRanges.length === 0) return;
      const frame = builder.finish(++this.seq, ranges, zeroRanges, checksum, used);
      this.inflight.push({ seq: this.seq, builder, bytes: frame.length });
      this.inflightBytes += frame.length;
      this.pageBytes += used;
      await this.pacer.take(frame.length);
      await this.send(frame);
      this.roundRemaining = Math.max(0, this.roundRemaining - pages * PAGE_SIZE);
      this.progress();
      await this.until(() => this.inflightBytes < this.windowBytes);
      builder = this.takeBuilder();
      payload = builder.payloadView();
      words = new Int32Array(payload.buffer, payload.byteOffset, payload.length >> 2);
      used = 0; pages = 0; ranges = []; zeroRanges = []; checksum = 0;
      batches++;
      if (skip && batches % SKIP_REFRESH_BATCHES === 0) toSkip = d.peekDirtyLog();
    };

    if (skip) toSkip = d.peekDirtyLog();
    for (const [first, count] of dirtyRuns(bitmap, d.pageCount, BATCH_PAGES, d.slotPages)) {
      const view = d.pageView(first, count);
      // Buffer#copy is a plain memcpy; TypedArray#set from a SharedArrayBuffer is not.
      const src = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
      let runStart = -1;
      let zeroStart = -1;
      for (let i = 0; i < count; i++) {
        const pfn = first + i;
        if (skip && toSkip && testBit(toSkip, pfn)) {
          if (runStart >= 0) { ranges.push(runStart, pfn - runStart); runStart = -1; }
          if (zeroStart >= 0) { zeroRanges.push(zeroStart, pfn - zeroStart); zeroStart = -1; }
          this.roundRemaining -= PAGE_SIZE;
          continue;
        }
        src.copy(payload, used, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        const h = hashPage(words, used >> 2);
        if (h === 0) {
          if (runStart >= 0) { ranges.push(runStart, pfn - runStart); runStart = -1; }
          if (this.digest.hashes[pfn] === 0) { this.roundRemaining -= PAGE_SIZE; continue; } // target holds zeros already
          if (zeroStart < 0) zeroStart = pfn;
          this.zeroPages++;
          this.digest.set(pfn, 0);
          continue;
        }
        if (zeroStart >= 0) { zeroRanges.push(zeroStart, pfn - zeroStart); zeroStart = -1; }
        if (runStart < 0) runStart = pfn;
        checksum = foldChecksum(checksum, pfn, h);
        this.digest.set(pfn, h);
        if (this.round === 1) this.nonzeroBytes += PAGE_SIZE;
        used += PAGE_SIZE;
        pages++;
        if (used === payload.length) {
          ranges.push(runStart, pfn + 1 - runStart);
          runStart = -1;
          if (zeroStart >= 0) { zeroRanges.push(zeroStart, pfn + 1 - zeroStart); zeroStart = -1; }
          await flush();
        }
      }
      if (runStart >= 0) ranges.push(runStart, first + count - runStart);
      if (zeroStart >= 0) zeroRanges.push(zeroStart, first + count - zeroStart);
      if (ranges.length + zeroRanges.length >= BATCH_PAGES) await flush();
    }
    await flush();
    this.pool.push(builder);
    this.roundRemaining = 0;
  }

  /** Pauses the source and sends the last dirty pages, the device state and the commit. */
  private async stopAndCopy(bitmap: Uint32Array): Promise<void> {
    const d = this.o.domain;
    this.check();
    // Let the target apply everything in flight first: its backlog would otherwise count as downtime.
    await this.until(() => this.inflight.length === 0);
    this.setPhase('stopcopy');
    const t = performance.now();
    d.resetHeartbeatGap(); // the guest's next measured gap is the blackout
    this.pausedWall = performance.timeOrigin + performance.now();
    await d.pause();
    this.pausedAt = performance.now();
    const b = this.breakdown;
    b.pauseMs = this.pausedAt - t;
    const last = d.getAndClearDirtyLog();
    for (let i = 0; i < last.length; i++) bitmap[i] |= last[i];
    b.finalPages = popcount(bitmap);
    this.round++;
    this.pacer.setRate(roundRate(this.round, this.dirtyRate, this.o.policy.bandwidthBytesPerSec, true));
    await this.sendRound(bitmap, false, true);
    let mark = performance.now();
    b.finalRoundMs = mark - this.pausedAt;
    const state = Buffer.from(d.saveDeviceState());
    this.deviceBytes = state.length;
    const device = { state, checksum: checksumBytes(state) };
    b.deviceMs = performance.now() - mark;
    mark = performance.now();
    const activate = !this.o.policy.externalCommit;
    // With activate, sending Complete is the commit point: the target resumes once verified.
    this.committed = activate;
    await this.send(frames.complete(this.digest.digest(), this.seq, this.round, this.pausedWall, activate, 0, device));
    this.setPhase('verifying'); // after the send: progress reports stay out of the downtime's path
    this.sendingMs += performance.now() - t;
    if (activate) this.phase = 'activating';
    await this.until(() => this.verified !== undefined);
    this.checkDigest();
    b.verifyMs = performance.now() - mark;
    mark = performance.now();
    if (!activate) {
      this.setPhase('awaiting-commit');
      if (this.o.waitForCommit) await Promise.race([this.o.waitForCommit(), this.failed]);
      this.check();
      b.commitMs = performance.now() - mark;
      mark = performance.now();
      this.committed = true;
      this.setPhase('activating');
      await this.send(frames.activate());
    }
    await this.until(() => !Number.isNaN(this.activatedAt));
    b.activateMs = performance.now() - mark;
  }

  private checkDigest(): void {
    const mine = this.digest.digest();
    if (!this.verified || !mine.equals(this.verified.imageDigest)) {
      throw new DroverError('DATA_LOSS', `target image digest ${this.verified?.imageDigest.toString('hex')} differs from the source's ${mine.toString('hex')}`);
    }
  }

  private async finish(): Promise<MigrationResult> {
    const d = this.o.domain;
    this.o.channel.end();
    let memoryMatches = true;
    if (this.o.policy.verify) {
      // The source is paused and frozen: its memory is exactly the memory at pause.
      const actual = await ImageDigest.ofMemory(d.pageCount, d.populatedBitmap(), (pfn) => {
        const v = d.pageView(pfn, 1);
        return [new Int32Array(v.buffer, v.byteOffset, PAGE_SIZE / 4), 0];
      });
      memoryMatches = actual.equals(this.verified!.imageDigest);
    }
    d.stopDirtyLog();
    const downtimeMs = this.activatedAt - this.pausedWall;
    const totalMs = this.activatedAt - (performance.timeOrigin + this.t0);
    this.setPhase('done');
    return {
      migrationId: this.o.migrationId, vm: d.spec.name, profile: d.spec.profile, memBytes: d.spec.memBytes, mode: 'precopy',
      verified: this.o.policy.verify ? memoryMatches : false, downtimeMs, totalMs, rounds: this.round, bytesSent: this.bytesSent,
      pageBytes: this.pageBytes, zeroPages: this.zeroPages, deviceBytes: this.deviceBytes,
      throughputBytesPerSec: this.linkRate(), stopReason: this.stopReason, outcome: 'succeeded', errorCode: '', error: '',
      source: this.o.sourceName, target: this.o.targetName, nonzeroBytes: this.nonzeroBytes,
      downtimeBreakdown: { ...this.breakdown },
      ...(this.throttle > 0 ? { throttlePercent: Math.round(this.throttle * 100) } : {}),
    };
  }

  /** Before commit: tell the target to discard, fold unsent pages back, resume the source. */
  private async rollback(err: DroverError): Promise<void> {
    const d = this.o.domain;
    try { this.o.channel.write(frames.abort(`${err.code}: ${err.message}`)); } catch { /* stream gone */ }
    try { this.o.channel.end(); } catch { /* stream gone */ }
    // Every page taken from the log and not known to be on the target goes back: the current
    // round's whole bitmap, a superset of what is in flight (a round ends only once the target
    // acknowledged it). Re-sending a page is harmless; losing one is not.
    const fold = this.roundBitmap ? Uint32Array.from(this.roundBitmap) : new Uint32Array(Math.ceil(d.pageCount / 32));
    try { d.markDirty(fold); } catch { /* domain gone */ }
    try { d.stopDirtyLog(); } catch { /* domain gone */ }
    if (this.throttle > 0) { try { d.setThrottle?.(0); } catch { /* domain gone */ } }
    if (d.state() === 'paused') await d.resume();
    this.phase = err.code === 'CANCELLED' ? 'cancelled' : 'failed';
    this.progress(true);
  }
}
