/**
 * The source side of one migration: iterative pre-copy, stop-and-copy, commit or rollback
 * (design.md stages 2-5), driving a PagedDomain and a frame stream. Transport-agnostic: the node
 * agent hands it a `FrameChannel` over the gRPC Transfer stream.
 *
 * Round 1 sends every page (zero pages as flags only, and not even that when the target is
 * known to hold zeros); round n sends the pages dirtied during round n-1, skipping those dirtied
 * again while the round runs (Xen's to_skip: they would be sent twice). Dirty bits are taken
 * with get-and-clear, and folded back into the domain's log if the migration fails.
 *
 * Rollback: any failure before the source sends Complete (always with activate: protocol 2,
 * the target decides) aborts the stream, resumes the source and leaves its memory as it was.
 * After Complete the source resumes only on the target's explicit refusal (REFUSAL_CODES) or
 * when `resolveOutcome` says the target does not own the VM; Owned ends the migration; a broken
 * stream with no outcome leaves the source paused (protocol.ts, fault table).
 *
 * This file is the phase driver (source-phase.ts has the machine). Its parts: batch-window.ts
 * (batches in flight, acks, the failure), round-packer.ts (pages -> batches), source-stats.ts
 * (counters and progress), ../result.ts (the result).
 */
import { PAGE_SIZE, type PagedDomain } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import type { BatchBuilder } from '../wire/frame-codec';
import { encodingBit, frames, MAX_ROUND_RANGES, PAYLOAD_LZ4, REFUSAL_CODES, type Ack, type Fence, type Frame } from '../wire/protocol';
import { checksumBytes, ImageDigest } from '../wire/page-hash';
import { popcount, rangeTable } from '../wire/range-table';
import { Pacer, roundRate } from '../policy/rate-control';
import { decideStop, nextThrottle, RoundCurve, THROTTLE_MAX } from '../policy/stop-conditions';
import { completionTimeoutMs, PHASES_AFTER_SWITCHOVER, type MigrationPhase, type MigrationPolicy, type MigrationProgress, type MigrationResult, type StopReason } from '../types';
import { PauseClock, succeededResult } from '../result';
import { BATCH_PAGES, BatchWindow } from './batch-window';
import { BatchCompressor } from './batch-compressor';
import { hasContent, packRound, type PackedBatch, type PackLimits, type PackSink } from './round-packer';
import { SourceStats } from './source-stats';
import { runPostcopy, type PostcopyEngine } from '../postcopy/postcopy-source';
import { PostcopyRecoveryFailed } from '../postcopy/postcopy-recovery';
import { decidePageRound, type PageRoundAction } from '../policy/convergence';
import { isCommitted, SOURCE_TRANSITIONS, switchoverOf, type SourcePhase, type Switchover } from './source-phase';

export { BATCH_PAGES } from './batch-window';
export { MIN_TIMED_ROUND_BYTES, PROGRESS_INTERVAL_MS } from './source-stats';

/** Re-read the live dirty bitmap (to_skip) every this many batches. */
export const SKIP_REFRESH_BATCHES = 8;
/** Progress timeout: no page acknowledged for this long fails the migration. */
export const PROGRESS_TIMEOUT_MS = 30_000;
/** No cap on a range's length in round 1's announcement (the target prefaults whole runs). */
const ANNOUNCE_MAX_RUN = 0x7fffffff;
/** How often the progress timeout is checked, ms (a coarse check: the timeout is 30 s). */
const PROGRESS_CHECK_MS = 1000;
/** Batch limits: a batch's payload holds BATCH_PAGES pages, and so many range entries at most. */
const PACK_LIMITS: PackLimits = { maxRunPages: BATCH_PAGES, maxRangeEntries: BATCH_PAGES };

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
  /** Parallel streams: every batch goes on stream 0 from now on (post-copy). */
  pinToFirstStream?(): void;
}

