/**
 * The target side of migrations on a node agent (the MigrationReceiver service): PrepareIncoming
 * reserves capacity and an empty domain, Transfer takes the stream into it, AbortIncoming and the
 * reaper release unused reservations. How the frames reach the domain is the domain's migration
 * capability (migration/strategy/incoming.ts); nothing here knows the driver.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { toServiceError } from '../../lib/grpc-status';
import { DroverError, failedPrecondition, notFound } from '../../lib/errors';
import type { Domain, Hypervisor, VmSpec } from '../../hypervisor/types';
import { validateSpec } from '../../hypervisor/spec';
import { IncomingSession } from '../../migration/strategy/incoming';
import type { BulkChannelOffer } from '../../migration/receiver/receiver';
import { decodeFrame, encodeAck } from '../../migration/wire/frame-codec';
import type { Ack, Frame } from '../../migration/wire/protocol';
import { PROTOCOL_VERSION, RESERVATION_TTL_MS, RECEIVE_IDLE_TIMEOUT_MS, versionMismatch, MAX_FRAME_BYTES } from '../../migration/wire/protocol';
import { widenReceiveWindow } from '../../lib/grpc-window';
import { poolReceiveBuffers } from '../../migration/transport/grpc-receive-pool';
import { specFromWire } from './client/agent-codec';
import type { AgentLog } from './outgoing-migrations';
import type { VmHost } from './vm-host';
import type * as wire from '../../proto/generated/drover-v1';
import type { Input } from '../../proto/load';
import { peerIdentity, type CallWithAuthContext } from '../../lib/pki/grpc-credentials';
import type { PeerCertificate } from 'node:tls';
import type { BulkSocket } from '../../migration/transport/bulk-socket';
import type { MessageStream } from '../../migration/qemu/qemu-tunnel';
import { ReservationGuard } from './incoming-auth';
import { RecordOutcomeUnknown, recordOwnership, settleUnknownRecord, type ClusterLink } from './switchover';
import { acks } from '../../migration/wire/protocol';
import { agentMetrics } from './agent-metrics';
import { SwitchoverOutcomes, type FinishedOutcome, type OutcomeAnswer } from './switchover-outcomes';
import { failpoint } from '../../lib/failpoints';
import { PostcopyHolds } from './postcopy-holds';
import type { OutcomeJournal } from './outcome-journal';


/** Whether this process has logged that a Transfer call's receive buffers could not be pooled (logged once). */
let unpooledLogged = false;
/** The incoming migrations of one node. */
export class IncomingMigrations {
  /** `guard`: who may use a reservation (incoming-auth.ts); plain text without TLS checks by default. */
  constructor(private readonly host: VmHost, private readonly nodeId: string, private readonly hypervisor: Hypervisor, private readonly log: AgentLog,
    private readonly guard = new ReservationGuard(false)) {}

  /** Cluster mode (the agent registered in etcd): a resumed VM is recorded as owned here (switchover.ts). */
  cluster: ClusterLink | undefined;

  /** The switchover journal (outcome-journal.ts): lets a restarted agent answer its earlier process's sources. Absent: answers from memory only. */
  journal: OutcomeJournal | undefined;

  /**
   * The bulk channel this node offers (its listener's mode and port), set once the listener runs
   * (before the gRPC server binds, so before any PrepareIncoming); each reservation gets it at
   * construction. undefined = none.
   */
  bulkOffer: BulkChannelOffer | undefined;
  /** Post-copy migrations held from the switch on (postcopy-holds.ts): a dropped stream waits for the source to reconnect. */
  readonly holds = new PostcopyHolds<TransferCall>((e) => this.log(e), (m, e) => void this.lose(m, e), (id) => this.guard.forget(id));

  /** The Transfer calls (streams) of each started migration: one failing fails them all. */
  private readonly streams = new Map<string, Set<TransferCall>>();

  /** Records `call` as a stream of migration `id`. */
  addStream(id: string, call: TransferCall): void {
    let group = this.streams.get(id);
    if (!group) this.streams.set(id, group = new Set());
    group.add(call);
  }

  /** Forgets `call` (it ended). */
  removeStream(id: string, call: TransferCall): void {
    const group = this.streams.get(id);
    group?.delete(call);
    if (group?.size === 0) this.streams.delete(id);
  }

