/**
 * The `qemu` hypervisor driver: each domain is one QEMU process running the Drover test guest
 * (guest/), controlled over QMP. QEMU does the page work of a migration itself (its own dirty
 * tracking and stream); this driver sets its policy and watches it:
 *
 *   target: createIncoming(spec) → startIncoming(domain) → { socketPath }   (migrate-incoming unix:…)
 *   source: migrateOut(domain, incoming, policy, onProgress)                 (migrate unix:…)
 *
 * The node agents carry the bytes between the two unix sockets (tests and the bench use a Node
 * pipe, see unix-bridge.ts). The policy needs no hand tuning: pre-copy runs until it is seen not
 * to converge at the downtime target (dirty rate close to the transfer rate, or the remaining
 * bytes not shrinking from one dirty sync to the next, or too many rounds/bytes), then switches
 * to post-copy when the target supports it, else throttles the guest (auto-converge, made
 * steeper). The target autostarts when the migration completes.
 */
import * as path from 'node:path';
import { validateSpec as validateSharedSpec } from '../spec';
import { DroverError, failedPrecondition, invalidArgument } from '../../lib/errors';
import {
  PAGE_SIZE,
  type Domain,
  type DomainState,
  type DomainStats,
  type GuestCheckResult,
  type HeartbeatReading,
  type Hypervisor,
  type ProfileName,
  type VmSpec,
} from '../types';
import { detectAccel, type Accel } from './accel';
import { ensureGuest } from './guest-image';
import { QemuProcess } from './qemu-process';
import { setTimeout as sleep } from 'node:timers/promises';

const MiB = 1024 * 1024;

/** Guest workload parameters as the guest's command line takes them. */
export interface GuestParams {
  profile: ProfileName;
  fillBytes: number;
  wssBytes: number;
  /** Bytes per second of working-set writes; 0 = flat out. */
  rateBytesPerSec: number;
  seed: number;
}

/** Profile defaults (fractions of RAM where sizes scale with the VM), like the sim driver's. */
export function guestParams(spec: VmSpec): GuestParams {
  const mem = spec.memBytes;
  const d: Record<ProfileName, { fill: number; wss: number; rate: number }> = {
    idle: { fill: mem / 8, wss: 1 * MiB, rate: 64 * 1024 },
    web: { fill: mem / 2, wss: 16 * MiB, rate: 16 * MiB },
    db: { fill: (mem * 3) / 4, wss: Math.min(mem / 4, 256 * MiB), rate: 64 * MiB },
    mmuncher: { fill: mem / 2, wss: Math.min(64 * MiB, mem / 4), rate: 0 },
  };
  const p = d[spec.profile];
  if (!p) throw invalidArgument(`spec.profile: unknown profile ${JSON.stringify(spec.profile)}`);
  return {
    profile: spec.profile,
    fillBytes: spec.fillBytes ?? p.fill,
    wssBytes: spec.wssBytes || p.wss,
    // mmuncher is flat out unless a rate is given; others use their default rate when 0/absent
    rateBytesPerSec: spec.dirtyRateBytesPerSec || p.rate,
    seed: spec.seed ?? 1,
  };
}

/** The guest's -append string for a spec. */
export function guestCmdline(spec: VmSpec): string {
  const g = guestParams(spec);
  const kib = (b: number) => Math.floor(b / 1024);
  return `profile=${g.profile} fill=${kib(g.fillBytes)} wss=${kib(g.wssBytes)} rate=${kib(g.rateBytesPerSec)} seed=${g.seed >>> 0}`;
}

/** Options of the driver. */
export interface QemuHypervisorOptions {
  /** QEMU binary; default qemu-system-x86_64. */
  binary?: string;
  /** Accelerator; default 'auto' (probe KVM by running a guest, else TCG). */
  accel?: Accel | 'auto';
  /** Wait for the guest's fill to finish in createDomain (default true). */
  waitReady?: boolean;
  /** Milliseconds to wait for boot (and fill); default 120000. */
  bootTimeoutMs?: number;
}