/** Everything one source-side migration needs. */
export interface PrecopySourceOptions {
  /** The migration's id (messages and progress events). */
  migrationId: string;
  /** The VM to migrate, running on this node. */
  domain: PagedDomain;
  /** The frame stream to the target. */
  channel: FrameChannel;
  /** How the migration may run (resolved: every field set). */
  policy: MigrationPolicy;
  /** This node's name, for the result. */
  sourceName: string;
  /** The target's name, for the result. */
  targetName: string;
  /** Migration token and id from PrepareIncoming. */
  token: string;
  /** Called with progress at most every PROGRESS_INTERVAL_MS and at each phase change. */
  onProgress?: (p: MigrationProgress) => void;
  /** Cancels the migration (honoured in every phase before switchover). */
  signal?: AbortSignal;
  /** The switchover's fenced intent, passed to the target in Start (cluster mode). */
  fence?: Fence;
  /**
   * After Complete, when the stream failed with neither Owned nor an explicit refusal: finds out
   * whether the target owns the VM ('owned': the source destroys its copy), does not ('refused':
   * the source resumes), lost it ('lost': the guest ran there and died with its agent; the source
   * discards its stale copy) or cannot tell ('unknown': the source stays paused). Absent = unknown.
   */
  resolveOutcome?: (cause: DroverError) => Promise<SwitchoverOutcome>;
  /** Post-copy recovery: opens a new stream to the target (postcopy-recovery.ts); absent, a dropped post-copy stream loses the VM. */
  reconnect?: () => FrameChannel;
  /** A line for the agent's log (post-copy recovery). */
  log?: (e: Record<string, unknown>) => void;
}

/** What the source learns of a switchover whose stream broke after Complete. */
export type SwitchoverOutcome = 'owned' | 'refused' | 'lost' | 'unknown';

/** The result's per-round fixed cost, when the migration had a round to measure it by. */
function roundOverheadOf(s: SourceStats): Pick<MigrationResult, 'roundOverheadMs'> {
  const ms = s.roundOverheadMs();
  return ms === undefined ? {} : { roundOverheadMs: Math.round(ms * 100) / 100 };
}

/** A pack sink writing into the payload region of `builder`. */
function sinkOf(builder: BatchBuilder, toSkip: Uint32Array | undefined): PackSink {
  const payload = builder.payloadView();
  return { payload, words: new Int32Array(payload.buffer, payload.byteOffset, payload.length >> 2), toSkip };
}

/** Points `sink` at the payload region of `builder` (keeps its skip bitmap). */
function writeInto(sink: PackSink, builder: BatchBuilder): void {
  const next = sinkOf(builder, sink.toSkip);
  sink.payload = next.payload;
  sink.words = next.words;
}

/** Runs one migration from the source side. */
export class PrecopySource {
  private phase: SourcePhase = { kind: 'reserving' };
  private readonly digest: ImageDigest;
  private readonly pacer = new Pacer();
  private readonly window = new BatchWindow();
  private readonly stats = new SourceStats();
  /** The bitmap the current round works through (taken from the dirty log): folded back on failure. */
  private roundBitmap: Uint32Array | undefined;
  /** Auto-converge throttle applied to the source's vCPUs (0 = none). */
  private throttle = 0;
  private stopReason: StopReason | '' = '';
  /** The guest's WSS as the rounds measure it (the stop rule's model input). */
  private readonly curve = new RoundCurve();
  private readonly pause = new PauseClock();
  /** Page-batch compression, once the target said which encodings it decodes. */
  private compressor = new BatchCompressor('never', false);
  /** Post-copy: chosen at the end of pre-copy; `lost` once it failed after the switch (the source never resumes). */
  private postcopyChosen = false;
  private lost = false;
  /** Set when the outcome after Complete stayed unknown: the VM is left paused here (switchoverUnresolved). */
  private unresolved = false;
  /** Why the policy chose what it chose (the result's policyReason); when throttling began (performance.now()). */
  private policyReason = '';
  private throttleSince = 0;
  /** Post-copy's figures for the result. */
  private extra: Partial<MigrationResult> = {};
  /** The stream to the target: o.channel, or the latest post-copy reconnection's; `epoch` tells the current one's acks from a dead one's. */
  private channel!: FrameChannel;
  private epoch = 0;