  /**
   * A frame came on a secondary stream of migration `id`: stream 0's idle timeout restarts too.
   * With the bulk channel stream 0 may carry nothing but Round frames for a whole round.
   */
  touchStreams(id: string): void {
    for (const c of this.streams.get(id) ?? []) c.armIdle();
  }

  /** One stream of migration `id` failed: every other stream of it fails too (protocol.ts "Parallel streams"). */
  failStreams(id: string, err: DroverError, from: TransferCall): void {
    for (const c of [...(this.streams.get(id) ?? [])]) {
      if (c !== from) c.fail(new DroverError(err.code, `stream ${from.streamIndex} of migration ${id} failed: ${err.message}`, { cause: err }));
    }
  }

  /** PrepareIncoming: checks version and spec, reserves capacity, creates the empty domain. `call`: the caller (its TLS identity). */
  async prepare(req: wire.PrepareIncomingRequest, call: CallWithAuthContext = {}): Promise<Input<wire.PrepareIncomingResponse>> {
    const source = this.guard.sourceOf(req.sourceNode, peerIdentity(call));
    const { id, spec } = this.reservePrepare(req, source);
    const token = randomBytes(24).toString('base64url');
    const domain = await this.createReserved(id, spec);
    this.host.addIncoming(new IncomingSession(id, token, domain, this.bulkOffer), source);
    this.guard.bind(id, token, spec.name, source);
    this.log({ msg: 'incoming prepared', migration: id, vm: spec.name, source });
    return { migrationId: id, token, protocolVersion: PROTOCOL_VERSION, maxFrameBytes: MAX_FRAME_BYTES };
  }

  /** Checks a PrepareIncoming and reserves its capacity in one synchronous step (vm-host.ts reserveIncoming). */
  private reservePrepare(req: wire.PrepareIncomingRequest, source: string): { id: string; spec: VmSpec } {
    if (req.protocolVersion !== PROTOCOL_VERSION) throw versionMismatch(req.protocolVersion);
    const spec = validateSpec(specFromWire(req.spec));
    if (this.host.hasVm(spec.name, false)) throw new DroverError('ALREADY_EXISTS', `VM ${spec.name} already runs on target node ${this.nodeId}`);
    const id: string = req.migrationId || `m-${randomUUID().slice(0, 8)}`;
    this.host.reserveIncoming(id, spec, source || '(unnamed source)');
    return { id, spec };
  }

  /** Creates the empty domain of reservation `id`; a failure releases the reservation. */
  private async createReserved(id: string, spec: VmSpec): Promise<Domain> {
    try {
      return await this.hypervisor.createIncoming(spec);
    } catch (err) {
      this.host.releasePending(id);
      throw err;
    }
  }

  /** AbortIncoming: the source will not use its reservation. */
  async abort(migrationId: string, token: string, call: CallWithAuthContext = {}): Promise<void> {
    this.guard.checkAbort(migrationId, token, peerIdentity(call));
    const m = this.host.incomingById(migrationId);
    if (m && m.state === 'prepared') await this.discard(m, 'aborted by source before start');
  }

  /** What this node did with each migration it finished, for SwitchoverOutcome (switchover-outcomes.ts). */
  readonly outcomes = new SwitchoverOutcomes();

  /**
   * SwitchoverOutcome: what this target did with migration `id` (protocol.ts "Switchover
   * outcome"). A migration still here and short of Complete is discarded by the question (the
   * source asks only once its stream broke, and resumes on `not_owned`), so the answer can never
   * turn into a resume later. Safe to repeat. A wrong token is PERMISSION_DENIED.
   */
  async outcome(id: string, token: string): Promise<OutcomeAnswer> {
    const m = this.host.incomingById(id);
    if (m) {
      if (!m.tokenMatches(token)) throw new DroverError('PERMISSION_DENIED', `wrong token for migration ${id}: SwitchoverOutcome refused`);
      if (m.completeArrivedAtMs) return 'pending';
      await this.discard(m, 'the source asked for the outcome before Complete arrived');
    }
    const found = this.outcomes.lookup(id, token) ?? this.journal?.answer(id, token);
    if (found === 'mismatch') throw new DroverError('PERMISSION_DENIED', `wrong token for migration ${id}: SwitchoverOutcome refused`);
    return found ?? 'unknown';
  }

