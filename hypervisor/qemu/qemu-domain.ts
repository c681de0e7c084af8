/**
 * A QEMU-backed domain: one QEMU process running the Drover test guest, controlled over QMP.
 * It implements the life cycle and the guest probe (heartbeat on the serial console); it
 * migrates through QEMU's own stream (qemu-migration.ts), so it offers no page access.
 */
import { DroverError, failedPrecondition } from '../../lib/errors';
import { PAGE_SIZE, type DirtyRateMeasurement, type Domain, type DomainState, type DomainStats, type GuestCheckResult, type HeartbeatReading, type VmSpec } from '../types';
import type { Accel } from './accel';
import { guestParams } from './guest-params';
import { QemuStreamMigration } from './qemu-migration';
import { measureQemuDirtyRate } from './qemu-dirty-rate';
import type { QemuProcess } from './qemu-process';
import type { QemuNativeConfig } from './migration-tls';
import { setTimeout as sleep } from 'node:timers/promises';

/** Default wait for the guest's fill to finish, ms. */
const READY_TIMEOUT_MS = 120_000;
/** Heartbeat poll period of waitBeats, ms. */
const BEAT_POLL_MS = 5;
/** guestCheck: beats the heartbeat must grow by (10 guest ms) ... */
const CHECK_BEATS = 9;
/** ... within this many ms. */
const CHECK_WINDOW_MS = 2000;

/** No native transport: QEMU's stream goes through the agents' tunnel. */
const TUNNEL_ONLY: QemuNativeConfig = { transport: '', host: '127.0.0.1' };

/** A QEMU-backed domain. */
export class QemuDomain implements Domain {
  /** Guest pages (memBytes / PAGE_SIZE): the geometry a migration's Start carries. */
  readonly pageCount: number;
  /** QEMU's own stream migration of this domain. */
  readonly stream: QemuStreamMigration;
  /** The domain migrates through QEMU's stream, not page by page. */
  readonly migration: { readonly kind: 'stream'; readonly stream: QemuStreamMigration };
  private destroyed = false;
  private lastKnown: DomainState;
  /** QEMU's wall-clock time (ms) of the last STOP event: the vCPUs stopped (0 = never). */
  stoppedAtMs = 0;
  /** QEMU's wall-clock time (ms) of the last RESUME event: the vCPUs run again (0 = never). */
  resumedAtMs = 0;

  /**
   * @param native the node's native migration settings (qemu-hypervisor.ts options; default: tunnel only)
   */
  constructor(readonly spec: VmSpec, readonly proc: QemuProcess, incoming: boolean, readonly accel: Accel, readonly native: QemuNativeConfig = TUNNEL_ONLY) {
    this.pageCount = spec.memBytes / PAGE_SIZE;
    this.lastKnown = incoming ? 'incoming' : 'paused';
    this.stream = new QemuStreamMigration(this);
    this.migration = { kind: 'stream', stream: this.stream };
    proc.qmp.on('event', (e: { event: string; timestampMs: number }) => {
      if (e.event === 'STOP') {
        this.lastKnown = this.lastKnown === 'incoming' ? 'incoming' : 'paused';
        this.stoppedAtMs = e.timestampMs;
      } else if (e.event === 'RESUME') {
        this.lastKnown = 'running';
        this.resumedAtMs = e.timestampMs;
      }
    });
  }

  /** Last known state (from QMP STOP/RESUME events). */
  state(): DomainState {
    if (this.destroyed || !this.proc.alive) return 'destroyed';
    return this.lastKnown;
  }

  /** QEMU's own run state (query-status), e.g. "running", "paused", "postmigrate", "inmigrate". */
  async status(): Promise<string> {
    if (this.destroyed || !this.proc.alive) return 'destroyed';
    const r = await this.proc.qmp.execute<{ status: string }>('query-status');
    return r.status;
  }

  /** Stops the vCPUs (QMP stop). */
  async pause(): Promise<void> {
    this.live('pause');
    await this.proc.qmp.execute('stop');
    this.lastKnown = 'paused';
  }

  /** Runs the vCPUs (QMP cont). */
  async resume(): Promise<void> {
    this.live('resume');
    await this.proc.qmp.execute('cont');
    this.lastKnown = 'running';
  }