  constructor(private readonly o: PrecopySourceOptions) {
    this.digest = new ImageDigest(o.domain.pageCount);
    this.bind(o.channel);
    o.signal?.addEventListener('abort', () => {
      const p = this.phase;
      if (!PHASES_AFTER_SWITCHOVER.has(p.kind) && !isCommitted(p)) this.window.fail(new DroverError('CANCELLED', `migration ${o.migrationId} cancelled in phase ${p.kind}`));
    });
  }

  /** Makes `ch` the stream to the target: its acks and failure reach the window; an older stream's no longer do. */
  private bind(ch: FrameChannel): void {
    const epoch = ++this.epoch;
    this.channel = ch;
    ch.onAck((ack) => { if (epoch === this.epoch) this.window.handleAck(ack); }, (err) => { if (epoch === this.epoch) this.window.fail(err); });
  }

  /** Post-copy recovery: ends the current stream and binds a new one (o.reconnect). */
  private reopen(): void {
    if (!this.o.reconnect) throw new DroverError('INTERNAL', `migration ${this.o.migrationId}: reopen without a reconnect option`);
    const old = this.channel;
    this.epoch++; // the old stream's late errors are no longer this migration's
    try { old.end(); } catch { /* stream gone */ }
    this.bind(this.o.reconnect());
  }

  /** True after the switch to post-copy until it ended (the target runs the VM with pages still here). */
  get inPostcopy(): boolean {
    return this.postcopyChosen && isCommitted(this.phase) && this.phase.kind !== 'done' && !this.lost;
  }

  /** How long the source has been paused in this migration, ms (MigrationResult.pausedMs; read on failure too). */
  get pausedMs(): number {
    return this.pause.ms;
  }

  /** True once the VM was lost after the switch (post-copy failed, or the target lost it after Complete): the source must discard its stale copy, never resume it. */
  get vmLost(): boolean {
    return this.lost;
  }

  /** True once the outcome after Complete could not be learned: the source stays paused (the guest may run on the target) until an operator resolves it (VmResume). */
  get switchoverUnresolved(): boolean {
    return this.unresolved;
  }

  /** The current phase (read by cancel to refuse after switchover). */
  get currentPhase(): MigrationPhase {
    return this.phase.kind;
  }

  /** Runs the migration; resolves with the result on success, rejects after rolling back. */
  async run(): Promise<MigrationResult> {
    const timeoutMs = completionTimeoutMs(this.o.policy, this.o.domain.spec.memBytes);
    const stopWatchdogs = this.startWatchdogs(timeoutMs);
    try {
      await this.handshake();
      const bitmap = await this.precopyRounds(timeoutMs);
      if (this.postcopyChosen) return await this.postcopy(bitmap);
      await this.stopAndCopy(bitmap);
      return await this.finish();
    } catch (err) {
      const e = this.window.failure ?? DroverError.from(err);
      if (this.lost || this.phase.kind === 'failed') throw err; // lost, or already rolled back (post-copy's switchNeverResumed)
      if (!isCommitted(this.phase)) await this.rollback(e);
      else return await this.afterComplete(e);
      throw e;
    } finally {
      stopWatchdogs();
    }
  }

  /**
   * A failure after Complete: an explicit refusal resumes the source; otherwise the outcome is
   * resolved (etcd, the target's lease); 'owned' finishes as a success, 'unknown' stays paused.
   */
  private async afterComplete(e: DroverError): Promise<MigrationResult> {
    const id = this.o.migrationId;
    if (REFUSAL_CODES.has(e.code)) {
      await this.rollback(e, true);
      throw new DroverError(e.code, `target refused migration ${id} after Complete; the source resumed: ${e.message}`, { cause: e });
    }
    const outcome = this.o.resolveOutcome ? await this.o.resolveOutcome(e).catch(() => 'unknown' as const) : 'unknown';
    if (outcome === 'owned') {
      if (this.window.activatedAt === undefined) this.window.activatedAt = performance.timeOrigin + performance.now();
      return this.finish();
    }
    if (outcome === 'refused') {
      await this.rollback(e, true);
      throw new DroverError('ABORTED', `migration ${id}: the target does not own the VM after Complete (${e.message}); the source resumed`, { cause: e });
    }
    if (outcome === 'lost') {
      this.lost = true;
      throw new DroverError('DATA_LOSS', `migration ${id}: VM ${this.o.domain.spec.name} is LOST: the target ${this.o.targetName} resumed it after Complete and lost it (${e.message}); the stale copy on the source ${this.o.sourceName} is discarded, never resumed (the guest ran past it)`, { cause: e });
    }
    this.unresolved = true;
    throw new DroverError('UNAVAILABLE', `migration ${id}: switchover outcome unknown after Complete (${e.message}); the VM stays paused on the source ${this.o.sourceName} (it may run on ${this.o.targetName})`, { cause: e });
  }