/** Migration policy: QEMU's knobs plus the switch decision. Every field optional. */
export interface QemuMigrationPolicy {
  /** Downtime target in ms (QEMU downtime-limit); default 5. */
  downtimeLimitMs?: number;
  /** Bandwidth cap in bytes/s; 0 or absent = unlimited. */
  maxBandwidthBytesPerSec?: number;
  /** multifd channels; 0/1/absent = one stream (multifd is exclusive with post-copy in QEMU 7.2). */
  multifdChannels?: number;
  /** 'auto' (default): switch when pre-copy does not converge; 'never'; 'immediate': right after the first pass. */
  postcopy?: 'auto' | 'never' | 'immediate';
  /** Throttle the guest when pre-copy does not converge and post-copy is unavailable (default true). */
  throttle?: boolean;
  /** Give up (migrate_cancel, source keeps running) after this many ms; absent = never. */
  deadlineMs?: number;
  /** query-migrate poll period in ms; default 50. */
  pollMs?: number;
  /** Cancels the migration (refused once post-copy has started: the target owns the VM then). */
  signal?: AbortSignal;
  /**
   * Called right before the driver starts post-copy (the source then stops the VM). A transport
   * that buffers (the agents' tunnel) drains its backlog here, so the switchover does not queue
   * behind pre-copy pages already in flight.
   */
  beforeSwitchover?: () => Promise<void>;
}

/** What the target offers; returned by startIncoming and passed to migrateOut. */
export interface IncomingEndpoint {
  /** Unix socket the target QEMU listens on. */
  socketPath: string;
  /** True when post-copy is enabled on the target (userfaultfd works there). */
  postcopy: boolean;
  /** multifd channels the target expects (0 = off). */
  multifdChannels: number;
}

/** One progress sample, from query-migrate. */
export interface QemuMigrationProgress {
  status: string;
  /** Dirty bitmap syncs so far (QEMU's rounds). */
  rounds: number;
  remainingBytes: number;
  dirtyRateBytesPerSec: number;
  transferRateBytesPerSec: number;
  transferredBytes: number;
  totalRamBytes: number;
  expectedDowntimeMs: number;
  elapsedMs: number;
  postcopy: boolean;
  throttlePercent: number;
  /** Set on the sample where the policy acted. */
  action?: 'postcopy' | 'throttle';
  /** Why the policy acted. */
  reason?: string;
}

/** Outcome of a completed migration. */
export interface QemuMigrationResult {
  status: 'completed';
  /** QEMU's measured downtime (ms). */
  downtimeMs: number;
  totalTimeMs: number;
  setupTimeMs: number;
  transferredBytes: number;
  rounds: number;
  /** Whether the policy switched to post-copy, throttled, or neither. */
  action: 'none' | 'postcopy' | 'throttle';
  reason: string;
}

const UNLIMITED_BW = 1e12; // bytes/s: QEMU has no "0 = unlimited", this is far above any link

/** A QEMU-backed domain. */
export class QemuDomain implements Domain {
  readonly pageCount: number;
  readonly slotPages: number;
  private destroyed = false;
  private lastKnown: DomainState;
  private postcopyStarted = false;
  private migrating: { cancel: () => Promise<void> } | undefined;

  constructor(readonly spec: VmSpec, readonly proc: QemuProcess, incoming: boolean, readonly accel: Accel) {
    this.pageCount = spec.memBytes / PAGE_SIZE;
    this.slotPages = this.pageCount;
    this.lastKnown = incoming ? 'incoming' : 'paused';
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

  /** QEMU's wall-clock time (ms) of the last STOP event: the vCPUs stopped (0 = never). */
  stoppedAtMs = 0;
  /** QEMU's wall-clock time (ms) of the last RESUME event: the vCPUs run again (0 = never). */
  resumedAtMs = 0;

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

  async pause(): Promise<void> {
    this.live('pause');
    await this.proc.qmp.execute('stop');
    this.lastKnown = 'paused';
  }

  async resume(): Promise<void> {
    this.live('resume');
    await this.proc.qmp.execute('cont');
    this.lastKnown = 'running';
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.proc.kill(false);
  }

  /** Waits until the guest has finished its fill ("#ready" on the console). */
  async whenReady(timeoutMs = 120_000): Promise<void> {
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
      await sleep(5);
    }
  }