  /** Transfer: the target side of the migration stream. */
  transfer(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    new TransferCall(this, call).listen();
  }

  /**
   * A socket the bulk listener accepted: it must join a running migration as a secondary stream
   * (its Start: the join token, the listener's mode, the reservation's source identity); then it
   * is a stream like any Transfer call. A refusal closes the socket and leaves the migration alone.
   */
  acceptBulk(socket: BulkSocket, peerCertificate: PeerCertificate | undefined, mode: string): void {
    new TransferCall(this, new BulkTransferStream(socket, peerCertificate), mode).listen();
  }

  /** The migration a Start frame names, once its kind and version check out. */
  startable(bytes: Buffer): { session: IncomingSession; frame: Extract<Frame, { kind: 'start' }> } {
    const frame = decodeFrame(bytes);
    if (frame.kind !== 'start') throw failedPrecondition(`the first frame must be Start, got ${frame.kind}`);
    const found = this.host.incomingById(frame.migrationId) ?? this.holds.session(frame.migrationId);
    if (!found) {
      if (frame.protocolVersion !== PROTOCOL_VERSION) throw versionMismatch(frame.protocolVersion);
      throw notFound(`no migration ${frame.migrationId} is prepared on node ${this.nodeId}`);
    }
    return { session: found, frame };
  }

  /** Transfer's Start: with TLS only the reservation's source identity may start it (incoming-auth.ts). */
  checkStarter(migrationId: string, call: CallWithAuthContext): void {
    this.guard.checkStart(migrationId, peerIdentity(call));
  }

  /**
   * Start on a prepared session. A Start with the right token that fails (version, geometry,
   * stream kind) releases the reservation at once instead of holding it for RESERVATION_TTL_MS;
   * a wrong token or an already started migration leaves it alone (it is someone else's).
   */
  startSession(session: IncomingSession, frame: Extract<Frame, { kind: 'start' }>): Ack {
    try {
      const ack = session.start(frame);
      const journal = this.journal;
      if (journal) {
        journal.started(session.migrationId, frame.token, session.isTunnel);
        session.receiver.beforeResume = () => journal.step(session.migrationId, 'resuming');
      }
      return ack;
    } catch (err) {
      if (session.state === 'prepared' && session.tokenMatches(frame.token)) void this.discard(session, `Start refused: ${DroverError.from(err).message}`);
      throw err;
    }
  }

  /** Records what this node did with `m`, in memory and in the journal. */
  private recordOutcome(m: IncomingSession, outcome: FinishedOutcome): void {
    this.outcomes.record(m.migrationId, (t) => m.tokenMatches(t), outcome);
    this.journal?.step(m.migrationId, outcome);
  }

  /** An activated incoming migration becomes a hosted VM. */
  adopt(m: IncomingSession): void {
    if (!this.host.removeIncoming(m.migrationId)) return;
    if (m.state !== 'postcopy') this.guard.forget(m.migrationId); // a held post-copy keeps it for a resume's Start
    this.host.add(m.domain);
    this.recordOutcome(m, 'owned');
    this.log({ msg: 'incoming activated', migration: m.migrationId, vm: m.domain.spec.name });
  }

  /**
   * After the VM resumed here: records the ownership (cluster mode with a fence) and returns the
   * Owned ack. When the record fails (intent changed, lease deadline) the target fences itself:
   * it destroys the VM it resumed and throws the refusal, so the source resumes. When the record's
   * fate is unknown it pauses the VM until etcd tells (switchover.ts settleUnknownRecord).
   */
  async own(m: IncomingSession): Promise<Ack> {
    const fence = m.fence;
    if (!fence) return acks.owned(false);
    const vm = m.domain.spec.name;
    try {
      if (!this.cluster) throw failedPrecondition(`fenced: node ${this.nodeId} has no etcd (started without --etcd) but migration ${m.migrationId} carries a fence`);
      try {
        await recordOwnership(this.cluster, this.nodeId, vm, fence, m.completeArrivedAtMs);
      } catch (err) {
        if (!(err instanceof RecordOutcomeUnknown)) throw err;
        this.log({ msg: 'incoming: ownership record outcome unknown; the resumed copy pauses until etcd tells', migration: m.migrationId, vm, error: err.message });
        await m.domain.pause();
        if ((await settleUnknownRecord(this.cluster, this.nodeId, vm, fence, (e) => this.log({ migration: m.migrationId, ...e }))) !== 'owned') {
          throw failedPrecondition(`fenced: node ${this.nodeId} gave VM ${vm} up (its record did not land; tombstone written): ${err.message}`, err);
        }
        await m.domain.resume();
      }
    } catch (err) {
      const e = DroverError.from(err);
      this.log({ msg: 'incoming fenced: destroying the resumed copy', migration: m.migrationId, vm, error: e.message });
      this.recordOutcome(m, 'not_owned');
      if (this.host.hasVm(vm, false)) {
        try { this.host.remove(vm); } catch { /* already gone */ }
      }
      await m.domain.destroy().catch(() => undefined);
      throw e;
    }
    this.log({ msg: 'incoming owned', migration: m.migrationId, vm, vmRevision: fence.vmRevision, job: fence.job, attempt: fence.attempt });
    return acks.owned(true);
  }