  /** The one place the phase changes: along SOURCE_TRANSITIONS, reported unless `report` is false. */
  private enter(next: SourcePhase, report = true): void {
    const from = this.phase.kind;
    if (!SOURCE_TRANSITIONS[from].includes(next.kind)) {
      throw new DroverError('INTERNAL', `migration ${this.o.migrationId}: phase ${from} cannot go to ${next.kind}`);
    }
    this.phase = next;
    if (report) this.progress(true);
  }

  private progress(force = false): void {
    const p = this.stats.progress(this.o.migrationId, this.phase.kind, force);
    if (p) this.o.onProgress?.(p);
  }

  /** The completion timeout and the progress timeout; returns their stop. */
  private startWatchdogs(timeoutMs: number): () => void {
    const id = this.o.migrationId;
    const w = this.window;
    const timer = setTimeout(() => w.fail(new DroverError('DEADLINE_EXCEEDED', `migration ${id} exceeded its completion timeout of ${Math.round(timeoutMs)} ms`)), timeoutMs);
    const idle = setInterval(() => {
      if (w.inFlightCount > 0 && performance.now() - w.lastAckAt > PROGRESS_TIMEOUT_MS) {
        w.fail(new DroverError('DEADLINE_EXCEEDED', `migration ${id}: no progress for ${PROGRESS_TIMEOUT_MS} ms (target stopped acknowledging pages)`));
      }
    }, PROGRESS_CHECK_MS);
    return () => { clearTimeout(timer); clearInterval(idle); };
  }

  /** Start, until the target accepted it; then the dirty log runs. */
  private async handshake(): Promise<void> {
    const d = this.o.domain;
    this.channel.write(frames.start(this.o.migrationId, this.o.token, PAGE_SIZE, d.pageCount, this.o.fence));
    await this.window.until(() => this.window.accepted);
    const lz4 = (this.window.peerEncodings & encodingBit(PAYLOAD_LZ4)) !== 0;
    this.compressor = new BatchCompressor(this.o.policy.compress ?? 'auto', lz4);
    this.window.onDelivered = (seq, at) => this.compressor.delivered(seq, at);
    d.startDirtyLog();
    this.enter({ kind: 'precopy' });
  }

  /** Pre-copy rounds until a stop condition holds; returns the bitmap the last round left dirty. */
  private async precopyRounds(timeoutMs: number): Promise<Uint32Array> {
    const d = this.o.domain;
    const s = this.stats;
    // Round 1: every page that may be non-zero (never-touched pages are zero on both sides).
    let bitmap = d.populatedBitmap();
    this.roundBitmap = bitmap;
    let previousSent = NaN; // shouldStop's "no previous round"
    let stalled = 0;
    let lastDirty = Infinity;
    for (;;) {
      const r = await this.precopyRound(bitmap);
      bitmap = r.dirty;
      stalled = r.dirtyBytes >= lastDirty ? stalled + 1 : 0;
      lastDirty = r.dirtyBytes;
      this.curve.observe(r.ms, r.dirtyBytes, this.throttle);
      const reason = decideStop({
        round: s.round, dirtyBytes: r.dirtyBytes, sentThisRound: r.sent, sentPreviousRound: previousSent, sentTotal: s.pageBytes,
        throughputBytesPerSec: s.predictionRate(), memBytes: d.spec.memBytes, elapsedMs: s.elapsedMs(), roundsWithoutProgress: stalled,
        wss: this.curve.at(this.throttle), dirtyRateBytesPerSec: s.dirtyRate,
      }, this.o.policy, timeoutMs);
      previousSent = r.sent;
      const next = this.nextStep(reason);
      if (next.action === 'postcopy') {
        this.postcopyChosen = true;
        this.policyReason = next.reason;
        this.stopReason = reason ?? 'forced';
        return bitmap;
      }
      if (next.action === 'throttle') { this.throttleStep(next.reason); stalled = 0; continue; }
      if (reason) { this.stopReason = reason; return bitmap; }
    }
  }

