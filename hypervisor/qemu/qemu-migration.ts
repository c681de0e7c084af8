/**
 * QEMU's own migration of one domain (the StreamMigration capability, ../stream-migration.ts):
 * the QMP mechanics. The target listens (`migrate-incoming unix:…`), the source migrates into a
 * socket that reaches it (`migrate unix:…`) and this module polls query-migrate. Whether
 * pre-copy converges is the core's decision (policy.converge, migration/policy/convergence.ts);
 * this module carries it out: `migrate-start-postcopy`, or a steeper auto-converge throttle
 * (and, with the throttle at its ceiling, a wider downtime limit). The target autostarts when
 * the migration completes.
 */
import * as path from 'node:path';
import { DroverError, failedPrecondition } from '../../lib/errors';
import { PAGE_SIZE } from '../types';
import type {
  HypervisorEventSource, IncomingEndpoint, IncomingOptions, StreamMigration,
  StreamMigrationPolicy, StreamMigrationProgress, StreamMigrationResult,
} from '../stream-migration';
import type { QemuProcess } from './qemu-process';
import { linkCredentials, type QemuNativeConfig } from './migration-tls';
import type { VmSpec } from '../types';
import type { QmpClient } from './qmp-client';

/** What the QMP migration mechanics need of a QEMU domain (qemu-domain.ts implements it; an interface keeps the two files acyclic). */
export interface MigratableQemuDomain {
  readonly spec: VmSpec;
  readonly proc: QemuProcess;
  /** QEMU's STOP / RESUME event times (wall-clock ms), 0 until seen. */
  readonly stoppedAtMs: number;
  readonly resumedAtMs: number;
  firstBeatMs(): number;
  waitBeats(beats: number, timeoutMs?: number): Promise<void>;
  status(): Promise<string>;
  exitError(what: string): DroverError;
  live(what: string): void;
  /** The node's native migration settings (transport '' = tunnel only). */
  readonly native: QemuNativeConfig;
}

/** bytes/s: QEMU has no "0 = unlimited", this is far above any link. */
const UNLIMITED_BW = 1e12;
/** Default downtime-limit, ms (the project's downtime target). */
const DEFAULT_DOWNTIME_LIMIT_MS = 5;
/** Default query-migrate poll period, ms. */
const DEFAULT_POLL_MS = 50;
/** Highest vCPU throttle QEMU applies, %. */
const MAX_CPU_THROTTLE = 99;
/** Widest downtime limit the last-resort widening goes to, ms. */
const MAX_WIDENED_DOWNTIME_MS = 1000;
/** Stream format name of QEMU's migration (protocol.ts TUNNEL_QEMU). */
const QEMU_TUNNEL_KIND = 'qemu';
/** QOM ids of the migration's TLS credentials and authorization objects. */
const TLS_CREDS_ID = 'drover-mig-tls';
const TLS_AUTHZ_ID = 'drover-mig-authz';

/** A host as it goes into a QEMU tcp: URI (IPv6 in brackets). */
function uriHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** Adds a QOM object, replacing one of the same id a previous migration of this QEMU left. */
async function replaceObject(qmp: QmpClient, args: Record<string, unknown>): Promise<void> {
  await qmp.execute('object-del', { id: args.id }).catch(() => undefined);
  try {
    await qmp.execute('object-add', args);
  } catch (err) {
    throw new DroverError('FAILED_PRECONDITION', `QEMU cannot create its migration ${String(args['qom-type'])}: ${DroverError.from(err).message}`, { cause: err });
  }
}

/** query-migrate's answer (the fields used here). */
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