  /**
   * Post-copy recovery: Start(resume) of a held migration on `call`. The receiver checks it (a
   * refusal leaves the held migration alone); `call` then carries it. Returns the acks to send.
   */
  resume(m: IncomingSession, frame: Extract<Frame, { kind: 'start' }>, call: TransferCall): Ack[] {
    if (!this.holds.session(m.migrationId)) throw failedPrecondition(`migration ${m.migrationId} is not in post-copy on node ${this.nodeId} (state ${m.state}): nothing to resume`);
    const out = m.receiver.resume(frame);
    const owned = this.holds.attach(m.migrationId, call);
    this.log({ msg: 'incoming post-copy resume accepted', migration: m.migrationId, vm: m.domain.spec.name, attempt: frame.resume, missingPages: m.domain.migration.kind === 'pages' ? m.domain.migration.pages.postcopy?.missingPages : undefined });
    return owned ? [...out, owned] : out;
  }

  /** A held post-copy's ownership record (own); a refusal loses the VM (own destroyed the copy). */
  async ownHeld(m: IncomingSession): Promise<Ack> {
    try {
      const owned = await this.own(m);
      this.holds.recordOwned(m.migrationId, owned);
      return owned;
    } catch (err) {
      await this.lose(m, DroverError.from(err));
      throw err;
    }
  }

  /** VMs lost in post-copy on this node (the stream failed while pages were missing). */
  lostVms = 0;

  /**
   * Post-copy failed after the switch (the source is gone, the stream broke, a bad frame): the VM
   * ran here without all its pages and can never get them, so it is lost. Said loudly, counted,
   * and the copy is destroyed: nothing claims the VM runs.
   */
  async lose(m: IncomingSession, e: DroverError): Promise<void> {
    const vm = m.domain.spec.name;
    if (m.state === 'aborted') return; // already given up
    this.holds.release(m);
    this.lostVms++;
    agentMetrics().lost.inc({ side: 'target' });
    this.log({ msg: 'VM LOST in post-copy: the stream failed while pages were still on the source; the copy here is destroyed', migration: m.migrationId, vm, code: e.code, error: e.message, missingPages: m.domain.migration.kind === 'pages' ? m.domain.migration.pages.postcopy?.missingPages : undefined });
    this.host.removeIncoming(m.migrationId);
    this.guard.forget(m.migrationId);
    this.recordOutcome(m, 'lost');
    m.markAborted();
    if (this.host.hasVm(vm, false)) {
      try { this.host.remove(vm); } catch { /* already gone */ }
    }
    await m.domain.destroy().catch(() => undefined);
  }

  /** Throws away an incoming copy (before commit). Safe to repeat. */
  async discard(m: IncomingSession, why: string): Promise<void> {
    if (!this.host.removeIncoming(m.migrationId)) return;
    this.guard.forget(m.migrationId);
    this.recordOutcome(m, 'not_owned');
    m.markAborted();
    this.log({ msg: 'incoming discarded', migration: m.migrationId, vm: m.domain.spec.name, why });
    await m.domain.destroy();
  }

  /** Discards prepared reservations older than RESERVATION_TTL_MS. */
  reapReservations(): void {
    const now = Date.now();
    for (const m of [...this.host.incomingSessions()]) {
      if (m.state === 'prepared' && now - m.createdAt > RESERVATION_TTL_MS) void this.discard(m, 'reservation expired');
    }
  }