  /** One pre-copy round of `bitmap`, until the target applied it; returns what it sent and left dirty. */
  private async precopyRound(bitmap: Uint32Array): Promise<{ sent: number; dirty: Uint32Array; dirtyBytes: number; ms: number }> {
    const s = this.stats;
    s.round++;
    const before = s.pageBytes;
    const wireBefore = s.bytesSent;
    const roundStart = performance.now();
    this.pacer.setRate(roundRate(this.o.policy.bandwidthBytesPerSec));
    await this.sendRound(bitmap, true);
    // A round ends when the target has applied it: the rate that predicts the last round's
    // length is the rate pages land at, not the rate they fill local buffers at.
    await this.window.untilDrained();
    this.compressor.roundEnded();
    const roundMs = performance.now() - roundStart;
    const dirty = this.o.domain.getAndClearDirtyLog();
    this.roundBitmap = dirty;
    const dirtyBytes = popcount(dirty) * PAGE_SIZE;
    s.recordRound(s.bytesSent - wireBefore, roundMs, dirtyBytes, this.pacer.bytesPerSec, this.throttle);
    return { sent: s.pageBytes - before, dirty, dirtyBytes, ms: roundMs };
  }

  /** The policy's next step after a round with stop condition `reason` (convergence.ts decidePageRound). */
  private nextStep(reason: StopReason | null): PageRoundAction {
    const d = this.o.domain, s = this.stats;
    return decidePageRound({
      round: s.round, stop: reason, dirtyRateBytesPerSec: s.dirtyRate, linkRateBytesPerSec: s.predictionRate(),
      postcopyAvailable: this.window.postcopyOffered && !!d.postcopy,
      canThrottle: this.o.policy.autoConverge !== 'never' && !!d.setThrottle && this.throttle < THROTTLE_MAX, throttling: this.throttle > 0,
    }, this.o.policy);
  }

  /**
   * Auto-converge (QEMU's, vMotion's SDPS): a guest that dirties faster than the link moves
   * pages is slowed step by step instead of being stopped with a large last round. Once
   * throttling, every round that still does not fit the target takes another step.
   */
  private throttleStep(reason: string): void {
    if (this.throttle === 0) { this.throttleSince = performance.now(); this.policyReason = reason; }
    this.throttle = nextThrottle(this.throttle);
    this.o.domain.setThrottle?.(this.throttle);
  }

  private async send(frame: Frame | Buffer): Promise<void> {
    this.window.check();
    this.stats.bytesSent += Buffer.isBuffer(frame) ? frame.length : 0;
    if (!this.channel.write(frame)) await this.window.race(this.channel.drained());
    this.window.check();
  }

  /** Round 1's range table, for the target to fault its pages in ahead (empty when too long, and in later rounds). */
  private announcement(bitmap: Uint32Array): number[] {
    if (this.stats.round !== 1) return [];
    const d = this.o.domain;
    const table = rangeTable(bitmap, d.pageCount, ANNOUNCE_MAX_RUN, d.slotPages);
    return table.length > MAX_ROUND_RANGES ? [] : table;
  }

  /**
   * Sends the pages set in `bitmap`. With `skip`, pages found dirty again in the live log are
   * left for the next round (they stay dirty there).
   */
  private async sendRound(bitmap: Uint32Array, skip: boolean, final = false): Promise<void> {
    const d = this.o.domain;
    const total = popcount(bitmap);
    this.stats.roundRemaining = total * PAGE_SIZE;
    // The stop-and-copy round goes unannounced: the target needs nothing from it, and every
    // frame in the downtime costs a trip through both event loops.
    if (!final) await this.send(frames.round(this.stats.round, total, this.announcement(bitmap)));
    let builder = this.window.takeBuilder();
    const sink = sinkOf(builder, skip ? d.peekDirtyLog() : undefined);
    let batches = 0;
    for (const batch of packRound(bitmap, d, this.digest, sink, PACK_LIMITS)) {
      this.stats.settle(batch.settled);
      if (!hasContent(batch)) continue; // the round's last batch came out empty
      await this.flush(builder, batch, final);
      builder = this.window.takeBuilder();
      writeInto(sink, builder);
      batches++;
      if (skip && batches % SKIP_REFRESH_BATCHES === 0) sink.toSkip = d.peekDirtyLog();
    }
    this.window.recycle(builder);
    this.stats.roundRemaining = 0;
  }

