/**
 * The target side of one migration: the receiver's state machine of protocol.ts, applying
 * frames to an incoming (paused, empty) domain. Every page applied is hashed from guest RAM,
 * checked against its batch checksum and recorded in the image digest; Complete is accepted
 * only when the source's digest equals the one the receiver built itself.
 *
 * The state is a discriminated union (`ReceiverPhase`) that only `enter` changes, along
 * RECEIVER_TRANSITIONS; the agent and the QEMU tunnel move it through methods.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { PAGE_SIZE, type PagedDomain } from '../../hypervisor/types';
import { DroverError, failedPrecondition, invalidArgument } from '../../lib/errors';
import { capText } from '../../lib/grpc-status';
import { hashPage, foldChecksum, checksumBytes, ImageDigest } from '../wire/page-hash';
import { decodePayload, decodePayloadInto } from '../wire/payload-codec';
import { copyBytes } from '../wire/frame-codec';
import { acks, checkRangeTable, validateBatch, versionMismatch, BULK_MODES, MAX_STREAMS, PAYLOAD_RAW, PROTOCOL_VERSION, type Ack, type Fence, type Frame } from '../wire/protocol';
import { AppliedSeqs } from './applied-seqs';
import { PostcopyTarget } from '../postcopy/postcopy-target';

/** Longest piece of a peer's text (an Abort reason) the receiver puts into its errors and logs. */
export const MAX_PEER_TEXT_BYTES = 256;

/** The bulk channel a target offers (protocol.ts "Bulk channel"): its listener's Start.bulk mode and port. */
export interface BulkChannelOffer {
  mode: string;
  port: number;
}

/** States of an incoming migration (protocol.ts has the diagram). */
export type ReceiverState = 'prepared' | 'receiving' | 'tunnel' | 'device-loaded' | 'postcopy' | 'verified' | 'active' | 'aborted';

/** One state of an incoming migration, with its own data. */
export type ReceiverPhase =
  | { state: 'prepared' }
  /** Start accepted: page batches come. */
  | { state: 'receiving' }
  /** Start accepted for a QEMU tunnel: qemu-target.ts takes the frames. */
  | { state: 'tunnel' }
  | { state: 'device-loaded' }
  /** Post-copy: the VM runs here while pages still come from the source (a failure loses it). */
  | { state: 'postcopy'; pausedAtMs: number }
  /** Complete accepted; `pausedAtMs` is the source's pause, wall clock. */
  | { state: 'verified'; pausedAtMs: number }
  | { state: 'active'; pausedAtMs: number }
  /** Discarded (from any state); keeps the source's pause if Complete had come. */
  | { state: 'aborted'; pausedAtMs?: number };

/** Where each state may go next. */
export const RECEIVER_TRANSITIONS: { readonly [K in ReceiverState]: readonly ReceiverState[] } = {
  prepared: ['receiving', 'tunnel', 'aborted'],
  receiving: ['device-loaded', 'aborted'],
  tunnel: ['verified', 'aborted'],
  'device-loaded': ['verified', 'postcopy', 'aborted'],
  postcopy: ['verified', 'aborted'],
  verified: ['active', 'aborted'],
  active: ['aborted'],
  aborted: ['aborted'],
};

/** One incoming migration on the target. */
export class IncomingMigration {
  private phase: ReceiverPhase = { state: 'prepared' };
  private readonly digest: ImageDigest;
  private lastSeq = 0;
  /** Parallel streams: which batch seqs were applied, from any stream (protocol.ts "Parallel streams"). */
  private readonly seqs = new AppliedSeqs();
  /** Streams of this migration (Start.stream_count), and the secondaries that joined. */
  private streamCount = 1;
  private readonly joined = new Set<number>();
  private joinToken = '';
  private rounds = 0;
  private applied = 0;
  private prefaulted = false;
  /** Stream kind this target expects in Start: "" = page stream, "qemu" = QEMU tunnel (set by the agent). */
  tunnel = '';
  /** The switchover's fenced intent from Start (cluster mode); undefined = direct migration. */
  fence: Fence | undefined;
  /** Post-copy once switched (postcopy-target.ts). */
  private postcopy: PostcopyTarget | undefined;
  /** Sends an ack on stream 0 outside the frame order (post-copy's PageRequest); set by the agent. */
  onAck: ((a: Ack) => void) | undefined;
  /** Called right before the guest first resumes here (the agent's switchover journal); set by the agent. */
  beforeResume: (() => void) | undefined;
  /** Post-copy: the Activated ack's resume time (Resumed repeats it), and the final acks (repeated to a late reconnection). */
  private postcopyResumedAtMs = 0;
  private finalAcks: Ack[] | undefined;