  heartbeat(): HeartbeatReading {
    const c = this.proc.console;
    return { lastBeatMs: c.lastBeatMs, maxGapMs: c.maxGapMs, beats: c.beats };
  }

  /** Host time of the first heartbeat this process saw (target: the guest's first beat after switchover). */
  firstBeatMs(): number {
    return this.proc.console.firstBeatMs;
  }

  resetHeartbeatGap(): void {
    this.proc.console.resetGap();
  }

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

  // ---- page-level access: QEMU tracks and sends pages itself ----
  private unimpl(what: string): never {
    throw new DroverError('UNIMPLEMENTED', `${what}: the qemu driver migrates through QEMU's own stream (use migrateOut/startIncoming)`);
  }
  startDirtyLog(): void { this.unimpl('startDirtyLog'); }
  stopDirtyLog(): void { this.unimpl('stopDirtyLog'); }
  getAndClearDirtyLog(): Uint32Array { return this.unimpl('getAndClearDirtyLog'); }
  peekDirtyLog(): Uint32Array { return this.unimpl('peekDirtyLog'); }
  markDirty(_bitmap: Uint32Array): void { this.unimpl('markDirty'); }
  pageView(_pfn: number, _count: number): Uint8Array { return this.unimpl('pageView'); }
  isZeroPage(_pfn: number): boolean { return this.unimpl('isZeroPage'); }
  populatedBitmap(): Uint32Array { return this.unimpl('populatedBitmap'); }
  saveDeviceState(): Uint8Array { return this.unimpl('saveDeviceState'); }
  loadDeviceState(_state: Uint8Array): void { this.unimpl('loadDeviceState'); }
  /**
   * The qemu guest has no memory self-check (memory verification is N/A): `ok` means the guest
   * keeps beating, i.e. the heartbeat grows by 10 beats (10 guest ms) within 2 s.
   */
  async guestCheck(): Promise<GuestCheckResult> {
    const before = this.proc.console.beats;
    try {
      this.live('guestCheck');
      await this.waitBeats(before + 9, 2000);
    } catch (err) {
      return { ok: false, pagesChecked: 0, badPages: 0, detail: `qemu: heartbeat not growing: ${(err as Error).message}` };
    }
    return { ok: true, pagesChecked: 0, badPages: 0, detail: `qemu: memory verification N/A; heartbeat continues (${this.proc.console.beats} beats)` };
  }

  // ---- migration (used by QemuHypervisor) ----
  /** @internal */ setMigrating(m: { cancel: () => Promise<void> } | undefined): void { this.migrating = m; }
  /** @internal */ markPostcopy(): void { this.postcopyStarted = true; }
  /** True once post-copy has started for the current/last migration. */
  get inPostcopy(): boolean { return this.postcopyStarted; }

  /** Cancels the outgoing migration (migrate_cancel; the source keeps running). Refused after post-copy started. */
  async cancelMigration(): Promise<void> {
    if (!this.migrating) throw failedPrecondition(`cancel: no migration of ${this.spec.name} in progress`);
    await this.migrating.cancel();
  }

  live(what: string): void {
    if (this.destroyed) throw failedPrecondition(`${what}: domain ${this.spec.name} is destroyed`);
    if (!this.proc.alive) throw this.exitError(what);
  }

  exitError(what: string): DroverError {
    const se = this.proc.stderrText().trim();
    return new DroverError('UNAVAILABLE', `${what}: QEMU for ${this.spec.name} exited (${this.proc.commandLine})${se ? `\nQEMU stderr: ${se}` : ''}`);
  }
}