  /** Destroys every incoming domain (agent shutdown). */
  async destroyAll(): Promise<void> {
    for (const m of this.host.incomingSessions()) await m.domain.destroy();
  }

  /** Log sink, for the Transfer call. */
  get logger(): AgentLog {
    return this.log;
  }
}

/**
 * What a TransferCall needs of its stream: a gRPC Transfer call, or a bulk socket seen through
 * BulkTransferStream ('cancelled' = the peer went away without ending; emit('error') = refuse).
 */
interface TransferDuplex extends MessageStream {
  getAuthContext?(): { sslPeerCertificate?: PeerCertificate } | null;
  on(event: 'data', listener: (b: Buffer) => void): this;
  on(event: 'end' | 'cancelled', listener: () => void): this;
  on(event: 'error', listener: (e: Error) => void): this;
  write(b: Buffer): boolean;
  end(): void;
  readonly destroyed: boolean;
  emit(event: 'error', err: unknown): boolean;
  /**
   * Gives a frame's bytes back to the stream once nothing reads them (a bulk socket reuses its
   * receive buffers: bulk-socket.ts `release`); absent = the stream hands out fresh buffers.
   */
  release?(b: Buffer): void;
}

/** A bulk socket as a TransferDuplex: messages are frames, our acks go back as messages, a refusal closes the socket. */
class BulkTransferStream extends EventEmitter implements TransferDuplex {
  constructor(private readonly socket: BulkSocket, private readonly peerCertificate: PeerCertificate | undefined) {
    super();
    socket.on('data', (b: Buffer) => super.emit('data', b));
    socket.on('end', () => super.emit('end'));
    socket.on('error', () => super.emit('cancelled'));
  }

  write(b: Buffer): boolean {
    return this.socket.write(b);
  }

  release(b: Buffer): void {
    this.socket.release(b);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  /** The verified client certificate, for peerIdentity (the same check as a Transfer call's). */
  getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null {
    return this.peerCertificate ? { sslPeerCertificate: this.peerCertificate } : null;
  }

  /** 'error' (the call's refusal) closes the socket: the peer learns nothing more than that. */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'error') return super.emit(event, ...args);
    this.socket.cancel();
    return true;
  }
}

/**
 * One Transfer call: frames in order, acks out, an idle timeout, and the failure/cancel paths.
 * Stream 0 of a migration carries everything; a secondary stream (joined with stream 0's join
 * token) carries page batches only.
 */
class TransferCall {
  private m: IncomingSession | undefined;
  /** Start.stream_index of this call (0 = the control stream). */
  streamIndex = 0;
  private done = false;
  private owned = false;
  private queue = Promise.resolve();
  private idle: NodeJS.Timeout | undefined;
  /** When a frame last came from the source on this call or, for stream 0, any stream of its migration (performance.now()). */
  lastBytesAt = performance.now();
  /** Gives a frame's bytes back to the stream's receive buffers once it was handled (undefined = fresh buffers per frame). */
  private release: ((b: Buffer) => void) | undefined;

  /** `bulk`: the bulk listener's mode when the call is a bulk socket ("" = a Transfer call). */
  constructor(private readonly owner: IncomingMigrations, private readonly call: TransferDuplex, private readonly bulk = '') {}

  listen(): void {
    const call = this.call;
    widenReceiveWindow(call);
    if (call.release) this.release = (b) => call.release!(b);
    this.armIdle();
    call.on('data', (bytes: Buffer) => {
      const at = Date.now();
      this.armIdle();
      if (this.streamIndex > 0 && this.m) this.owner.touchStreams(this.m.migrationId);
      // Once onFrame settled nothing reads a page stream's bytes any more (the receiver's apply
      // keeps no view of them: receiver.ts apply), so their buffer may carry a later frame. A
      // tunnel's bytes wait for QEMU's socket: never given back.
      this.queue = this.queue.then(() => this.onFrame(bytes, at)).finally(() => { if (!this.m?.isTunnel) this.release?.(bytes); });
    });
    call.on('end', () => {
      void this.queue.then(() => {
        const m = this.m;
        if (!this.done && m && m.state !== 'active') this.dropped(new DroverError('ABORTED', `source closed the stream of migration ${m.migrationId} before it completed`));
        this.finish();
        if (!call.destroyed) call.end();
      });
    });
    call.on('cancelled', () => {
      void this.queue.then(() => {
        const m = this.m;
        if (m && m.state === 'postcopy' && !this.done) this.dropped(new DroverError('UNAVAILABLE', `the stream of migration ${m.migrationId} dropped during post-copy`));
        if (m && m.state !== 'active' && !this.done) {
          m.closeTunnel();
          this.owner.logger({ msg: 'incoming cancelled', migration: m.migrationId, stream: this.streamIndex });
          void this.owner.discard(m, 'source went away');
          this.owner.failStreams(m.migrationId, new DroverError('CANCELLED', 'the source cancelled the stream'), this);
        }
        this.finish();
      });
    });
    call.on('error', () => { /* reported through 'cancelled' or 'end' */ });
  }