  /** When the reservation was made (Date.now()). */
  readonly createdAt = Date.now();

  /** `bulk`: the bulk channel this target offers (its listener's Start.bulk mode and port), absent = none. */
  constructor(
    readonly migrationId: string,
    private readonly token: string,
    readonly domain: PagedDomain,
    readonly bulk?: BulkChannelOffer,
  ) {
    this.digest = new ImageDigest(domain.pageCount);
  }

  /** The current state. */
  get state(): ReceiverState {
    return this.phase.state;
  }

  /** Page payload bytes applied. */
  get bytes(): number {
    return this.applied;
  }

  /** Wall clock of the source's pause, from Complete (NaN before it came). */
  get pausedAtMs(): number {
    const p = this.phase;
    return 'pausedAtMs' in p && p.pausedAtMs !== undefined ? p.pausedAtMs : NaN;
  }

  /** The copy is thrown away (the agent destroys the domain). Safe to repeat, from any state. */
  markAborted(): void {
    this.postcopy?.close();
    this.seqs.abort(new DroverError('ABORTED', `migration ${this.migrationId} was discarded while Complete waited for its batches`));
    const pausedAtMs = this.pausedAtMs;
    this.enter(Number.isNaN(pausedAtMs) ? { state: 'aborted' } : { state: 'aborted', pausedAtMs });
  }

  /**
   * The QEMU tunnel's Complete: the target QEMU runs the guest (qemu-target.ts checked it), so
   * the migration is verified and active at once. `pausedAtMs` is the source's last beat.
   */
  tunnelActivated(pausedAtMs: number): void {
    this.expect('tunnel', 'Complete');
    this.enter({ state: 'verified', pausedAtMs });
    this.enter({ state: 'active', pausedAtMs });
  }

  /** The one place the state changes. */
  private enter(next: ReceiverPhase): void {
    const from = this.phase.state;
    if (!RECEIVER_TRANSITIONS[from].includes(next.state)) {
      throw failedPrecondition(`migration ${this.migrationId}: cannot go from state ${from} to ${next.state}`);
    }
    this.phase = next;
  }

