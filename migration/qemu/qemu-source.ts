/**
 * Source side of the QEMU tunnel (protocol.ts, "QEMU tunnel"): the engine's policy applied to
 * QEMU's own migration, whose bytes travel over the agents' Transfer stream.
 *
 *  1. Transfer stream: Start(version, token, geometry, tunnel="qemu") -> Accepted(postcopy).
 *  2. A unix socket owned by this agent (private temp directory); the source QEMU migrates into
 *     it (`migrate unix:…`) under QemuHypervisor.migrateOut with the policy mapped from the
 *     agent's MigrationPolicy (maxDowntimeMs -> downtime-limit, bandwidthBytesPerSec ->
 *     max-bandwidth, timeout -> deadline, cancel -> AbortSignal). The driver decides post-copy or
 *     throttling when pre-copy does not converge; its samples become MigrationProgress events.
 *  3. StreamData both ways (qemu-tunnel.ts) until QEMU reports completed and closes the socket;
 *     then Complete(activate) and the target's Verified + Activated (its guest beats).
 *
 * Failure before completion: the tunnel socket is broken (QEMU: migration failed, the source VM
 * keeps running) or migrate_cancel (cancel, deadline); the target discards its QEMU when the
 * stream ends with an error. After completion without an Activated (target failed to run the
 * guest) the paused source is resumed, unless post-copy had started (then the target owned the VM).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { DroverError } from '../../lib/errors';
import { fromServiceError } from '../../lib/grpc-status';
import { PAGE_SIZE } from '../../hypervisor/types';
import { stopToResumeMs, type QemuDomain, type QemuHypervisor, type QemuMigrationPolicy, type QemuMigrationProgress, type QemuMigrationResult } from '../../hypervisor/qemu/qemu-hypervisor';
import { completionTimeoutMs, type MigrationPhase, type MigrationPolicy, type MigrationProgress, type MigrationResult } from '../types';
import { succeededResult } from '../result';
import { decodeAck, encodeFrame } from '../wire/frame-codec';
import { frames, type Ack } from '../wire/protocol';
import type { ReceiverClientConn, Reservation } from '../transport/receiver-client';
import { SocketTunnel, trace, traceQmp } from './qemu-tunnel';

/** What a QEMU source migration needs. */
export interface QemuSourceOptions {
  /** The id the caller sees (progress events). */
  migrationId: string;
  hypervisor: QemuHypervisor;
  domain: QemuDomain;
  conn: ReceiverClientConn;
  reservation: Reservation;
  policy: MigrationPolicy;
  sourceName: string;
  targetName: string;
  signal: AbortSignal;
  onProgress: (p: MigrationProgress) => void;
  log?: (e: Record<string, unknown>) => void;
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

/** Maps the engine's policy onto the QEMU driver's. */
export function qemuPolicy(p: MigrationPolicy, memBytes: number, signal?: AbortSignal): QemuMigrationPolicy {
  return {
    downtimeLimitMs: qemuDowntimeLimitMs(p.maxDowntimeMs),
    maxBandwidthBytesPerSec: p.bandwidthBytesPerSec || undefined,
    deadlineMs: completionTimeoutMs(p, memBytes),
    postcopy: 'auto',
    throttle: true,
    multifdChannels: 0,
    signal,
  };
}

/** QEMU's status to the engine's phase (post-copy: the target runs the VM, cancel is refused). */
function phaseOf(status: string): MigrationPhase {
  if (status.startsWith('postcopy')) return 'activating';
  if (status === 'device' || status === 'pre-switchover') return 'stopcopy';
  if (status === 'completed') return 'verifying';
  return 'precopy';
}

/** One outgoing QEMU migration through the tunnel. */
export class QemuSource {
  private phase: MigrationPhase = 'reserving';

  constructor(private readonly o: QemuSourceOptions) {}

  get currentPhase(): MigrationPhase {
    return this.phase;
  }