  /** Sends one packed batch (LZ4-encoded when the compressor says so), then waits for room in the window. */
  private async flush(builder: BatchBuilder, b: PackedBatch, final: boolean): Promise<void> {
    const s = this.stats;
    const seq = this.window.nextSeq();
    const payload = builder.payloadView();
    const encoded = this.compressor.encode(seq, payload.subarray(0, b.payloadBytes), final);
    if (encoded) encoded.copy(payload, 0);
    const frame = encoded
      ? builder.finish(seq, b.ranges, b.zeroRanges, b.checksum, encoded.length, PAYLOAD_LZ4)
      : builder.finish(seq, b.ranges, b.zeroRanges, b.checksum, b.payloadBytes);
    this.window.push(seq, builder, frame.length);
    s.pageBytes += b.payloadBytes;
    s.zeroPages += b.zeroPages;
    s.contentPages(b.ranges, this.o.domain.pageCount);
    await this.pacer.take(frame.length);
    await this.send(frame);
    s.sent(b.pages);
    this.progress();
    await this.window.untilRoom();
  }

  /** Pauses the source and sends the last dirty pages, the device state and the commit. */
  private async stopAndCopy(bitmap: Uint32Array): Promise<void> {
    this.window.check();
    // Let the target apply everything in flight first: its backlog would otherwise count as downtime.
    await this.window.untilDrained();
    this.enter({ kind: 'stopcopy', commitSent: false });
    const t = performance.now();
    const sw = await this.pauseSource(t);
    const b = sw.breakdown;
    await this.sendFinalRound(bitmap);
    let mark = performance.now();
    b.finalRoundMs = mark - sw.pausedAt;
    const state = Buffer.from(this.o.domain.saveDeviceState());
    this.stats.deviceBytes = state.length;
    const device = { state, checksum: checksumBytes(state) };
    b.deviceMs = performance.now() - mark;
    mark = performance.now();
    const completeWall = performance.timeOrigin + mark;
    // Sending Complete (always with activate) is the commit point: the target resumes once verified.
    this.enter({ kind: 'stopcopy', switchover: sw, commitSent: true }, false);
    await this.send(frames.complete(this.digest.digest(), this.window.lastSeq, this.stats.round, sw.pausedWall, true, 0, device));
    this.enter({ kind: 'verifying', switchover: sw, commitSent: true }); // after the send: progress reports stay out of the downtime's path
    this.stats.sendingMs += performance.now() - t;
    this.enter({ kind: 'activating', switchover: sw }, false);
    await this.window.until(() => this.window.verified !== undefined);
    b.verifyMs = performance.now() - mark;
    mark = performance.now();
    await this.window.until(() => this.window.activatedAt !== undefined);
    b.activateMs = performance.now() - mark;
    b.resumeMs = Math.max(0, (this.window.activatedAt ?? completeWall) - completeWall);
    // Downtime ended; the target now records its ownership (cluster mode) and says Owned.
    mark = performance.now();
    await this.window.until(() => this.window.owned);
    b.commitMs = performance.now() - mark;
  }