  /** True when `token` is this migration's token (constant time). */
  tokenMatches(token: string): boolean {
    const a = Buffer.from(token), b = Buffer.from(this.token);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /**
   * The checks a Start (`resume` false) and a post-copy resume's Start share, in this order: the
   * version (first: a peer of another version learns that before anything else), what the
   * migration's state allows (a Start only while prepared: the token is one use; a started
   * migration takes only a resume), the token (constant time), the page geometry.
   */
  private checkStartFrame(f: Extract<Frame, { kind: 'start' }>, resume: boolean): void {
    if (f.protocolVersion !== PROTOCOL_VERSION) throw versionMismatch(f.protocolVersion);
    if (!resume && this.state !== 'prepared') throw failedPrecondition(`migration ${this.migrationId} already started (its token is used up)`);
    if (resume && !f.resume) throw failedPrecondition(`migration ${this.migrationId}: a Start without resume for a started migration`);
    if (!this.tokenMatches(f.token)) throw new DroverError('PERMISSION_DENIED', `wrong token for migration ${this.migrationId}`);
    if (f.pageSize !== PAGE_SIZE || f.pageCount !== this.domain.pageCount) {
      throw invalidArgument(resume
        ? `resume: geometry mismatch (source has ${f.pageCount} pages of ${f.pageSize} bytes)`
        : `geometry mismatch: source has ${f.pageCount} pages of ${f.pageSize} bytes, target reserved ${this.domain.pageCount} of ${PAGE_SIZE}`);
    }
  }

  /** Checks the Start frame: version, token (one use), geometry (checkStartFrame), then the streams and the stream kind. */
  start(f: Extract<Frame, { kind: 'start' }>): Ack {
    this.checkStartFrame(f, false);
    const count = f.streamCount || 1;
    if (f.streamIndex !== 0) throw failedPrecondition(`migration ${this.migrationId}: stream ${f.streamIndex} must join with its join token, after stream 0 started`);
    if (count > MAX_STREAMS) throw invalidArgument(`migration ${this.migrationId}: ${count} streams, more than the limit of ${MAX_STREAMS}`);
    const kind = (t: string) => (t ? `a ${t} tunnel` : 'drover page stream');
    if ((f.tunnel ?? '') !== this.tunnel) throw failedPrecondition(`migration ${this.migrationId}: source sends ${kind(f.tunnel ?? '')}, this target expects ${kind(this.tunnel)} (hypervisors differ)`);
    if (count > 1 && this.tunnel) throw invalidArgument(`migration ${this.migrationId}: a ${this.tunnel} tunnel runs over one stream, not ${count}`);
    if (f.fence?.vmRevision) this.fence = { vmRevision: f.fence.vmRevision, job: f.fence.job, attempt: f.fence.attempt };
    this.enter({ state: this.tunnel ? 'tunnel' : 'receiving' }); // tunnel: qemu-target.ts takes the frames from here
    const bulkPort = this.bulkOffer(f.bulk ?? '');
    // With the bulk channel stream 0 keeps the control frames and `count` sockets join as streams 1..count.
    this.streamCount = bulkPort ? count + 1 : count;
    if (this.streamCount > 1) this.joinToken = randomBytes(24).toString('base64url');
    const accepted: Ack = { ...acks.accepted(undefined, this.joinToken), ...(bulkPort ? { bulkPort } : {}) };
    // The post-copy offer sits beside the join token (page streams whose domain can wait for pages).
    return this.domain.postcopy && !this.tunnel ? { ...accepted, postcopy: true } as Ack : accepted;
  }

  /** The bulk port to offer for Start.bulk `mode` (0 = none: no offer asked for or made, a tunnel, another mode); unknown modes are INVALID_ARGUMENT. */
  private bulkOffer(mode: string): number {
    if (!BULK_MODES.includes(mode)) throw invalidArgument(`migration ${this.migrationId}: unknown bulk channel "${capText(mode, MAX_PEER_TEXT_BYTES)}" (expected ${BULK_MODES.filter(Boolean).join(' or ')}, or none)`);
    return mode && !this.tunnel && this.bulk?.mode === mode ? this.bulk.port : 0;
  }

  /** Streams this migration runs over (Start.stream_count of stream 0). */
  get streams(): number {
    return this.streamCount;
  }

  /**
   * A secondary stream's Start: the migration runs (stream 0 started it with stream_count > 1),
   * the index is in range and unused, and the join token matches (constant time). The caller
   * has checked the source identity (incoming-auth.ts). A refusal leaves the migration alone.
   */
  join(f: Extract<Frame, { kind: 'start' }>): Ack {
    if (f.protocolVersion !== PROTOCOL_VERSION) throw versionMismatch(f.protocolVersion);
    if (this.state !== 'receiving' || this.streamCount === 1) throw failedPrecondition(`migration ${this.migrationId}: stream ${f.streamIndex} cannot join in state ${this.state} (${this.streamCount} stream(s) started)`);
    if (f.streamCount !== this.streamCount || f.streamIndex < 1 || f.streamIndex >= this.streamCount) {
      throw invalidArgument(`migration ${this.migrationId}: stream ${f.streamIndex} of ${f.streamCount} does not fit the ${this.streamCount} streams stream 0 started`);
    }
    const a = Buffer.from(f.token), b = Buffer.from(this.joinToken);
    if (a.length !== b.length || !timingSafeEqual(a, b)) throw new DroverError('PERMISSION_DENIED', `wrong join token for stream ${f.streamIndex} of migration ${this.migrationId}`);
    if (this.joined.has(f.streamIndex)) throw failedPrecondition(`migration ${this.migrationId}: stream ${f.streamIndex} already joined`);
    if (!BULK_MODES.includes(f.bulk ?? '')) throw invalidArgument(`stream ${f.streamIndex}: unknown bulk channel "${capText(f.bulk ?? '', MAX_PEER_TEXT_BYTES)}"`);
    if (f.pageSize !== PAGE_SIZE || f.pageCount !== this.domain.pageCount) throw invalidArgument(`stream ${f.streamIndex}: geometry mismatch (source has ${f.pageCount} pages of ${f.pageSize} bytes)`);
    this.joined.add(f.streamIndex);
    return acks.accepted();
  }

  /**
   * Applies one frame after Start. Returns the acks to send (possibly none). Throws a
   * DroverError for anything out of order or malformed; the caller then aborts.
   *
   * Payload lifetime (the promise the agent's receive buffers rely on: bulk-socket.ts reuses a
   * frame's buffer for a later frame): once the returned promise settled, resolved or rejected,
   * nothing here holds a view of `f`'s bytes. A batch's pages are copied (or LZ4-decoded) into
   * guest RAM and hashed from there before this call first yields, in pre-copy, on any of
   * several streams (AppliedSeqs keeps only seq numbers, never a batch) and in post-copy
   * (postcopy-target.ts reads the range tables, arrays of their own); lz4-napi decodes into a
   * buffer of its own, lz4-block.ts straight into guest RAM. A Complete holds `f` only while it
   * waits for the other streams' batches: its device state is copied into the domain's registers
   * (a disk section is parsed, not kept) and its digest only compared. Whoever changes this
   * code keeps that promise (receiver-reuse.test.ts overwrites every frame right after apply).
   */
  async apply(f: Frame): Promise<Ack[]> {
    switch (f.kind) {
      case 'start':
        throw failedPrecondition(`migration ${this.migrationId}: a second Start frame`);
      case 'round':
        this.expect('receiving', 'Round');
        this.rounds = Math.max(this.rounds, f.round);
        // Round 1 fills an empty domain: fault its pages in off this thread, ahead of the stream.
        // Every table is checked, used or not; at most one prefault per migration (each is a worker thread).
        if (f.ranges.length > 0) checkRangeTable(f.ranges, this.domain.pageCount, undefined, `round ${f.round}: prefault range table`);
        if (f.round === 1 && f.ranges.length > 0 && this.domain.prefault) {
          if (this.prefaulted) throw invalidArgument(`round ${f.round}: a second prefault range table for migration ${this.migrationId} (one per migration)`);
          this.prefaulted = true;
          this.domain.prefault(f.ranges);
        }
        return [];
      case 'batch':
        if (this.postcopy && this.state === 'postcopy') return [this.applyPostcopyBatch(f)];
        this.expect('receiving', 'PageBatch');
        return [this.applyBatch(f)];
      case 'complete': {
        // Every batch up to the last seq must be applied first, whichever stream carries it.
        if (this.state === 'receiving' && this.streamCount > 1) {
          await this.seqs.untilAll(f.batches);
          this.expect('receiving', 'Complete');
        }
        if (f.postcopy) return this.postcopySwitch(f);
        if (this.state === 'postcopy') return this.postcopyFinish(f);
        if (f.device && f.device.state.length > 0) {
          this.expect('receiving', 'Complete with device state');
          this.loadDevice(f.device.state, f.device.checksum);
        }
        this.expect('device-loaded', 'Complete');
        const mine = this.digest.digest();
        if (!mine.equals(f.imageDigest)) {
          throw new DroverError('DATA_LOSS', `image digest mismatch: source says ${f.imageDigest.toString('hex')}, target holds ${mine.toString('hex')}`);
        }
        this.enter({ state: 'verified', pausedAtMs: f.pausedAtMs });
        const out: Ack[] = [acks.verified(mine, this.domain.pageCount)];
        if (f.activate) out.push(await this.activate());
        return out;
      }
      case 'activate':
        this.expect('verified', 'Activate');
        return [await this.activate()];
      case 'abort':
        throw new DroverError('ABORTED', `source aborted migration ${this.migrationId}: ${capText(f.reason, MAX_PEER_TEXT_BYTES)}`);
      case 'stream':
        throw failedPrecondition(`migration ${this.migrationId}: StreamData frame not allowed in state ${this.state} (not a tunnel)`);
    }
  }

  /** True while the VM runs here with pages still to come (post-copy): a failure now loses it. */
  get inPostcopy(): boolean {
    return this.state === 'postcopy';
  }

  /**
   * Post-copy's switch: loads the device state, marks the missing pages, resumes at once and
   * answers Activated (the digest is checked at the final Complete, once every page came).
   */
  private async postcopySwitch(f: Extract<Frame, { kind: 'complete' }>): Promise<Ack[]> {
    const d = this.domain;
    this.expect('receiving', 'Complete(postcopy)');
    if (!d.postcopy || this.tunnel) throw failedPrecondition(`migration ${this.migrationId}: this target offered no post-copy`);
    if (!f.device || f.device.state.length === 0) throw invalidArgument(`migration ${this.migrationId}: the post-copy switch carries no device state`);
    const missing = f.missing ?? [];
    checkRangeTable(missing, d.pageCount, d.slotPages, 'post-copy missing pages');
    for (let i = 0; i < missing.length; i += 2) {
      if (missing[i] < d.postcopy.hotPages) throw invalidArgument(`post-copy missing pages: range [${missing[i]}, +${missing[i + 1]}) holds a hot page (below ${d.postcopy.hotPages}, sent before the switch)`);
    }
    this.loadDevice(f.device.state, f.device.checksum);
    d.postcopy.markMissing(missing);
    this.postcopy = new PostcopyTarget(d.postcopy, this.migrationId, (a) => this.onAck?.(a));
    this.enter({ state: 'postcopy', pausedAtMs: f.pausedAtMs });
    this.beforeResume?.();
    await d.resume();
    this.postcopyResumedAtMs = performance.timeOrigin + performance.now();
    return [acks.activated(this.postcopyResumedAtMs)];
  }

  /** Post-copy recovery: the stream dropped (the link was down since `since`, performance.now()); the VM keeps running here and waits for its source. */
  detach(since?: number): void {
    if (this.state === 'postcopy') this.postcopy?.detached(since);
  }

  /** Post-copy: pages a vCPU asked the source for that have not come yet (0 outside post-copy). */
  get pagesWaitedFor(): number {
    return this.state === 'postcopy' ? this.postcopy?.pagesWaitedFor ?? 0 : 0;
  }

  /**
   * Post-copy recovery (protocol.ts): Start(resume) on a new stream. Checks version, token and
   * geometry; answers Resumed (the pages still missing here, the last batch applied), then the
   * PageRequest of the pages vCPUs wait for (their requests may have died with the old stream).
   * After the final Complete: Resumed(done) and the final acks again.
   */
  resume(f: Extract<Frame, { kind: 'start' }>): Ack[] {
    this.checkStartFrame(f, true);
    if (f.streamIndex !== 0 || (f.streamCount || 1) !== 1) throw invalidArgument(`migration ${this.migrationId}: a post-copy resume runs over one stream, not stream ${f.streamIndex} of ${f.streamCount}`);
    const pc = this.postcopy;
    const words = Math.ceil(this.domain.pageCount / 32);
    if (pc && this.state === 'active' && this.finalAcks) return [acks.resumed(new Uint32Array(words), this.lastSeq, this.postcopyResumedAtMs, true), ...this.finalAcks];
    if (!pc || this.state !== 'postcopy') throw failedPrecondition(`migration ${this.migrationId} is not in post-copy (state ${this.state}): nothing to resume`);
    const r = pc.reattached(this.domain.pageCount);
    this.streamCount = 1; // batches come on this one stream from here, in order
    const out = [acks.resumed(r.missing, this.lastSeq, this.postcopyResumedAtMs, false)];
    if (r.requested.length > 0) out.push(acks.pageRequest(r.requested));
    return out;
  }

  /** Post-copy's final Complete: every page is here and the image digest matches. */
  private postcopyFinish(f: Extract<Frame, { kind: 'complete' }>): Ack[] {
    const pc = this.postcopy!;
    pc.checkComplete();
    const mine = this.digest.digest();
    if (!mine.equals(f.imageDigest)) {
      throw new DroverError('DATA_LOSS', `post-copy image digest mismatch: source says ${f.imageDigest.toString('hex')}, target holds ${mine.toString('hex')}`);
    }
    pc.close();
    const pausedAtMs = this.pausedAtMs;
    this.enter({ state: 'verified', pausedAtMs });
    this.enter({ state: 'active', pausedAtMs });
    const w = pc.figures();
    this.finalAcks = [acks.verified(mine, this.domain.pageCount), acks.postcopyDone(w.pageWaits, w.pageWaitP50Ms, w.pageWaitP99Ms, w.allPresentMs, w.stalledMs, w.recoveries)];
    return this.finalAcks;
  }

  /** A post-copy batch: only missing pages, applied as in pre-copy, then marked present. */
  private applyPostcopyBatch(f: Extract<Frame, { kind: 'batch' }>): Ack {
    const pc = this.postcopy!;
    validateBatch(f, this.domain.pageCount, this.domain.slotPages, PAGE_SIZE);
    pc.checkBatch(f);
    const ack = this.applyBatch(f);
    pc.applied(f);
    return ack;
  }

  /** Each vCPU page wait of this post-copy so far, ms (empty without post-copy). */
  get pageWaitsMs(): readonly number[] {
    return this.postcopy ? this.domain.postcopy?.waitsMs ?? [] : [];
  }

  /** The guest's page waits so far (post-copy), or undefined. */
  get pageWaits(): ReturnType<PostcopyTarget['figures']> | undefined {
    return this.postcopy?.figures();
  }

  /** Checks and loads the vCPU/device state into the paused domain. */
  private loadDevice(state: Buffer, expected: number): void {
    const checksum = checksumBytes(state);
    if (checksum !== expected) throw invalidArgument(`device state checksum mismatch (got ${expected.toString(16)}, computed ${checksum.toString(16)})`);
    try {
      this.domain.loadDeviceState(state);
    } catch (err) {
      throw invalidArgument(`device state rejected: ${(err as Error).message}`, err);
    }
    this.enter({ state: 'device-loaded' });
  }

  private expect(state: ReceiverState, frame: string): void {
    if (this.state !== state) throw failedPrecondition(`migration ${this.migrationId}: ${frame} frame not allowed in state ${this.state}`);
  }

  private async activate(): Promise<Ack> {
    this.beforeResume?.();
    await this.domain.resume();
    this.enter({ state: 'active', pausedAtMs: this.pausedAtMs });
    return acks.activated(performance.timeOrigin + performance.now());
  }

  private applyBatch(f: Extract<Frame, { kind: 'batch' }>): Ack {
    const d = this.domain;
    if (this.streamCount > 1) this.seqs.check(f.seq);
    else if (f.seq !== this.lastSeq + 1) throw invalidArgument(`batch ${f.seq} out of order (expected ${this.lastSeq + 1})`);
    const pageBytes = validateBatch(f, d.pageCount, d.slotPages, PAGE_SIZE) * PAGE_SIZE;
    // An encoded batch of one range decodes straight into the guest's pages; others decode into a buffer first.
    const inPlace = f.encoding !== PAYLOAD_RAW && f.ranges.length === 2;
    const payload = inPlace ? undefined : decodePayload(f.seq, f.encoding, f.payload, pageBytes);
    let off = 0;
    let checksum = 0;
    for (let i = 0; i < f.ranges.length; i += 2) {
      const first = f.ranges[i], count = f.ranges[i + 1];
      const view = d.pageView(first, count);
      const bytes = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
      // copyBytes is a memcpy; Buffer#copy (TypedArray#set) into a SharedArrayBuffer is not.
      if (payload) copyBytes(payload, off, bytes, 0, count * PAGE_SIZE);
      else decodePayloadInto(f.seq, f.encoding, f.payload, pageBytes, bytes);
      off += count * PAGE_SIZE;
      const words = new Int32Array(view.buffer, view.byteOffset, (count * PAGE_SIZE) >> 2);
      for (let p = 0; p < count; p++) {
        const h = hashPage(words, p * (PAGE_SIZE >> 2));
        checksum = foldChecksum(checksum, first + p, h);
        this.digest.set(first + p, h);
      }
    }
    if (checksum !== f.checksum) throw invalidArgument(`batch ${f.seq}: checksum mismatch (got ${f.checksum.toString(16)}, computed ${checksum.toString(16)})`);
    for (let i = 0; i < f.zeroRanges.length; i += 2) {
      const first = f.zeroRanges[i], count = f.zeroRanges[i + 1];
      for (let p = first; p < first + count; p++) {
        if (this.digest.hashes[p] !== 0) {
          d.pageView(p, 1).fill(0);
          this.digest.set(p, 0);
        }
      }
    }
    this.lastSeq = Math.max(this.lastSeq, f.seq);
    if (this.streamCount > 1) this.seqs.add(f.seq);
    this.applied += pageBytes;
    return acks.batch(f.seq, this.applied);
  }
}
