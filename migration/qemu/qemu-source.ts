/**
 * Source side of the QEMU tunnel (protocol.ts, "QEMU tunnel"): the engine's policy applied to
 * QEMU's own migration, whose bytes travel over the agents' Transfer stream.
 *
 *  1. Transfer stream: Start(version, token, geometry, tunnel="qemu") -> Accepted(postcopy).
 *  2. A unix socket owned by this agent (private temp directory); the source QEMU migrates into
 *     it (`migrate unix:…`) under the domain's StreamMigration.migrateOut with the policy mapped
 *     from the agent's MigrationPolicy (maxDowntimeMs -> downtime-limit, bandwidthBytesPerSec ->
 *     max-bandwidth, timeout -> deadline, cancel -> AbortSignal, maxRounds/maxBytesFactor -> the
 *     convergence decision of migration/policy/convergence.ts, which chooses post-copy or
 *     throttling when pre-copy does not converge); its samples become MigrationProgress events.
 *  3. StreamData both ways (qemu-tunnel.ts) until QEMU reports completed and closes the socket;
 *     then Complete(activate) and the target's Verified + Activated (its guest beats), then
 *     Owned (protocol 2: the target recorded owned/<target>/<vm> fenced on the intent, or at once
 *     in a direct migration). Only then does the caller destroy the source QEMU.
 *
 * Native transport (protocol.ts "QEMU native"): Start asks for the transport this node's driver
 * is configured for (stream.nativeTransport: "tls" with the agent's certificate); when Accepted
 * names qemu_listen, step 2 is skipped and the source QEMU migrates straight to that HOST:PORT
 * (TLS: its own node certificate, tls-hostname = HOST), with the same policy, progress, cancel
 * and post-copy decision; the Transfer stream carries a keepalive every NATIVE_KEEPALIVE_MS and
 * the same switchover (step 3 on). Accepted without qemu_listen: the tunnel, as above.
 *
 * Failure before completion: the tunnel socket is broken (QEMU: migration failed, the source VM
 * keeps running) or migrate_cancel (cancel, deadline); the target discards its QEMU when the
 * stream ends with an error. After Complete (protocol.ts fault table, tunnel row): an explicit
 * refusal (REFUSAL_CODES: the target could not run the guest, or fenced itself and killed its
 * QEMU) resumes the source QEMU (`cont`, if it is still in postmigrate and post-copy never
 * started); a broken stream with neither Owned nor a refusal is resolved by `resolveOutcome`
 * (etcd: the target's record, its lease); 'unknown' leaves the source QEMU paused.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { DroverError } from '../../lib/errors';
import { fromServiceError } from '../../lib/grpc-status';
import { PAGE_SIZE, type Domain } from '../../hypervisor/types';
import {
  stopToResumeMs, type StreamMigration, type StreamMigrationPolicy, type StreamMigrationProgress, type StreamMigrationResult,
} from '../../hypervisor/stream-migration';
import { completionTimeoutMs, type MigrationPhase, type MigrationPolicy, type MigrationProgress, type MigrationResult } from '../types';
import { convergenceDecider, convergencePolicy } from '../policy/convergence';
import { PauseClock, succeededResult } from '../result';
import { decodeAck, encodeFrame } from '../wire/frame-codec';
import { frames, REFUSAL_CODES, type Ack, type Fence, type Frame } from '../wire/protocol';
import type { SwitchoverOutcome } from '../precopy/precopy-source';
import type { ReceiverClientConn, Reservation } from '../transport/receiver-client';
import { SocketTunnel, trace, traceQmp } from './qemu-tunnel';
import type { IncomingEndpoint } from '../../hypervisor/stream-migration';
import { isWildcardHost } from '../../hypervisor/qemu/migration-tls';

/** What a QEMU source migration needs. */
export interface QemuSourceOptions {
  /** The id the caller sees (progress events). */
  migrationId: string;
  /** The VM migrating out (life cycle, heartbeat). */
  domain: Domain;
  /** Its hypervisor's own migration stream (the domain's `migration.stream`). */
  stream: StreamMigration;
  conn: ReceiverClientConn;
  reservation: Reservation;
  policy: MigrationPolicy;
  sourceName: string;
  targetName: string;
  signal: AbortSignal;
  onProgress: (p: MigrationProgress) => void;
  log?: (e: Record<string, unknown>) => void;
  /** The switchover's fenced intent (cluster mode), sent to the target in Start. */
  fence?: Fence;
  /** After Complete with a broken stream: does the target own the VM (switchover.ts resolveOutcome)? Absent = unknown. */
  resolveOutcome?: (cause: DroverError) => Promise<SwitchoverOutcome>;
}