  /** One frame, received at `at` (Date.now() of its arrival, before any queueing here). */
  private async onFrame(bytes: Buffer, at: number): Promise<void> {
    if (this.done) return;
    try {
      if (!this.m) {
        const { session, frame } = this.owner.startable(bytes);
        this.owner.checkStarter(session.migrationId, this.call);
        // A page stream's Transfer call assembles its frames in reused buffers from here on (a
        // bulk socket does so itself); a tunnel's frames wait for QEMU's socket, so they keep fresh ones.
        if (!this.release && !session.isTunnel) {
          this.release = poolReceiveBuffers(this.call);
          if (!this.release && !unpooledLogged) {
            unpooledLogged = true; // once per process: a grpc-js upgrade would otherwise lose the pool without a word
            this.owner.logger({ msg: 'incoming Transfer calls use fresh receive buffers: grpc-js call shape not recognised (or mid-message)', migration: session.migrationId });
          }
        }
        if (this.bulk && (frame.streamIndex === 0 || frame.bulk !== this.bulk)) {
          throw failedPrecondition(`migration ${session.migrationId}: a bulk socket only joins as a secondary stream in mode ${this.bulk} (got stream ${frame.streamIndex}, mode "${frame.bulk ?? ''}")`);
        }
        if (frame.resume) {
          const out = this.owner.resume(session, frame, this);
          this.m = session;
          this.owned = true; // adopted and recorded (or being recorded) at the switch
          session.receiver.onAck = (a) => this.write(a);
          this.owner.addStream(session.migrationId, this);
          for (const a of out) this.write(a);
          return;
        }
        if (frame.streamIndex > 0) {
          this.call.write(encodeAck(session.receiver.join(frame)));
          this.streamIndex = frame.streamIndex;
          if (this.idle) { clearTimeout(this.idle); this.idle = undefined; } // stream 0's idle timeout covers the migration
          this.m = session;
          this.owner.addStream(session.migrationId, this);
          return;
        }
        const ack = this.owner.startSession(session, frame);
        session.receiver.onAck = (a) => this.write(a);
        this.m = session;
        this.owner.addStream(session.migrationId, this);
        // A tunnel Start connects to the target hypervisor's own stream (migration/strategy/incoming.ts).
        const accepted = await session.openTunnel(this.call, (e) => this.fail(e));
        this.call.write(encodeAck(accepted ?? ack));
        return;
      }
      const m = this.m;
      const frame = decodeFrame(bytes);
      if (this.streamIndex > 0 && frame.kind !== 'batch') throw failedPrecondition(`migration ${m.migrationId}: stream ${this.streamIndex} carries page batches only, got ${frame.kind}`);
      if (frame.kind === 'complete' && failpoint('target-drop-on-complete')) throw new DroverError('UNAVAILABLE', `failpoint target-drop-on-complete: migration ${m.migrationId}'s stream dropped as Complete arrived`);
      if (frame.kind === 'complete' && !m.completeArrivedAtMs) m.completeArrivedAtMs = at;
      if (frame.kind === 'complete' && failpoint('target-exit-on-complete')) process.kill(process.pid, 'SIGKILL');
      for (const a of await m.apply(frame)) {
        this.call.write(encodeAck(a));
        if (a.kind === 'postcopyDone') {
          agentMetrics().postcopyDone(m.receiver.pageWaitsMs, a.allPresentMs);
          this.owner.holds.finished(m.migrationId);
        }
      }
      if ((m.state === 'active' || m.state === 'postcopy') && !this.owned) {
        this.owned = true;
        this.owner.adopt(m);
        if (m.state === 'postcopy') {
          // Held from here on: a dropped stream waits for the source (postcopy-holds.ts); Owned goes on whichever stream carries it.
          this.owner.holds.hold(m, this);
          const owned = await this.owner.ownHeld(m);
          m.receiver.onAck?.(owned);
          return;
        }
        if (failpoint('target-exit-after-activate')) process.kill(process.pid, 'SIGKILL');
        if (failpoint('target-drop-after-activate')) {
          this.finish();
          this.call.emit('error', toServiceError(new DroverError('UNAVAILABLE', `failpoint target-drop-after-activate: migration ${m.migrationId}'s stream dropped after the resume, before Owned`)));
          return;
        }
        // Protocol 2: record the ownership, then Owned (page streams and QEMU tunnels alike).
        this.call.write(encodeAck(await this.owner.own(m)));
      }
    } catch (err) {
      this.fail(err);
    }
  }