function toProgress(q: QueryMigrate, started: number): StreamMigrationProgress {
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

/** QEMU's stream migration of one domain. */
export class QemuStreamMigration implements StreamMigration {
  readonly tunnelKind = QEMU_TUNNEL_KIND;
  private postcopyStarted = false;
  /** Set once this QEMU's migration parameters name TLS credentials (a later tunnel migration clears them). */
  tlsConfigured = false;
  private migrating: { cancel: () => Promise<void> } | undefined;

  constructor(private readonly dom: MigratableQemuDomain) {}

  /** True once post-copy has started for the current/last migration. */
  get inPostcopy(): boolean { return this.postcopyStarted; }
  /** The native transport this node is configured for ('' = tunnel only). */
  get nativeTransport(): QemuNativeConfig['transport'] { return this.dom.native.transport; }
  /** QEMU's time of the last STOP event, ms. */
  get stoppedAtMs(): number { return this.dom.stoppedAtMs; }
  /** QEMU's time of the last RESUME event, ms. */
  get resumedAtMs(): number { return this.dom.resumedAtMs; }
  /** True while the QEMU process runs. */
  get alive(): boolean { return this.dom.proc.alive; }
  /** Resolves when QEMU exits. */
  get exited(): Promise<unknown> { return this.dom.proc.exited; }
  /** QEMU's QMP events. */
  get events(): HypervisorEventSource { return this.dom.proc.qmp; }

  /** Host time of the guest's first heartbeat. */
  firstBeatMs(): number { return this.dom.firstBeatMs(); }
  /** Waits for the heartbeat to exceed `beats`. */
  waitBeats(beats: number, timeoutMs?: number): Promise<void> { return this.dom.waitBeats(beats, timeoutMs); }
  /** query-status. */
  runStatus(): Promise<string> { return this.dom.status(); }
  /** An error naming QEMU's exit. */
  exitError(what: string): DroverError { return this.dom.exitError(what); }

  /** query-migrate on the target: the incoming stream's status ({} when QEMU does not answer). */
  async incomingStatus(): Promise<{ status?: string; error?: string }> {
    const q = await this.dom.proc.qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate').catch(() => ({} as { status?: string; 'error-desc'?: string }));
    return { status: q.status, error: q['error-desc'] };
  }

  /** Cancels the outgoing migration (migrate_cancel; the source keeps running). Refused after post-copy started. */
  async cancel(): Promise<void> {
    if (!this.migrating) throw failedPrecondition(`cancel: no migration of ${this.dom.spec.name} in progress`);
    await this.migrating.cancel();
  }

  /** @internal The outgoing run reports post-copy here. */
  markPostcopy(): void { this.postcopyStarted = true; }
  /** @internal The outgoing run registers its cancel here. */
  setMigrating(m: { cancel: () => Promise<void> } | undefined): void { this.migrating = m; }

  /**
   * Makes the target listen: sets capabilities that must match the source's (post-copy when
   * userfaultfd works here, unless `postcopy: false`; multifd when channels > 1), then
   * `migrate-incoming unix:<dir>/migrate.sock`. The guest autostarts when the migration completes.
   */
  async startIncoming(opts: IncomingOptions = {}): Promise<IncomingEndpoint> {
    const dom = this.dom;
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
    if (opts.listen) return { socketPath: '', postcopy, multifdChannels: channels, tcp: await this.listenTcp(opts.listen.authzIdentity) };
    if (this.tlsConfigured) await qmp.execute('migrate-set-parameters', { 'tls-creds': '', 'tls-authz': '' }); // a native attempt's
    const socketPath = path.join(dom.proc.dir, 'migrate.sock');
    await qmp.execute('migrate-incoming', { uri: `unix:${socketPath}` });
    return { socketPath, postcopy, multifdChannels: channels };
  }

  /**
   * Native target: TLS credentials (endpoint=server, verify-peer) and an authz-simple letting
   * in only `authzIdentity`, then `migrate-incoming tcp:HOST:0`; returns the port QEMU bound.
   */
  private async listenTcp(authzIdentity: string | undefined): Promise<{ host: string; port: number; tls: boolean }> {
    const dom = this.dom;
    const qmp = dom.proc.qmp;
    const cfg = dom.native;
    if (!cfg.transport) throw failedPrecondition(`native migration of ${dom.spec.name}: this node is not configured for it (tunnel only)`);
    const tls = cfg.transport === 'tls';
    if (tls) {
      if (!cfg.tls) throw failedPrecondition(`native TLS migration of ${dom.spec.name}: no node certificate`);
      if (!authzIdentity) throw failedPrecondition(`native TLS migration of ${dom.spec.name}: no source certificate DN to authorize`);
      const dir = linkCredentials(path.join(dom.proc.dir, 'tls-in'), 'server', cfg.tls);
      await replaceObject(qmp, { 'qom-type': 'tls-creds-x509', id: TLS_CREDS_ID, dir, endpoint: 'server', 'verify-peer': true });
      await replaceObject(qmp, { 'qom-type': 'authz-simple', id: TLS_AUTHZ_ID, identity: authzIdentity });
      await qmp.execute('migrate-set-parameters', { 'tls-creds': TLS_CREDS_ID, 'tls-authz': TLS_AUTHZ_ID });
      this.tlsConfigured = true;
    }
    await qmp.execute('migrate-incoming', { uri: `tcp:${uriHost(cfg.host)}:0` });
    const q = await qmp.execute<{ 'socket-address'?: Array<{ port?: string | number }> }>('query-migrate');
    const port = Number(q['socket-address']?.[0]?.port);
    if (!Number.isInteger(port) || port <= 0) throw new DroverError('INTERNAL', `target QEMU of ${dom.spec.name} listens but reports no port (query-migrate: ${JSON.stringify(q)})`);
    return { host: cfg.host, port, tls };
  }

  /**
   * Migrates the domain to the target listening at `target` (an IncomingEndpoint, or a socket
   * path that reaches it, e.g. an agent's bridge; pass `{...endpoint, socketPath: bridgePath}`).
   * Resolves on completion (the source is then paused in QEMU's "postmigrate" state); rejects
   * with CANCELLED / DEADLINE_EXCEEDED / ABORTED (stream failed) and the source keeps running.
   */
  async migrateOut(target: IncomingEndpoint, policy: StreamMigrationPolicy = {}, onProgress?: (p: StreamMigrationProgress) => void): Promise<StreamMigrationResult> {
    this.dom.live('migrateOut');
    const run = new OutgoingRun(this.dom, this, target, policy, onProgress);
    this.setMigrating({ cancel: () => run.cancel('user') });
    const onAbort = () => { run.cancel('user').catch(() => undefined); };
    policy.signal?.addEventListener('abort', onAbort);
    try {
      return await run.run();
    } finally {
      policy.signal?.removeEventListener('abort', onAbort);
      this.setMigrating(undefined);
    }
  }
}

/** What the policy did during one outgoing migration (none yet, post-copy, throttle) and why. */
interface PolicyAction { action: StreamMigrationResult['action']; reason: string }

/** One outgoing migration: configure, start, then poll until completed or failed. */
class OutgoingRun {
  private readonly qmp: QmpClient;
  private readonly downtimeLimitMs: number;
  private readonly usePostcopy: boolean;
  private readonly throttle: boolean;
  private started = 0;
  private acted: PolicyAction = { action: 'none', reason: 'pre-copy converged' };
  private cancelled: 'user' | 'deadline' | undefined;
  private throttleSteps = 0;
  private throttleRound = -1;
  private effDowntimeMs: number;
  /** Convergence watch: remaining bytes right after each dirty sync (the dirty set found then). */
  private readonly atSync: number[] = [];
  private lastRounds = 0;
  private firstPassEndMs = 0;

  constructor(
    private readonly dom: MigratableQemuDomain,
    private readonly stream: QemuStreamMigration,
    private readonly target: IncomingEndpoint,
    private readonly policy: StreamMigrationPolicy,
    private readonly onProgress?: (p: StreamMigrationProgress) => void,
  ) {
    this.qmp = dom.proc.qmp;
    this.downtimeLimitMs = policy.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS;
    this.effDowntimeMs = this.downtimeLimitMs;
    this.usePostcopy = target.postcopy && policy.postcopy !== 'never';
    this.throttle = policy.throttle ?? true;
  }

  /** migrate_cancel (refused in post-copy: the target already runs the VM). */
  async cancel(why: 'user' | 'deadline'): Promise<void> {
    if (this.stream.inPostcopy) {
      throw failedPrecondition(`cancel refused: ${this.dom.spec.name} is in post-copy, the target already runs the VM`);
    }
    this.cancelled = why;
    await this.qmp.execute('migrate_cancel');
  }

  /** Capabilities (matching the target's) and parameters (downtime, bandwidth). */
  private async configure(): Promise<void> {
    const { target, policy } = this;
    const bw = policy.maxBandwidthBytesPerSec ? policy.maxBandwidthBytesPerSec : UNLIMITED_BW;
    const caps: Array<{ capability: string; state: boolean }> = [
      { capability: 'events', state: true },
      { capability: 'postcopy-ram', state: target.postcopy }, // must match the target's
      { capability: 'multifd', state: target.multifdChannels > 1 },
      // QEMU's own throttle only as the fallback when post-copy is not available
      { capability: 'auto-converge', state: !this.usePostcopy && this.throttle },
    ];
    await this.qmp.execute('migrate-set-capabilities', { capabilities: caps });
    const params: Record<string, unknown> = { 'downtime-limit': this.downtimeLimitMs, 'max-bandwidth': Math.round(bw) };
    if (target.multifdChannels > 1) params['multifd-channels'] = target.multifdChannels;
    if (policy.maxBandwidthBytesPerSec === undefined || policy.maxBandwidthBytesPerSec === 0) {
      params['max-postcopy-bandwidth'] = 0; // 0 = unlimited for post-copy in QEMU
    }
    Object.assign(params, await this.tlsParams());
    await this.qmp.execute('migrate-set-parameters', params);
  }

  /** Source TLS (native TLS target): client credentials, tls-hostname = the host dialled; else TLS off if a previous run set it. */
  private async tlsParams(): Promise<Record<string, unknown>> {
    const tcp = this.target.tcp;
    const cfg = this.dom.native;
    if (tcp?.tls) {
      if (!cfg.tls) throw failedPrecondition(`native TLS migration of ${this.dom.spec.name}: this node has no certificate`);
      const dir = linkCredentials(path.join(this.dom.proc.dir, 'tls-out'), 'client', cfg.tls);
      await replaceObject(this.qmp, { 'qom-type': 'tls-creds-x509', id: TLS_CREDS_ID, dir, endpoint: 'client', 'verify-peer': true });
      this.stream.tlsConfigured = true;
      return { 'tls-creds': TLS_CREDS_ID, 'tls-hostname': tcp.host.replace(/^\[|\]$/g, '') };
    }
    return this.stream.tlsConfigured ? { 'tls-creds': '', 'tls-hostname': '' } : {};
  }

  async run(): Promise<StreamMigrationResult> {
    await this.configure();
    this.started = Date.now();
    if (this.policy.signal?.aborted) throw new DroverError('CANCELLED', `migration of ${this.dom.spec.name} cancelled before start`);
    const tcp = this.target.tcp;
    // A MIGRATION event (status change: completed, failed, postcopy-active...) ends the poll's
    // wait at once: the switchover after completion does not wait out the poll period.
    let wake: (() => void) | undefined;
    const onEvent = (e: { event: string }) => { if (e.event === 'MIGRATION') wake?.(); };
    this.qmp.on('event', onEvent);
    try {
      await this.qmp.execute('migrate', { uri: tcp ? `tcp:${uriHost(tcp.host)}:${tcp.port}` : `unix:${this.target.socketPath}` });
      for (;;) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.policy.pollMs ?? DEFAULT_POLL_MS);
          wake = () => { clearTimeout(t); wake = undefined; resolve(); };
        });
        const done = await this.step();
        if (done) return done;
      }
    } finally {
      this.qmp.off('event', onEvent);
    }
  }

  /** One poll: the result when completed, else undefined (throws when the migration failed). */
  private async step(): Promise<StreamMigrationResult | undefined> {
    const dom = this.dom;
    if (!dom.proc.alive) throw dom.exitError('migration');
    const info = await this.qmp.execute<QueryMigrate>('query-migrate');
    const p = toProgress(info, this.started);
    const elapsed = Date.now() - this.started;
    if (info.status === 'completed') {
      this.onProgress?.(p);
      return this.result(info, elapsed);
    }
    this.checkFailed(info);
    if (this.policy.deadlineMs !== undefined && elapsed > this.policy.deadlineMs && !this.stream.inPostcopy && !this.cancelled) {
      await this.cancel('deadline');
    }
    const active = info.status === 'active';
    if (active) this.trackSync(p, elapsed);
    if (this.acted.action === 'none' && active && this.firstPassEndMs > 0 && !this.cancelled) {
      if (await this.decide(p, elapsed)) return undefined; // switched to post-copy
    }
    if (this.acted.action === 'throttle' && p.rounds > this.throttleRound) await this.steepenThrottle(p);
    if (info.status === 'postcopy-active') this.stream.markPostcopy();
    this.onProgress?.(p);
    return undefined;
  }

  private result(info: QueryMigrate, elapsed: number): StreamMigrationResult {
    return {
      status: 'completed',
      downtimeMs: info.downtime ?? 0,
      totalTimeMs: info['total-time'] ?? elapsed,
      setupTimeMs: info['setup-time'] ?? 0,
      transferredBytes: info.ram?.transferred ?? 0,
      rounds: info.ram?.['dirty-sync-count'] ?? 0,
      action: this.acted.action,
      reason: this.acted.reason,
    };
  }

  /** Throws the error of a failed, cancelled or broken post-copy migration. */
  private checkFailed(info: QueryMigrate): void {
    const name = this.dom.spec.name;
    if (info.status === 'failed' || info.status === 'cancelled') {
      if (this.cancelled === 'deadline') throw new DroverError('DEADLINE_EXCEEDED', `migration of ${name} did not complete within ${this.policy.deadlineMs} ms (cancelled; source keeps running)`);
      if (this.cancelled === 'user') throw new DroverError('CANCELLED', `migration of ${name} cancelled; source keeps running`);
      throw new DroverError('ABORTED', `migration of ${name} ${info.status}: ${info['error-desc'] ?? 'stream broken'}; source keeps running`);
    }
    if (info.status === 'postcopy-paused') {
      throw new DroverError('DATA_LOSS', `migration of ${name}: post-copy stream broke (postcopy-paused); the VM state is split between source and target until recovery`);
    }
  }

  /** Records the end of the first pass and the dirty set at each new dirty sync. */
  private trackSync(p: StreamMigrationProgress, elapsed: number): void {
    if (p.rounds === this.lastRounds) return;
    if (p.rounds >= 2 && this.firstPassEndMs === 0) this.firstPassEndMs = elapsed;
    if (p.rounds >= 2) this.atSync.push(p.remainingBytes);
    this.lastRounds = p.rounds;
  }

  /** Asks the core whether pre-copy converges and acts on the answer; true when post-copy started. */
  private async decide(p: StreamMigrationProgress, elapsed: number): Promise<boolean> {
    const d = this.policy.converge?.({
      progress: p, atSync: this.atSync, sinceFirstPassMs: elapsed - this.firstPassEndMs, firstPassMs: this.firstPassEndMs,
      downtimeLimitMs: this.downtimeLimitMs, postcopyAvailable: this.usePostcopy,
    });
    if (!d || d.action === 'continue') return false;
    if (d.action === 'postcopy' && this.usePostcopy) {
      await this.policy.beforeSwitchover?.();
      await this.qmp.execute('migrate-start-postcopy');
      this.stream.markPostcopy();
      this.acted = { action: 'postcopy', reason: d.reason };
      this.onProgress?.({ ...p, action: 'postcopy', reason: d.reason });
      return true;
    }
    if (this.throttle) {
      this.acted = { action: 'throttle', reason: d.reason };
      this.onProgress?.({ ...p, action: 'throttle', reason: d.reason });
    }
    return false;
  }

  /** Steeper throttle each further round without convergence (QEMU caps at max-cpu-throttle). */
  private async steepenThrottle(p: StreamMigrationProgress): Promise<void> {
    this.throttleRound = p.rounds;
    this.throttleSteps++;
    await this.qmp.execute('migrate-set-parameters', {
      'cpu-throttle-initial': Math.min(MAX_CPU_THROTTLE, 20 + 20 * this.throttleSteps),
      'cpu-throttle-increment': Math.min(50, 10 * this.throttleSteps),
      'max-cpu-throttle': MAX_CPU_THROTTLE,
    }).catch(() => undefined);
    // Last resort: the throttle is at its ceiling and rounds still do not fit the target.
    // Widen the downtime limit (doubling per round, up to 1 s) rather than never finishing.
    if (p.throttlePercent >= MAX_CPU_THROTTLE && this.effDowntimeMs < MAX_WIDENED_DOWNTIME_MS) {
      this.effDowntimeMs = Math.min(MAX_WIDENED_DOWNTIME_MS, this.effDowntimeMs * 2);
      await this.qmp.execute('migrate-set-parameters', { 'downtime-limit': this.effDowntimeMs }).catch(() => undefined);
      this.acted = { action: 'throttle', reason: `${this.acted.reason}; throttle at 99%, downtime limit widened to ${this.effDowntimeMs} ms` };
    }
  }
}