/**
 * QEMU's downtime-limit for a downtime target. QEMU budgets the limit for the final RAM only
 * (remaining bytes over its bandwidth estimate), but the switchover also pays for saving the
 * device state, the tunnel and the target's load and start: 3-4 ms of the ~7 ms source STOP to
 * target RESUME measured here for QEMU's own direct TCP migration as for the tunnel. So the final
 * RAM gets half of the target (at least 1 ms, QEMU's unit): one more pre-copy round, 2 ms less
 * downtime on the 16 MiB working set (`npm run bench -- --qemu`).
 */
export function qemuDowntimeLimitMs(maxDowntimeMs: number): number {
  return Math.max(1, Math.floor(maxDowntimeMs / 2));
}

/**
 * Pre-copy pages in flight in the tunnel when post-copy starts: the switchover's package queues
 * behind them (a full 2 MiB window at ~150 MB/s is ~14 ms of downtime). The window narrows to
 * this before `migrate-start-postcopy`, waiting at most SWITCHOVER_DRAIN_MS for the pipe to drain.
 */
export const SWITCHOVER_BACKLOG_BYTES = 256 * 1024;
/** Longest wait for the tunnel to drain before post-copy starts anyway. */
export const SWITCHOVER_DRAIN_MS = 200;
/** Extra time the Transfer stream's deadline allows beyond the completion timeout, ms. */
const STREAM_DEADLINE_SLACK_MS = 60_000;
/** How long the target may take to answer Start, ms. */
const ACCEPT_WAIT_MS = 30_000;
/** How long the target may take to run the guest after Complete, ms. */
const ACTIVATE_WAIT_MS = 40_000;
/** How long the target may take to record its ownership after Activated (it gives up at its lease deadline), ms. */
const OWNED_WAIT_MS = 30_000;
/** Run states of a source QEMU that completed its migration and may still be resumed. */
const RESUMABLE_STATES: ReadonlySet<string> = new Set(['postmigrate', 'paused', 'finish-migrate']);
/** Native: an empty StreamData this often keeps the target's idle timer (RECEIVE_IDLE_TIMEOUT_MS) from firing, ms. */
export const NATIVE_KEEPALIVE_MS = 5000;
/** How long to wait for QEMU to close the tunnel socket after completion, ms. */
const SOCKET_END_WAIT_MS = 5000;

/** Maps the engine's policy onto the stream driver's, convergence decision included (maxRounds, maxBytesFactor). */
export function qemuPolicy(p: MigrationPolicy, memBytes: number, signal?: AbortSignal): StreamMigrationPolicy {
  return {
    downtimeLimitMs: qemuDowntimeLimitMs(p.maxDowntimeMs),
    maxBandwidthBytesPerSec: p.bandwidthBytesPerSec || undefined,
    deadlineMs: completionTimeoutMs(p, memBytes),
    // --postcopy never keeps QEMU on pre-copy; auto and always (absent too) let its convergence decider switch.
    postcopy: p.postcopy === 'never' ? 'never' : 'auto',
    throttle: p.autoConverge !== 'never',
    multifdChannels: 0,
    signal,
    converge: convergenceDecider(convergencePolicy(p)),
  };
}

/** QEMU's status to the engine's phase (post-copy: the target runs the VM, cancel is refused). */
function phaseOf(status: string): MigrationPhase {
  if (status.startsWith('postcopy')) return 'activating';
  if (status === 'device' || status === 'pre-switchover') return 'stopcopy';
  if (status === 'completed') return 'verifying';
  return 'precopy';
}