  /** Kills the QEMU process. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.proc.kill(false);
  }

  /** Waits until the guest has finished its fill ("#ready" on the console). */
  async whenReady(timeoutMs = READY_TIMEOUT_MS): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.proc.console.whenReady(),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new DroverError('DEADLINE_EXCEEDED', `guest ${this.spec.name} not ready within ${timeoutMs} ms`)), timeoutMs); }),
        this.proc.exited.then(() => { throw this.exitError('guest boot'); }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves when the heartbeat count exceeds `beats` (i.e. the guest runs), or rejects after timeoutMs. */
  async waitBeats(beats: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.proc.console.beats <= beats) {
      if (!this.proc.alive) throw this.exitError('waiting for heartbeat');
      if (Date.now() > deadline) {
        const tail = this.proc.console.tail();
        throw new DroverError('DEADLINE_EXCEEDED', `guest ${this.spec.name}: heartbeat stuck at ${this.proc.console.beats} for ${timeoutMs} ms (QEMU state ${this.lastKnown}${tail ? `; guest output: ${JSON.stringify(tail.slice(-200))}` : ''})`);
      }
      await sleep(BEAT_POLL_MS);
    }
  }

  /** The guest's heartbeat as its serial console reports it. */
  heartbeat(): HeartbeatReading {
    const c = this.proc.console;
    return { lastBeatMs: c.lastBeatMs, maxGapMs: c.maxGapMs, beats: c.beats };
  }

  /** Host time of the first heartbeat this process saw (target: the guest's first beat after switchover). */
  firstBeatMs(): number {
    return this.proc.console.firstBeatMs;
  }

  /** Starts a new max-gap measurement window. */
  resetHeartbeatGap(): void {
    this.proc.console.resetGap();
  }

  /** Dirty rate from the guest's own reports, touched RAM from its ready line (else its parameters). */
  stats(): DomainStats {
    const c = this.proc.console;
    const r = c.ready;
    const g = guestParams(this.spec);
    const touched = r ? Math.max(r.fillKiB, r.wssKiB) * 1024 : Math.max(g.fillBytes, g.wssBytes);
    const running = this.state() === 'running';
    return {
      dirtyRateBytesPerSec: running ? Math.min(c.pagesPerSec * PAGE_SIZE, Number.MAX_SAFE_INTEGER) : 0,
      touchedBytes: touched,
      cpu: running ? this.spec.vcpus : 0,
    };
  }

  /**
   * The qemu guest has no memory self-check (memory verification is N/A): `ok` means the guest
   * keeps beating, i.e. the heartbeat grows by 10 beats (10 guest ms) within 2 s.
   */
  async guestCheck(): Promise<GuestCheckResult> {
    const before = this.proc.console.beats;
    try {
      this.live('guestCheck');
      await this.waitBeats(before + CHECK_BEATS, CHECK_WINDOW_MS);
    } catch (err) {
      return { ok: false, pagesChecked: 0, badPages: 0, detail: `qemu: heartbeat not growing: ${(err as Error).message}` };
    }
    return { ok: true, pagesChecked: 0, badPages: 0, detail: `qemu: memory verification N/A; heartbeat continues (${this.proc.console.beats} beats)` };
  }

  /** QEMU's calc-dirty-rate over about `windowMs` (qemu-dirty-rate.ts picks the mode for the accelerator). */
  async measureDirtyRate(windowMs: number): Promise<DirtyRateMeasurement> {
    this.live('measureDirtyRate');
    if (this.state() !== 'running') throw failedPrecondition(`measureDirtyRate: domain ${this.spec.name} is ${this.state()}, not running`);
    return measureQemuDirtyRate(this.proc.qmp, this.accel, windowMs);
  }

  /** True once post-copy has started for the current/last migration. */
  get inPostcopy(): boolean {
    return this.stream.inPostcopy;
  }

  /** Cancels the outgoing migration (migrate_cancel; the source keeps running). Refused after post-copy started. */
  cancelMigration(): Promise<void> {
    return this.stream.cancel();
  }

  /** Throws when the domain is destroyed or its QEMU has exited; `what` names the step. */
  live(what: string): void {
    if (this.destroyed) throw failedPrecondition(`${what}: domain ${this.spec.name} is destroyed`);
    if (!this.proc.alive) throw this.exitError(what);
  }

  /** An error naming `what`, QEMU's command line and its stderr. */
  exitError(what: string): DroverError {
    const se = this.proc.stderrText().trim();
    return new DroverError('UNAVAILABLE', `${what}: QEMU for ${this.spec.name} exited (${this.proc.commandLine})${se ? `\nQEMU stderr: ${se}` : ''}`);
  }
}