/** The qemu driver. */
export class QemuHypervisor implements Hypervisor {
  readonly kind = 'qemu' as const;
  private readonly domains = new Set<QemuDomain>();

  constructor(private readonly opts: QemuHypervisorOptions = {}) {}

  /** The accelerator domains will use. */
  async accel(): Promise<Accel> {
    const a = this.opts.accel ?? 'auto';
    return a === 'auto' ? (await detectAccel(this.opts.binary ?? 'qemu-system-x86_64')).accel : a;
  }

  private async spawn(spec: VmSpec, incoming: boolean): Promise<QemuDomain> {
    validateSpec(spec);
    const kernel = await ensureGuest();
    const accel = await this.accel();
    const proc = await QemuProcess.start({
      binary: this.opts.binary,
      accel,
      memMiB: Math.ceil(spec.memBytes / MiB),
      vcpus: spec.vcpus,
      kernel,
      append: guestCmdline(spec),
      extraArgs: diskArgs(spec),
      incoming,
      name: spec.name,
      startTimeoutMs: 15_000,
    });
    const dom = new QemuDomain(spec, proc, incoming, accel);
    this.domains.add(dom);
    proc.exited.then(() => this.domains.delete(dom));
    return dom;
  }

  /** Boots a guest; resolves once it beats (and, unless waitReady=false, has finished its fill). */
  async createDomain(spec: VmSpec): Promise<QemuDomain> {
    const dom = await this.spawn(spec, false);
    try {
      await dom.resume();
      const t = this.opts.bootTimeoutMs ?? 120_000;
      await dom.waitBeats(0, t);
      if (this.opts.waitReady ?? true) await dom.whenReady(t);
    } catch (err) {
      await dom.destroy();
      throw err;
    }
    return dom;
  }

  /** Starts an empty QEMU waiting for a migration (`-incoming defer`); call startIncoming next. */
  async createIncoming(spec: VmSpec): Promise<QemuDomain> {
    return this.spawn(spec, true);
  }

  /**
   * Makes the target listen: sets capabilities that must match the source's (post-copy when
   * userfaultfd works here, unless `postcopy: false`; multifd when channels > 1), then
   * `migrate-incoming unix:<dir>/migrate.sock`. The guest autostarts when the migration completes.
   */
  async startIncoming(dom: QemuDomain, opts: { postcopy?: boolean; multifdChannels?: number } = {}): Promise<IncomingEndpoint> {
    dom.live('startIncoming');
    const qmp = dom.proc.qmp;
    const channels = opts.multifdChannels && opts.multifdChannels > 1 ? opts.multifdChannels : 0;
    let postcopy = false;
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    if (opts.postcopy !== false && channels === 0) {
      try {
        await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-ram', state: true }] });
        postcopy = true;
      } catch {
        postcopy = false; // no userfaultfd here: the source will throttle instead
      }
    }
    if (channels) {
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
      await qmp.execute('migrate-set-parameters', { 'multifd-channels': channels });
    }
    const socketPath = path.join(dom.proc.dir, 'migrate.sock');
    await qmp.execute('migrate-incoming', { uri: `unix:${socketPath}` });
    return { socketPath, postcopy, multifdChannels: channels };
  }