/**
 * The source's end of the Transfer stream of one tunnel: frames out, acks in. StreamData acks
 * go to the tunnel's socket (queued until the socket connects), batch acks move its window,
 * the others (Accepted, Verified, Activated) to whoever waits in nextAck.
 */
class SourceStream {
  readonly call: grpc.ClientDuplexStream<Frame | Buffer, Buffer>;
  /** The tunnel, once the source QEMU has connected to the socket. */
  tunnel: SocketTunnel | undefined;
  /** The socket server the source QEMU migrates into. */
  server: net.Server | undefined;
  /** Set when the stream broke (the cause of the migration's failure). */
  error: DroverError | undefined;
  /** Set once the migration has ended (no further failure is reported). */
  finished = false;
  /** Set once QEMU reported the migration completed (a socket error after that is not logged). */
  migrated = false;
  /** Native: called once when the stream breaks (the source cancels its QEMU's migration at once). */
  onBroken: (() => void) | undefined;
  private onAck: ((a: Ack) => void) | undefined;
  private onFail: ((e: DroverError) => void) | undefined;
  private readonly early: Ack[] = [];

  constructor(private readonly conn: ReceiverClientConn, deadlineMs: number) {
    this.call = conn.openStream(deadlineMs);
    this.call.on('data', (b: Buffer) => this.onData(b));
    this.call.on('error', (err) => this.fail(fromServiceError(err, `target ${conn.address} Transfer`)));
    this.call.on('end', () => { if (!this.finished) this.fail(new DroverError('UNAVAILABLE', `target ${conn.address} closed the migration stream`)); });
  }

  private onData(b: Buffer): void {
    let a: Ack;
    try {
      a = decodeAck(b);
    } catch (err) {
      this.fail(DroverError.from(err));
      return;
    }
    if (a.kind === 'stream') {
      if (this.tunnel) this.tunnel.deliver(a.data, a.eof);
      else this.early.push(a);
    } else if (a.kind === 'batch') {
      this.tunnel?.credit(a.bytes); // the target QEMU took these bytes: the window moves
    } else if (this.onAck) this.onAck(a);
    else this.early.push(a);
  }

  /** The stream broke: QEMU sees a broken socket, so its migration fails and the source VM keeps running. */
  fail(e: DroverError): void {
    if (this.finished || this.error) return;
    this.error = e;
    this.tunnel?.destroy();
    this.server?.close();
    this.onBroken?.();
    this.onFail?.(e);
  }

  /** The next non-StreamData ack, or a DEADLINE_EXCEEDED naming `what` after `ms`. */
  nextAck(what: string, ms: number): Promise<Ack> {
    return new Promise((resolve, reject) => {
      const queued = this.early.findIndex((a) => a.kind !== 'stream');
      if (queued >= 0) return resolve(this.early.splice(queued, 1)[0]);
      if (this.error) return reject(this.error);
      const timer = setTimeout(() => reject(new DroverError('DEADLINE_EXCEEDED', `target ${this.conn.address}: no ${what} within ${ms} ms`)), ms);
      const done = () => { clearTimeout(timer); this.onAck = undefined; this.onFail = undefined; };
      this.onAck = (a) => { done(); resolve(a); };
      this.onFail = (e) => { done(); reject(e); };
    });
  }

  /** The source QEMU connected: the connection becomes the tunnel; StreamData that came early goes to it. */
  attach(tunnel: SocketTunnel): void {
    this.tunnel = tunnel;
    for (const a of this.early.splice(0)) if (a.kind === 'stream') tunnel.deliver(a.data, a.eof);
  }
}

/** One outgoing QEMU migration through the tunnel. */
export class QemuSource {
  private phase: MigrationPhase = 'reserving';
  private lastSample: StreamMigrationProgress | undefined;
  private wasAccepted = false;
  private t0 = 0;
  /** The transport in use: '' = the tunnel, else the native one the target accepted. */
  private transport = '';
  /** Native: QEMU's multifd channels in use (0 = one stream). */
  private multifd = 0;
  private readonly pause = new PauseClock();

  constructor(private readonly o: QemuSourceOptions) {}

  /** How long the source QEMU has been paused in this migration (its STOP event on), ms; read on failure too. */
  get pausedMs(): number {
    return this.pause.ms;
  }