  /**
   * Post-copy from `bitmap` (postcopy-source.ts). A failure after the switch is DATA_LOSS: the
   * source never resumes (the target ran the guest). Before Owned, a target's explicit refusal
   * still resumes the source as in pre-copy (the target destroyed its copy).
   */
  private async postcopy(bitmap: Uint32Array): Promise<MigrationResult> {
    this.pacer.setRate(this.o.policy.bandwidthBytesPerSec);
    const engine: PostcopyEngine = {
      migrationId: this.o.migrationId, domain: this.o.domain, channel: this.channel, window: this.window, stats: this.stats, digest: this.digest,
      pauseSource: (t) => this.pauseSource(t), sendPages: (b) => this.sendRound(b, false, true), send: (f) => this.send(f), enter: (p, r) => this.enter(p, r),
      token: this.o.token, pageCount: this.o.domain.pageCount, canReconnect: !!this.o.reconnect, reopen: () => this.reopen(), log: (e) => this.o.log?.(e),
    };
    try {
      const out = await runPostcopy(engine, bitmap);
      this.extra = { mode: 'postcopy', pageWaits: out.pageWaits, pageWaitP50Ms: out.pageWaitP50Ms, pageWaitP99Ms: out.pageWaitP99Ms, allPresentMs: out.allPresentMs,
        ...(out.recoveries > 0 ? { postcopyStalledMs: out.stalledMs, postcopyRecoveries: out.recoveries } : {}) };
      return await this.finish();
    } catch (err) {
      const e = err instanceof DroverError ? err : this.window.failure ?? DroverError.from(err);
      if (!isCommitted(this.phase) || (!(e instanceof PostcopyRecoveryFailed) && !this.window.owned && REFUSAL_CODES.has(e.code))) throw e;
      if (e instanceof PostcopyRecoveryFailed && await this.switchNeverResumed(e)) {
        await this.rollback(e, true);
        throw new DroverError('ABORTED', `migration ${this.o.migrationId}: the post-copy switch never resumed the VM on the target (it gave its copy up: ${e.message}); the source resumed`, { cause: e });
      }
      this.lost = true;
      try { this.channel.end(); } catch { /* stream gone */ }
      throw new DroverError('DATA_LOSS', `migration ${this.o.migrationId}: post-copy failed after the switch (${e.code}: ${e.message}); VM ${this.o.domain.spec.name} is LOST: the target lacks pages and the source never resumes after the switch`, { cause: e });
    }
  }

  /**
   * Post-copy recovery failed before the target said Activated: asks the target (or etcd) whether
   * it ever resumed the guest. Only an explicit "does not own it" (its copy discarded before any
   * resume: the switch frame never reached it) lets the source resume; anything else loses the VM.
   */
  private async switchNeverResumed(e: DroverError): Promise<boolean> {
    if (this.window.activatedAt !== undefined || !this.o.resolveOutcome) return false;
    const outcome = await this.o.resolveOutcome(e).catch(() => 'unknown' as const);
    this.o.log?.({ msg: 'post-copy recovery failed before Activated; the target was asked whether it resumed the guest', outcome });
    return outcome === 'refused';
  }

  /** Pauses the source (stop-and-copy began at `t`): the switchover clock starts. */
  private async pauseSource(t: number): Promise<Switchover> {
    const d = this.o.domain;
    d.resetHeartbeatGap(); // the guest's next measured gap is the blackout
    const pausedWall = performance.timeOrigin + performance.now();
    this.pause.start(pausedWall);
    await d.pause();
    const pausedAt = performance.now();
    const breakdown = { pauseMs: pausedAt - t, finalRoundMs: 0, finalPages: 0, deviceMs: 0, verifyMs: 0, commitMs: 0, activateMs: 0 };
    const sw: Switchover = { pausedWall, pausedAt, breakdown };
    this.enter({ kind: 'stopcopy', switchover: sw, commitSent: false }, false);
    return sw;
  }

  /** The paused source's last round: `bitmap` plus what the guest dirtied since (no to_skip: it is paused). */
  private async sendFinalRound(bitmap: Uint32Array): Promise<void> {
    const sw = switchoverOf(this.phase);
    const last = this.o.domain.getAndClearDirtyLog();
    for (let i = 0; i < last.length; i++) bitmap[i] |= last[i];
    if (sw) sw.breakdown.finalPages = popcount(bitmap);
    this.stats.round++;
    this.pacer.setRate(roundRate(this.o.policy.bandwidthBytesPerSec));
    await this.sendRound(bitmap, false, true);
  }