  /**
   * Migrates `dom` to the target listening at `target` (an IncomingEndpoint, or a socket path
   * that reaches it, e.g. an agent's bridge; pass `{...endpoint, socketPath: bridgePath}`).
   * Resolves on completion (the source is then paused in QEMU's "postmigrate" state); rejects
   * with CANCELLED / DEADLINE_EXCEEDED / ABORTED (stream failed) and the source keeps running.
   */
  async migrateOut(
    dom: QemuDomain,
    target: IncomingEndpoint,
    policy: QemuMigrationPolicy = {},
    onProgress?: (p: QemuMigrationProgress) => void,
  ): Promise<QemuMigrationResult> {
    dom.live('migrateOut');
    const qmp = dom.proc.qmp;
    const downtimeLimitMs = policy.downtimeLimitMs ?? 5;
    const bw = policy.maxBandwidthBytesPerSec ? policy.maxBandwidthBytesPerSec : UNLIMITED_BW;
    const pollMs = policy.pollMs ?? 50;
    const postcopyMode = policy.postcopy ?? 'auto';
    const usePostcopy = target.postcopy && postcopyMode !== 'never';
    const throttle = policy.throttle ?? true;
    const caps: Array<{ capability: string; state: boolean }> = [
      { capability: 'events', state: true },
      { capability: 'postcopy-ram', state: target.postcopy }, // must match the target's
      { capability: 'multifd', state: target.multifdChannels > 1 },
      // QEMU's own throttle only as the fallback when post-copy is not available
      { capability: 'auto-converge', state: !usePostcopy && throttle },
    ];
    await qmp.execute('migrate-set-capabilities', { capabilities: caps });
    const params: Record<string, unknown> = { 'downtime-limit': downtimeLimitMs, 'max-bandwidth': Math.round(bw) };
    if (target.multifdChannels > 1) params['multifd-channels'] = target.multifdChannels;
    if (policy.maxBandwidthBytesPerSec === undefined || policy.maxBandwidthBytesPerSec === 0) {
      params['max-postcopy-bandwidth'] = 0; // 0 = unlimited for post-copy in QEMU
    }
    await qmp.execute('migrate-set-parameters', params);

    const started = Date.now();
    let action: 'none' | 'postcopy' | 'throttle' = 'none';
    let reason = 'pre-copy converged';
    let cancelled: 'user' | 'deadline' | undefined;
    let throttleSteps = 0;
    let throttleRound = -1;
    let effDowntimeMs = downtimeLimitMs;

    const cancel = async (why: 'user' | 'deadline') => {
      if (dom.inPostcopy) {
        throw failedPrecondition(`cancel refused: ${dom.spec.name} is in post-copy, the target already runs the VM`);
      }
      cancelled = why;
      await qmp.execute('migrate_cancel');
    };
    dom.setMigrating({ cancel: () => cancel('user') });
    const onAbort = () => { cancel('user').catch(() => undefined); };
    policy.signal?.addEventListener('abort', onAbort);

    // Convergence watch: remaining bytes right after each dirty sync (the dirty set found then).
    const atSync: number[] = [];
    let lastRounds = 0;
    let firstPassEndMs = 0;
    let firstPassMs = 0;
    try {
      if (policy.signal?.aborted) throw new DroverError('CANCELLED', `migration of ${dom.spec.name} cancelled before start`);
      await qmp.execute('migrate', { uri: `unix:${target.socketPath}` });
      for (;;) {
        await sleep(pollMs);
        if (!dom.proc.alive) throw dom.exitError('migration');
        const info = await qmp.execute<QueryMigrate>('query-migrate');
        const p = toProgress(info, started);
        const elapsed = Date.now() - started;
        if (info.status === 'completed') {
          const r: QemuMigrationResult = {
            status: 'completed',
            downtimeMs: info.downtime ?? 0,
            totalTimeMs: info['total-time'] ?? elapsed,
            setupTimeMs: info['setup-time'] ?? 0,
            transferredBytes: info.ram?.transferred ?? 0,
            rounds: info.ram?.['dirty-sync-count'] ?? 0,
            action,
            reason,
          };
          onProgress?.(p);
          return r;
        }
        if (info.status === 'failed' || info.status === 'cancelled') {
          if (cancelled === 'deadline') throw new DroverError('DEADLINE_EXCEEDED', `migration of ${dom.spec.name} did not complete within ${policy.deadlineMs} ms (cancelled; source keeps running)`);
          if (cancelled === 'user') throw new DroverError('CANCELLED', `migration of ${dom.spec.name} cancelled; source keeps running`);
          throw new DroverError('ABORTED', `migration of ${dom.spec.name} ${info.status}: ${info['error-desc'] ?? 'stream broken'}; source keeps running`);
        }
        if (info.status === 'postcopy-paused') {
          throw new DroverError('DATA_LOSS', `migration of ${dom.spec.name}: post-copy stream broke (postcopy-paused); the VM state is split between source and target until recovery`);
        }
        if (policy.deadlineMs !== undefined && elapsed > policy.deadlineMs && !dom.inPostcopy && !cancelled) {
          await cancel('deadline');
        }

        // ---- policy: is pre-copy converging at the downtime target? ----
        if (p.rounds !== lastRounds && info.status === 'active') {
          if (p.rounds >= 2 && firstPassEndMs === 0) {
            firstPassEndMs = elapsed;
            firstPassMs = elapsed;
          }
          if (p.rounds >= 2) atSync.push(p.remainingBytes);
          lastRounds = p.rounds;
        }
        if (action === 'none' && info.status === 'active' && firstPassEndMs > 0 && !cancelled) {
          const why = notConverging(p, atSync, downtimeLimitMs, elapsed - firstPassEndMs, firstPassMs, postcopyMode);
          if (why) {
            if (usePostcopy) {
              await policy.beforeSwitchover?.();
              await qmp.execute('migrate-start-postcopy');
              dom.markPostcopy();
              action = 'postcopy';
              reason = why;
              onProgress?.({ ...p, action, reason });
              continue;
            } else if (throttle) {
              action = 'throttle';
              reason = why;
              onProgress?.({ ...p, action, reason });
            }
          }
        }
        if (action === 'throttle' && p.rounds > throttleRound) {
          throttleRound = p.rounds;
          // Steeper throttle each further round without convergence (QEMU caps at max-cpu-throttle).
          throttleSteps++;
          await qmp.execute('migrate-set-parameters', {
            'cpu-throttle-initial': Math.min(99, 20 + 20 * throttleSteps),
            'cpu-throttle-increment': Math.min(50, 10 * throttleSteps),
            'max-cpu-throttle': 99,
          }).catch(() => undefined);
          // Last resort: the throttle is at its ceiling and rounds still do not fit the target.
          // Widen the downtime limit (doubling per round, up to 1 s) rather than never finishing.
          if (p.throttlePercent >= 99 && effDowntimeMs < 1000) {
            effDowntimeMs = Math.min(1000, effDowntimeMs * 2);
            await qmp.execute('migrate-set-parameters', { 'downtime-limit': effDowntimeMs }).catch(() => undefined);
            reason = `${reason}; throttle at 99%, downtime limit widened to ${effDowntimeMs} ms`;
          }
        }
        if (info.status === 'postcopy-active') dom.markPostcopy();
        onProgress?.(p);
      }
    } finally {
      policy.signal?.removeEventListener('abort', onAbort);
      dom.setMigrating(undefined);
    }
  }