  /** A frame came from the source: restarts the idle timeout (stream 0 only: it covers the migration). */
  armIdle(): void {
    this.lastBytesAt = performance.now();
    if (this.streamIndex > 0) return;
    // Once armed, each frame re-arms the same timer (refresh): no clearTimeout + setTimeout per 1 MiB frame.
    if (this.idle) { this.idle.refresh(); return; }
    this.idle = setTimeout(() => this.dropped(new DroverError('DEADLINE_EXCEEDED', `no frame for ${RECEIVE_IDLE_TIMEOUT_MS} ms; target discards the migration`)), RECEIVE_IDLE_TIMEOUT_MS);
  }

  /** Writes an ack while this call is open. */
  private write(a: Ack): void {
    if (!this.done && !this.call.destroyed) this.call.write(encodeAck(a));
  }

  /**
   * The stream ended, dropped or went idle (`e`). In post-copy that is no failure: stream 0
   * detaches the held migration (its source may reconnect), a secondary just ends; else fail.
   */
  private dropped(e: DroverError, since?: number): void {
    const m = this.m;
    if (this.done) return;
    if (m && m.state === 'postcopy' && (this.streamIndex > 0 || this.owner.holds.carries(m.migrationId, this))) {
      this.finish();
      if (this.streamIndex === 0) this.owner.holds.detach(m, this, e, since);
      return;
    }
    this.fail(e);
  }

  /**
   * The hold's stall detector: this call's link went silent during post-copy (`e`). Detaches the
   * migration as a dropped stream (the stall counts from the last byte) and ends the call, so the
   * source's reconnection finds the migration waiting for it.
   */
  stall(e: DroverError): void {
    if (this.done) return;
    this.owner.logger({ msg: 'incoming post-copy link stalled: dropping the stream', migration: this.m?.migrationId, error: e.message });
    this.dropped(e, this.lastBytesAt);
    this.call.emit('error', toServiceError(e));
  }

  /** A reconnection of the same post-copy migration replaced this call: ends it without failing the migration. */
  supersede(): void {
    if (this.done) return;
    this.finish();
    this.owner.logger({ msg: 'incoming stream superseded by a post-copy resume', migration: this.m?.migrationId, stream: this.streamIndex });
    this.call.emit('error', toServiceError(new DroverError('ABORTED', `migration ${this.m?.migrationId}: this stream was replaced by the source's reconnection`)));
  }

  private finish(): void {
    this.done = true;
    if (this.idle) { clearTimeout(this.idle); this.idle = undefined; } // refresh() would re-arm a cleared timer
    if (this.m) this.owner.removeStream(this.m.migrationId, this);
  }

  /** Fails this stream (and, before activation, the migration with every other stream of it). */
  fail(err: unknown): void {
    if (this.done) return;
    this.finish();
    const e = DroverError.from(err);
    const m = this.m;
    this.owner.logger({ msg: 'incoming failed', migration: m?.migrationId, stream: this.streamIndex, code: e.code, error: e.message });
    m?.closeTunnel();
    if (m && m.state === 'postcopy') {
      void this.owner.lose(m, e);
      this.owner.failStreams(m.migrationId, e, this);
    } else if (m && m.state !== 'active') {
      void this.owner.discard(m, e.message);
      this.owner.failStreams(m.migrationId, e, this);
    }
    this.call.emit('error', toServiceError(e));
  }
}