  /** Starts the pause clock at the source QEMU's STOP event of this migration, if it stopped. */
  private notePause(): void {
    const stopped = this.o.stream.stoppedAtMs;
    if (stopped > 0 && stopped >= performance.timeOrigin + this.t0) this.pause.start(stopped);
  }

  /** The phase the migration is in (QEMU's status mapped to the engine's phases). */
  get currentPhase(): MigrationPhase {
    return this.phase;
  }

  /** Runs the migration; resolves when the target runs the VM. */
  async run(): Promise<MigrationResult> {
    const o = this.o;
    this.t0 = performance.now();
    const s = new SourceStream(o.conn, completionTimeoutMs(o.policy, o.domain.spec.memBytes) + STREAM_DEADLINE_SLACK_MS);
    traceQmp(o.stream.events, 'source');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-tunnel-'));
    try {
      const accepted = await this.start(s);
      const postcopy = !!accepted.postcopy;
      let target: IncomingEndpoint;
      if (accepted.qemuListen) {
        this.transport = accepted.qemuTransport ?? '';
        this.multifd = this.multifdOf(accepted);
        target = { socketPath: '', postcopy, multifdChannels: this.multifd, tcp: { ...this.nativeAddress(accepted.qemuListen), tls: this.transport === 'tls' } };
        // QEMU's bytes do not depend on the control stream: a broken one cancels QEMU's migration (before post-copy)
        s.onBroken = () => { if (!s.migrated && !o.stream.inPostcopy) o.stream.cancel().catch(() => undefined); };
      } else {
        target = { socketPath: path.join(dir, 'out.sock'), postcopy, multifdChannels: 0 };
        await this.listen(s, target.socketPath, accepted.windowBytes);
      }
      const qres = await this.migrate(s, target);
      this.phase = 'verifying';
      const { activated, pausedAtMs } = await this.complete(s, qres);
      s.finished = true;
      s.call.end();
      this.phase = 'done';
      return this.result(s, qres, activated, pausedAtMs);
    } catch (err) {
      throw await this.failed(s, err);
    } finally {
      s.tunnel?.destroy();
      s.server?.close();
      fs.rmSync(dir, { recursive: true, force: true });
      if (!s.finished) s.call.cancel();
    }
  }

  /** 1. Start: same version/token/geometry checks as a page stream, plus the tunnel kind. */
  private async start(s: SourceStream): Promise<Extract<Ack, { kind: 'accepted' }>> {
    const o = this.o;
    const pageCount = o.domain.spec.memBytes / PAGE_SIZE;
    s.call.write(encodeFrame(frames.startTunnel(o.reservation.migrationId, o.reservation.token, PAGE_SIZE, pageCount, o.fence, o.stream.nativeTransport, o.conn.streams)));
    const accepted = await s.nextAck('Accepted', ACCEPT_WAIT_MS);
    if (accepted.kind !== 'accepted') throw new DroverError('INTERNAL', `target ${o.conn.address} answered Start with ${accepted.kind}`);
    this.wasAccepted = true;
    if (accepted.qemuListen && accepted.qemuTransport !== o.stream.nativeTransport) {
      throw new DroverError('FAILED_PRECONDITION', `target ${o.conn.address} answered a ${o.stream.nativeTransport || 'tunnel'} Start with native transport "${accepted.qemuTransport}"`);
    }
    if (o.signal.aborted) throw new DroverError('CANCELLED', `migration ${o.migrationId} cancelled in phase reserving`);
    return accepted;
  }

  /**
   * Native: the multifd channels the target QEMU listens with (Accepted.qemu_multifd_channels),
   * which the source QEMU must use too; more than this source asked for (its --streams) is refused.
   */
  private multifdOf(accepted: Extract<Ack, { kind: 'accepted' }>): number {
    const n = accepted.qemuMultifdChannels ?? 0;
    if (n > 1 && n > this.o.conn.streams) throw new DroverError('FAILED_PRECONDITION', `target ${this.o.conn.address} answered with ${n} multifd channels; this source asked for ${this.o.conn.streams}`);
    return n > 1 ? n : 0;
  }