  async run(): Promise<MigrationResult> {
    const o = this.o;
    const dom = o.domain;
    const t0 = performance.now();
    const timeout = completionTimeoutMs(o.policy, dom.spec.memBytes);
    const call = o.conn.openStream(timeout + 60_000);
    let tunnel: SocketTunnel | undefined;
    let streamError: DroverError | undefined;
    let finished = false;
    // Acks after Accepted: StreamData to QEMU, Verified/Activated to the waiter below.
    let onAck: ((a: Ack) => void) | undefined;
    let onFail: ((e: DroverError) => void) | undefined;
    const early: Ack[] = [];
    const fail = (e: DroverError) => {
      if (finished || streamError) return;
      streamError = e;
      tunnel?.destroy(); // QEMU sees a broken stream: the migration fails, the source VM keeps running
      server?.close();
      onFail?.(e);
    };
    call.on('data', (b: Buffer) => {
      let a: Ack;
      try {
        a = decodeAck(b);
      } catch (err) {
        fail(DroverError.from(err));
        return;
      }
      if (a.kind === 'stream') {
        if (tunnel) tunnel.deliver(a.data, a.eof);
        else early.push(a);
      } else if (a.kind === 'batch') {
        tunnel?.credit(a.bytes); // the target QEMU took these bytes: the window moves
      } else if (onAck) onAck(a);
      else early.push(a);
    });
    call.on('error', (err) => fail(fromServiceError(err, `target ${o.conn.address} Transfer`)));
    call.on('end', () => { if (!finished) fail(new DroverError('UNAVAILABLE', `target ${o.conn.address} closed the migration stream`)); });
    const nextAck = (what: string, ms: number): Promise<Ack> => new Promise((resolve, reject) => {
      const queued = early.findIndex((a) => a.kind !== 'stream');
      if (queued >= 0) return resolve(early.splice(queued, 1)[0]);
      if (streamError) return reject(streamError);
      const timer = setTimeout(() => reject(new DroverError('DEADLINE_EXCEEDED', `target ${o.conn.address}: no ${what} within ${ms} ms`)), ms);
      onAck = (a) => { clearTimeout(timer); onAck = undefined; onFail = undefined; resolve(a); };
      onFail = (e) => { clearTimeout(timer); onAck = undefined; onFail = undefined; reject(e); };
    });

    traceQmp(dom.proc.qmp, 'source');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-tunnel-'));
    const sockPath = path.join(dir, 'out.sock');
    let server: net.Server | undefined;
    let qres: QemuMigrationResult | undefined;
    let lastSample: QemuMigrationProgress | undefined;
    let wasAccepted = false;
    try {
      // 1. Start: same version/token/geometry checks as a page stream, plus the tunnel kind.
      call.write(encodeFrame(frames.startTunnel(o.reservation.migrationId, o.reservation.token, PAGE_SIZE, dom.pageCount)));
      const accepted = await nextAck('Accepted', 30_000);
      if (accepted.kind !== 'accepted') throw new DroverError('INTERNAL', `target ${o.conn.address} answered Start with ${accepted.kind}`);
      wasAccepted = true;
      if (o.signal.aborted) throw new DroverError('CANCELLED', `migration ${o.migrationId} cancelled in phase reserving`);

      // 2. The socket the source QEMU migrates into; its one connection is the tunnel.
      server = net.createServer((sock) => {
        if (tunnel || streamError) { sock.destroy(); return; } // one channel (no multifd through the tunnel)
        tunnel = new SocketTunnel(sock, call as any, false, (err) => {
          if (!finished && !qres) o.log?.({ msg: 'qemu tunnel socket failed', migration: o.migrationId, error: err.message });
        });
        tunnel.setWindow(accepted.windowBytes);
        for (const a of early.splice(0)) if (a.kind === 'stream') tunnel.deliver(a.data, a.eof);
      });
      await new Promise<void>((resolve, reject) => { server!.once('error', reject); server!.listen(sockPath, () => resolve()); });

      // 3. QEMU migrates with the engine's policy; progress flows as the sim path's does.
      this.phase = 'precopy';
      const qp: QemuMigrationPolicy = {
        ...qemuPolicy(o.policy, dom.spec.memBytes, o.signal),
        // post-copy's switchover (discards + device state) goes out behind at most SWITCHOVER_BACKLOG_BYTES
        beforeSwitchover: () => tunnel?.drainTo(SWITCHOVER_BACKLOG_BYTES, SWITCHOVER_DRAIN_MS) ?? Promise.resolve(),
      };
      try {
        qres = await o.hypervisor.migrateOut(dom, { socketPath: sockPath, postcopy: !!accepted.postcopy, multifdChannels: 0 }, qp, (p) => {
          lastSample = p;
          this.phase = phaseOf(p.status);
          o.onProgress({
            migrationId: o.migrationId, phase: this.phase, round: p.rounds, remainingBytes: p.remainingBytes,
            dirtyRateBytesPerSec: p.dirtyRateBytesPerSec, rateBytesPerSec: p.transferRateBytesPerSec, sentBytes: p.transferredBytes,
            etaMs: p.transferRateBytesPerSec > 0 ? (p.remainingBytes / p.transferRateBytesPerSec) * 1000 : NaN,
            elapsedMs: performance.now() - t0,
          });
          if (p.action) o.log?.({ msg: `qemu policy: ${p.action}`, migration: o.migrationId, reason: p.reason });
        });
      } catch (err) {
        // The tunnel's failure is the cause when QEMU only saw a broken socket.
        const e = DroverError.from(err);
        if (streamError && e.code === 'ABORTED') throw new DroverError('ABORTED', `${streamError.message}; ${e.message}`, { cause: err });
        throw e;
      }
      this.phase = 'verifying';
      // Everything QEMU wrote goes out before Complete (it closes the socket when done).
      if (tunnel) await Promise.race([tunnel.socketEnded, new Promise((r) => setTimeout(r, 5000))]);
      if (streamError) throw streamError;
      const pausedAtMs = dom.heartbeat().lastBeatMs;
      trace(`source completed; last source beat ${pausedAtMs.toFixed(1)}`);
      call.write(encodeFrame(frames.complete(Buffer.alloc(0), 0, qres.rounds, pausedAtMs, true, 0)));
      let activated: Extract<Ack, { kind: 'activated' }> | undefined;
      try {
        for (;;) {
          const a = await nextAck('Activated', 40_000);
          if (a.kind === 'activated') { activated = a; break; }
          if (a.kind !== 'verified') throw new DroverError('INTERNAL', `target ${o.conn.address} answered Complete with ${a.kind}`);
        }
      } catch (err) {
        // Completed here, not running there: resume the source unless the target already owned the VM.
        if (!dom.inPostcopy && dom.state() !== 'destroyed') {
          await dom.resume().catch(() => undefined);
          throw new DroverError('ABORTED', `target did not run ${dom.spec.name}: ${DroverError.from(err).message}; the source VM resumed`, { cause: err });
        }
        throw new DroverError('DATA_LOSS', `${dom.spec.name} switched over in post-copy but the target did not confirm it runs: ${DroverError.from(err).message}`, { cause: err });
      }
      finished = true;
      call.end();
      this.phase = 'done';
      const totalMs = performance.now() - t0;
      const stats = tunnel?.stats ?? { outWireBytes: 0, outBytes: 0, outMessages: 0, inBytes: 0 };
      // Downtime as the engine defines it: source vCPUs stop -> target vCPUs run (QEMU's STOP and
      // RESUME events). QEMU's own figure is the source's view: it stops at the last byte written
      // without a return path, and with one it also waits for the target to close it.
      const downtimeMs = stopToResumeMs(dom, activated.resumedAtMs, performance.timeOrigin + t0) ?? qres.downtimeMs;
      const blackout = (activated.firstBeatMs ?? activated.resumedAtMs) - pausedAtMs;
      o.log?.({ msg: 'qemu migration completed', migration: o.migrationId, downtimeMs: Math.round(downtimeMs * 10) / 10, qemuDowntimeMs: qres.downtimeMs, guestBlackoutMs: Math.round(blackout), action: qres.action, reason: qres.reason, tunnelMessages: stats.outMessages, tunnelBytes: stats.outBytes });
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
      });
    } catch (err) {
      const e = DroverError.from(err);
      // Tell the target to discard its QEMU (it also does when the stream breaks).
      if (!streamError) {
        try { call.write(encodeFrame(frames.abort(e.message.slice(0, 500)))); call.end(); } catch { /* stream gone */ }
      }
      finished = true;
      // Refused at Start (e.g. the target runs another hypervisor): release the reservation now.
      if (!wasAccepted) await o.conn.abort(o.reservation.migrationId, o.reservation.token);
      o.log?.({ msg: 'qemu migration failed', migration: o.migrationId, lastStatus: lastSample?.status, error: e.message });
      throw e;
    } finally {
      tunnel?.destroy();
      server?.close();
      fs.rmSync(dir, { recursive: true, force: true });
      if (!finished) call.cancel();
    }
  }
}