  /** Destroys every domain this driver started. */
  async close(): Promise<void> {
    await Promise.all([...this.domains].map((d) => d.destroy().catch(() => undefined)));
    this.domains.clear();
  }
}

/**
 * Downtime as the engine defines it, from QEMU's events: the source's STOP (at or after
 * `sinceMs`, i.e. of this migration) to the target's RESUME, in ms; undefined when either is missing.
 */
export function stopToResumeMs(source: QemuDomain, targetResumedAtMs: number, sinceMs = 0): number | undefined {
  const stopped = source.stoppedAtMs;
  if (stopped <= 0 || stopped < sinceMs || targetResumedAtMs < stopped) return undefined;
  return targetResumedAtMs - stopped;
}

/**
 * Decides that pre-copy will not reach the downtime target. Returns the reason, or '' to go on.
 *  - the guest dirties memory at ≥ 80% of the transfer rate: every round resends about as much as the last;
 *  - after a few rounds the dirty set is not shrinking (≥ 80% of the one before) and would not fit the target;
 *  - pre-copy has run for twice the first pass after it ended, or 30 rounds, or sent 3× RAM (Xen's limits).
 */
export function notConverging(
  p: QemuMigrationProgress,
  atSync: number[],
  downtimeLimitMs: number,
  sinceFirstPassMs: number,
  firstPassMs: number,
  mode: 'auto' | 'never' | 'immediate',
): string {
  if (mode === 'immediate') return 'post-copy requested after the first pass';
  const fitBytes = (p.transferRateBytesPerSec * downtimeLimitMs) / 1000;
  if (p.remainingBytes <= fitBytes) return '';
  if (p.transferRateBytesPerSec > 0 && p.dirtyRateBytesPerSec >= 0.8 * p.transferRateBytesPerSec) {
    return `dirty rate ${fmtRate(p.dirtyRateBytesPerSec)} ≥ 80% of transfer rate ${fmtRate(p.transferRateBytesPerSec)}`;
  }
  const n = atSync.length;
  if (n >= 3 && atSync[n - 1] >= 0.8 * atSync[n - 2] && atSync[n - 2] >= 0.8 * atSync[n - 3]) {
    return `dirty set not shrinking over rounds (${atSync.slice(-3).map((b) => fmtBytes(b)).join(' → ')}), target ${downtimeLimitMs} ms needs ≤ ${fmtBytes(fitBytes)}`;
  }
  if (sinceFirstPassMs > Math.max(1000, 2 * firstPassMs)) return `pre-copy still running ${sinceFirstPassMs} ms after the first pass`;
  if (p.rounds >= 30) return `${p.rounds} rounds`;
  if (p.totalRamBytes > 0 && p.transferredBytes > 3 * p.totalRamBytes) return `sent ${fmtBytes(p.transferredBytes)} > 3× RAM`;
  return '';
}