  /** Native: the target QEMU's HOST:PORT from Accepted (a wildcard host: the host this agent dialled). */
  private nativeAddress(listen: string): { host: string; port: number } {
    const at = listen.lastIndexOf(':');
    const host = listen.slice(0, at).replace(/^\[|\]$/g, '');
    const port = Number(listen.slice(at + 1));
    if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new DroverError('INVALID_ARGUMENT', `target ${this.o.conn.address}: Accepted.qemu_listen "${listen}" is not HOST:PORT`);
    if (!isWildcardHost(host)) return { host, port };
    const a = this.o.conn.address;
    return { host: a.slice(0, a.lastIndexOf(':')).replace(/^\[|\]$/g, ''), port };
  }

  /** 2. The socket the source QEMU migrates into; its one connection is the tunnel. */
  private async listen(s: SourceStream, sockPath: string, windowBytes: number): Promise<void> {
    const o = this.o;
    const server = net.createServer((sock) => {
      if (s.tunnel || s.error) { sock.destroy(); return; } // one channel (no multifd through the tunnel)
      const tunnel = new SocketTunnel(sock, s.call, false, (err) => {
        if (!s.finished && !s.migrated) o.log?.({ msg: 'qemu tunnel socket failed', migration: o.migrationId, error: err.message });
      });
      tunnel.setWindow(windowBytes);
      s.attach(tunnel);
    });
    s.server = server;
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(sockPath, () => resolve()); });
  }

  /** 3. QEMU migrates with the engine's policy; progress flows as the sim path's does. */
  private async migrate(s: SourceStream, target: IncomingEndpoint): Promise<StreamMigrationResult> {
    const o = this.o;
    this.phase = 'precopy';
    const qp: StreamMigrationPolicy = {
      ...qemuPolicy(o.policy, o.domain.spec.memBytes, o.signal),
      // post-copy's switchover (discards + device state) goes out behind at most SWITCHOVER_BACKLOG_BYTES
      beforeSwitchover: () => s.tunnel?.drainTo(SWITCHOVER_BACKLOG_BYTES, SWITCHOVER_DRAIN_MS) ?? Promise.resolve(),
    };
    let qres: StreamMigrationResult;
    // native: the Transfer stream idles while QEMU migrates; a keepalive shows the target the source is there
    const keepalive = target.tcp ? setInterval(() => { if (!s.error) s.call.write(encodeFrame(frames.keepalive())); }, NATIVE_KEEPALIVE_MS) : undefined;
    try {
      qres = await o.stream.migrateOut(target, qp, (p) => this.onSample(p));
    } catch (err) {
      // The tunnel's failure is the cause when QEMU only saw a broken socket.
      const e = DroverError.from(err);
      // (native: the broken stream cancelled QEMU's migration, so CANCELLED here is that too)
      if (s.error && (e.code === 'ABORTED' || (e.code === 'CANCELLED' && this.transport && !o.signal.aborted))) throw new DroverError('ABORTED', `${s.error.message}; ${e.message}`, { cause: err });
      throw e;
    } finally {
      clearInterval(keepalive);
    }
    s.migrated = true;
    return qres;
  }

  private onSample(p: StreamMigrationProgress): void {
    const o = this.o;
    this.lastSample = p;
    this.phase = phaseOf(p.status);
    o.onProgress({
      migrationId: o.migrationId, phase: this.phase, round: p.rounds, remainingBytes: p.remainingBytes,
      dirtyRateBytesPerSec: p.dirtyRateBytesPerSec, rateBytesPerSec: p.transferRateBytesPerSec, sentBytes: p.transferredBytes,
      etaMs: p.transferRateBytesPerSec > 0 ? (p.remainingBytes / p.transferRateBytesPerSec) * 1000 : NaN,
      elapsedMs: performance.now() - this.t0,
    });
    if (p.action) o.log?.({ msg: `qemu policy: ${p.action}`, migration: o.migrationId, reason: p.reason });
  }

  /**
   * 4. Everything QEMU wrote goes out, then Complete(activate); waits for Verified + Activated,
   * then Owned. A failure after Complete goes to afterComplete (resume, resolve or stay paused).
   */
  private async complete(s: SourceStream, qres: StreamMigrationResult): Promise<{ activated: Extract<Ack, { kind: 'activated' }>; pausedAtMs: number }> {
    const o = this.o;
    const dom = o.domain;
    // QEMU closes the socket when done.
    if (s.tunnel) await Promise.race([s.tunnel.socketEnded, new Promise((r) => setTimeout(r, SOCKET_END_WAIT_MS))]);
    this.notePause();
    const pausedAtMs = dom.heartbeat().lastBeatMs;
    // Native: QEMU completed although the control stream broke (the target QEMU may have started
    // the guest until its agent discards it): the switchover's fault row for a stream broken after
    // Complete applies (resolve; resume only on a known refusal; else stay paused).
    if (s.error && !s.tunnel && this.transport) return { activated: await this.afterComplete(s.error, undefined), pausedAtMs };
    if (s.error) throw s.error;
    trace(`source completed; last source beat ${pausedAtMs.toFixed(1)}`);
    s.call.write(encodeFrame(frames.complete(Buffer.alloc(0), 0, qres.rounds, pausedAtMs, true, 0)));
    let activated: Extract<Ack, { kind: 'activated' }> | undefined;
    try {
      for (;;) {
        const a = await s.nextAck(activated ? 'Owned' : 'Activated', activated ? OWNED_WAIT_MS : ACTIVATE_WAIT_MS);
        if (a.kind === 'activated') activated = a;
        else if (a.kind === 'owned' && activated) break;
        else if (a.kind !== 'verified') throw new DroverError('INTERNAL', `target ${o.conn.address} answered Complete with ${a.kind}`);
      }
      o.log?.({ msg: 'qemu switchover owned', migration: o.migrationId, vm: dom.spec.name, target: o.targetName });
      this.pause.end(); // Owned: the source's pause ends with its copy
      return { activated, pausedAtMs };
    } catch (err) {
      return { activated: await this.afterComplete(DroverError.from(err), activated), pausedAtMs };
    }
  }

  /**
   * A failure after Complete (protocol.ts fault table, tunnel row). Explicit refusal: the source
   * QEMU resumes. Otherwise the outcome is resolved: 'owned' finishes as a success (the Activated
   * seen, or now), 'refused' resumes, 'unknown' leaves the source QEMU paused. Post-copy had
   * started: the source cannot resume (its memory is on the target), so anything but 'owned' is DATA_LOSS.
   */
  private async afterComplete(e: DroverError, activated: Extract<Ack, { kind: 'activated' }> | undefined): Promise<Extract<Ack, { kind: 'activated' }>> {
    const o = this.o;
    const name = o.domain.spec.name;
    const refused = REFUSAL_CODES.has(e.code);
    this.notePause(); // QMP's STOP event may have come after complete() looked for it
    const outcome: SwitchoverOutcome = refused ? 'refused' : o.resolveOutcome ? await o.resolveOutcome(e).catch(() => 'unknown' as const) : 'unknown';
    o.log?.({ msg: 'qemu switchover failed after Complete', migration: o.migrationId, vm: name, code: e.code, error: e.message, outcome, postcopy: o.stream.inPostcopy });
    if (outcome === 'owned') {
      this.pause.end();
      const now = performance.timeOrigin + performance.now();
      return activated ?? { kind: 'activated', resumedAtMs: now, firstBeatMs: now };
    }
    if (o.stream.inPostcopy) {
      throw new DroverError('DATA_LOSS', `${name} switched over in post-copy but the target did not confirm it owns it (${outcome}): ${e.message}`, { cause: e });
    }
    if (outcome === 'unknown') {
      throw new DroverError('UNAVAILABLE', `migration ${o.migrationId}: switchover outcome unknown after Complete (${e.message}); the QEMU of ${name} stays paused on the source ${o.sourceName} (it may run on ${o.targetName})`, { cause: e });
    }
    const resumed = await this.resumeSource();
    const code = refused ? e.code : 'ABORTED';
    throw new DroverError(code, `target did not run ${name}: ${e.message}; ${resumed ? 'the source VM resumed' : 'the source VM could not be resumed'}`, { cause: e });
  }

  /** `cont` on the source QEMU if it is still there and stopped after its migration; true when it runs. */
  private async resumeSource(): Promise<boolean> {
    const dom = this.o.domain;
    if (dom.state() === 'destroyed') return false;
    const st = await this.o.stream.runStatus().catch(() => '');
    if (st === 'running') { this.pause.end(); return true; }
    if (!RESUMABLE_STATES.has(st)) return false;
    const ok = await dom.resume().then(() => true, () => false);
    if (ok) this.pause.end();
    return ok;
  }

  /** The result of a completed migration (and its log line). */
  private result(s: SourceStream, qres: StreamMigrationResult, activated: Extract<Ack, { kind: 'activated' }>, pausedAtMs: number): MigrationResult {
    const o = this.o;
    const dom = o.domain;
    const totalMs = performance.now() - this.t0;
    // native: QEMU's own count of what it sent (no agent in the byte path)
    const stats = s.tunnel?.stats ?? { outWireBytes: qres.transferredBytes, outBytes: qres.transferredBytes, outMessages: 0, inBytes: 0 };
    // Downtime as the engine defines it: source vCPUs stop -> target vCPUs run (QEMU's STOP and
    // RESUME events). QEMU's own figure is the source's view: it stops at the last byte written
    // without a return path, and with one it also waits for the target to close it.
    const downtimeMs = stopToResumeMs(o.stream, activated.resumedAtMs, performance.timeOrigin + this.t0) ?? qres.downtimeMs;
    const blackout = (activated.firstBeatMs ?? activated.resumedAtMs) - pausedAtMs;
    o.log?.({ msg: 'qemu migration completed', migration: o.migrationId, transport: this.transport || 'tunnel', multifdChannels: this.multifd, downtimeMs: Math.round(downtimeMs * 10) / 10, qemuDowntimeMs: qres.downtimeMs, guestBlackoutMs: Math.round(blackout), action: qres.action, reason: qres.reason, tunnelMessages: stats.outMessages, tunnelBytes: stats.outBytes });
    return succeededResult({
      migrationId: o.migrationId, vm: dom.spec.name, profile: dom.spec.profile, memBytes: dom.spec.memBytes,
      mode: qres.action === 'postcopy' ? 'postcopy' : 'precopy',
      // QEMU completed, and the guest beats on the target (memory is not compared for QEMU)
      verified: true,
      downtimeMs, totalMs, rounds: qres.rounds,
      bytesSent: stats.outWireBytes, pageBytes: qres.transferredBytes, zeroPages: 0, deviceBytes: 0,
      throughputBytesPerSec: qres.totalTimeMs > 0 ? (stats.outBytes * 1000) / qres.totalTimeMs : 0,
      stopReason: qres.action === 'none' ? 'converged' : 'stalled',
      source: o.sourceName, target: o.targetName, nonzeroBytes: dom.stats().touchedBytes,
      guestBlackoutMs: Math.round(blackout),
      hypervisorDowntimeMs: qres.downtimeMs,
      pausedMs: this.pause.ms,
    });
  }

  /** A failure: tell the target to discard its QEMU, release an unused reservation, log; returns the error to throw. */
  private async failed(s: SourceStream, err: unknown): Promise<DroverError> {
    const o = this.o;
    const e = DroverError.from(err);
    // Tell the target to discard its QEMU (it also does when the stream breaks).
    if (!s.error) {
      try { s.call.write(encodeFrame(frames.abort(e.message.slice(0, 500)))); s.call.end(); } catch { /* stream gone */ }
    }
    s.finished = true;
    // A stop before the failure (QEMU resumes its own VM when its migration fails before completion).
    if (!s.migrated) { this.notePause(); this.pause.end(); }
    // Refused at Start (e.g. the target runs another hypervisor): release the reservation now.
    if (!this.wasAccepted) await o.conn.abort(o.reservation.migrationId, o.reservation.token);
    o.log?.({ msg: 'qemu migration failed', migration: o.migrationId, lastStatus: this.lastSample?.status, error: e.message });
    return e;
  }
}