  /** With policy.verify: the paused source's memory has the digest the target verified. */
  private async memoryMatches(): Promise<boolean> {
    const d = this.o.domain;
    // The source is paused and frozen: its memory is exactly the memory at pause.
    const actual = await ImageDigest.ofMemory(d.pageCount, d.populatedBitmap(), (first, count) => {
      const v = d.pageView(first, count);
      return new Int32Array(v.buffer, v.byteOffset, v.byteLength >> 2);
    }, d.slotPages);
    const verified = this.window.verified;
    return verified !== undefined && actual.equals(verified.imageDigest);
  }

  private async finish(): Promise<MigrationResult> {
    const d = this.o.domain;
    const s = this.stats;
    const sw = switchoverOf(this.phase);
    const activatedAt = this.window.activatedAt;
    if (!sw || activatedAt === undefined) throw new DroverError('INTERNAL', `migration ${this.o.migrationId}: finish in phase ${this.phase.kind} before activation`);
    this.channel.end();
    const verified = this.o.policy.verify ? await this.memoryMatches() : false;
    d.stopDirtyLog();
    this.pause.end(); // Owned: the source's pause ends with its copy
    const result: MigrationResult = succeededResult({
      migrationId: this.o.migrationId, vm: d.spec.name, profile: d.spec.profile, memBytes: d.spec.memBytes, mode: 'precopy',
      verified, downtimeMs: activatedAt - sw.pausedWall, totalMs: activatedAt - (performance.timeOrigin + s.t0), rounds: s.round, bytesSent: s.bytesSent,
      pageBytes: s.pageBytes, zeroPages: s.zeroPages, deviceBytes: s.deviceBytes,
      throughputBytesPerSec: s.linkRate(), stopReason: this.stopReason,
      source: this.o.sourceName, target: this.o.targetName, nonzeroBytes: s.nonzeroBytes,
      downtimeBreakdown: sw.breakdown, pausedMs: this.pause.ms,
      ...(this.throttle > 0 ? { throttlePercent: Math.round(this.throttle * 100) } : {}),
      compressedBatches: this.compressor.stats.batches, compressedPageBytes: this.compressor.stats.pageBytes, compressedBytes: this.compressor.stats.encodedBytes,
      compressReason: this.compressor.reason,
      ...roundOverheadOf(s),
    });
    Object.assign(result, this.extra, this.policyOf(sw.pausedAt)); // post-copy: mode and the guest's page waits
    this.enter({ kind: 'done', result });
    return result;
  }

  /** The policy the migration ended with, why, and how long the guest ran throttled before the pause at `pausedAt`. */
  private policyOf(pausedAt: number): Pick<MigrationResult, 'policy' | 'policyReason' | 'throttledMs'> {
    const policy = this.postcopyChosen ? 'postcopy' : this.throttle > 0 ? 'throttle' : 'precopy';
    const throttledMs = this.throttleSince > 0 ? Math.round((pausedAt - this.throttleSince) * 10) / 10 : 0;
    return { policy, policyReason: this.policyReason || `pre-copy: ${this.stopReason || 'converged'}`, throttledMs };
  }

  /** Before commit (or on the target's refusal after it): tell the target to discard, fold unsent pages back, resume the source. */
  private async rollback(err: DroverError, afterComplete = false): Promise<void> {
    const d = this.o.domain;
    try { this.channel.write(frames.abort(`${err.code}: ${err.message}`)); } catch { /* stream gone */ }
    try { this.channel.end(); } catch { /* stream gone */ }
    // Every page taken from the log and not known to be on the target goes back: the current
    // round's whole bitmap, a superset of what is in flight (a round ends only once the target
    // acknowledged it). Re-sending a page is harmless; losing one is not.
    const fold = this.roundBitmap ? Uint32Array.from(this.roundBitmap) : new Uint32Array(Math.ceil(d.pageCount / 32));
    try { d.markDirty(fold); } catch { /* domain gone */ }
    try { d.stopDirtyLog(); } catch { /* domain gone */ }
    if (this.throttle > 0) { try { d.setThrottle?.(0); } catch { /* domain gone */ } }
    if (d.state() === 'paused') await d.resume();
    this.pause.end();
    if (afterComplete) { this.enter({ kind: 'failed', error: err }); return; }
    this.enter(err.code === 'CANCELLED' ? { kind: 'cancelled', error: err } : { kind: 'failed', error: err });
  }
}