interface QueryMigrate {
  status: string;
  'total-time'?: number;
  'expected-downtime'?: number;
  downtime?: number;
  'setup-time'?: number;
  'cpu-throttle-percentage'?: number;
  'error-desc'?: string;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    mbps: number;
    'dirty-sync-count': number;
    'dirty-pages-rate': number;
    'page-size': number;
    'postcopy-requests'?: number;
  };
}

function toProgress(q: QueryMigrate, started: number): QemuMigrationProgress {
  const ram = q.ram;
  return {
    status: q.status,
    rounds: ram?.['dirty-sync-count'] ?? 0,
    remainingBytes: ram?.remaining ?? 0,
    dirtyRateBytesPerSec: (ram?.['dirty-pages-rate'] ?? 0) * (ram?.['page-size'] ?? PAGE_SIZE),
    transferRateBytesPerSec: ((ram?.mbps ?? 0) * 1e6) / 8,
    transferredBytes: ram?.transferred ?? 0,
    totalRamBytes: ram?.total ?? 0,
    expectedDowntimeMs: q['expected-downtime'] ?? 0,
    elapsedMs: q['total-time'] ?? Date.now() - started,
    postcopy: q.status.startsWith('postcopy'),
    throttlePercent: q['cpu-throttle-percentage'] ?? 0,
  };
}

/**
 * The VM's disk on shared storage: QEMU's own NBD client opens the export (both QEMUs of a
 * migration do; the target's copy stays inactive until the switchover, so only memory and
 * device state move). Empty when the VM has no disk.
 */
export function diskArgs(spec: VmSpec): string[] {
  if (!spec.disk) return [];
  return ['-drive', `file=${spec.disk},format=raw,if=virtio,cache=none,id=disk0`];
}

/** The shared spec rules, plus the QEMU guest's own limit (a 32-bit guest: RAM below 4 GiB). */
function validateSpec(spec: VmSpec): void {
  validateSharedSpec(spec);
  if (spec.memBytes > 3 * 1024 * MiB) throw invalidArgument(`spec.memBytes: ${spec.memBytes} > 3 GiB (the 32-bit qemu guest addresses RAM below 4 GiB only)`);
}


function fmtBytes(b: number): string {
  return b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(0)} kB`;
}

function fmtRate(b: number): string {
  return `${fmtBytes(b)}/s`;
}
