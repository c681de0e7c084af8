/**
 * The migrator service (`drover migrator`): executes migration jobs from etcd.
 *
 * - Claims each job with a key under its own lease (`claims/<id>`), so a job runs once even with
 *   several replicas; a replica that dies loses its lease and another takes the job over.
 * - Admits jobs under the limits (cluster-wide concurrency, per-node outbound and inbound) with
 *   one CAS on `admission`: a rolling window, a job starts as soon as a slot frees.
 * - Drives the source agent with the switchover's fence (the VM record's `migrating` revision,
 *   job, attempt; protocol 2): the target resumes the VM and records `owned/<to>/<vm>` itself,
 *   nothing of the migrator is in the pause; afterwards the migrator folds that record into
 *   `vms/<vm>` (fold.ts), or on failure puts the VM back on the source only if no record exists
 *   (same txn). A job taken over resolves from the record and the agents' state (takeover.ts).
 * - Enforces a progress timeout (bytes sent unchanged) and a completion timeout scaled by VM size,
 *   retries transient failures with exponential backoff (bounded), and moves finished jobs into
 *   the history.
 *
 * This file is the replica loop (lease, claims, admission, tick). One claimed job is a `JobRun`
 * (job-run.ts); its live attempt a `MigrationAttempt` (attempt.ts) whose state is an
 * `AttemptTracker` (attempt-state.ts) with a `Watchdog` (watchdog.ts); fenced writes are in
 * job-store.ts, takeovers in takeover.ts.
 */
import type { Etcd3, Lease, Watcher } from 'etcd3';
import { getJson, readSnapshot, updateJson } from '../../cluster/etcd';
import { makeLogger, type Logger } from '../../cluster/log';
import { controlMetrics } from '../../cluster/control-metrics';
import { migratorMetrics } from './migrator-metrics';
import { keys, TERMINAL_PHASES, type Admission, type ClusterConfig, type JobRecord } from '../../cluster/keyspace';
import { admissionBlocker } from './admission';
import { JobRun } from './job-run';
import { Abandoned, JobStore } from './job-store';

export { admissionBlocker } from './admission';

/** Default TTL of the claim lease, s: a dead replica's jobs are taken over after this. */
const DEFAULT_CLAIM_TTL_SEC = 3;
/** Default rescan period, ms (the watch wakes the loop sooner). */
const DEFAULT_TICK_MS = 1000;
/** Default first retry delay, ms. */
const DEFAULT_BACKOFF_BASE_MS = 1000;
/** Delay before re-granting a lost claim lease, ms (then every second until it works). */
const LEASE_REGRANT_MS = 500;

/** Options of a migrator replica. */
export interface MigratorOptions {
  /** Replica id (default `migrator-<pid>`). */
  id?: string;
  /** TTL of the claim lease, s (default 3). */
  claimTtlSec?: number;
  /** Rescan period, ms (besides the watch). */
  tickMs?: number;
  /** First retry delay, ms (doubles per attempt). */
  backoffBaseMs?: number;
  log?: Logger;
}

/** A migrator replica: claims, admits and runs jobs. */
export class Migrator {
  readonly id: string;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly tickMs: number;
  private lease?: Lease;
  private leaseId = '';
  private watcher?: Watcher;
  private timer?: NodeJS.Timeout;
  private ticking = false;
  private again = false;
  private stopped = false;
  private readonly running = new Map<string, Promise<void>>();
  private readonly store: JobStore;

  constructor(private readonly etcd: Etcd3, opts: MigratorOptions = {}) {
    this.id = opts.id ?? `migrator-${process.pid}`;
    this.log = opts.log ?? makeLogger(this.id);
    this.ttl = opts.claimTtlSec ?? DEFAULT_CLAIM_TTL_SEC;
    this.tickMs = opts.tickMs ?? DEFAULT_TICK_MS;
    this.store = new JobStore(etcd, this.id, this.log, opts.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS);
    migratorMetrics().track(this);
  }

  /** Starts watching and running jobs. */
  async start(): Promise<void> {
    await this.grant();
    this.watcher = await this.etcd.watch().prefix(keys.jobs()).create();
    this.watcher.on('put', () => this.kick());
    this.watcher.on('error', (e) => this.log('watch error', { error: (e as Error).message }));
    this.timer = setInterval(() => this.kick(), this.tickMs);
    this.log('started');
    this.kick();
  }

  /** Stops claiming; waits for the jobs in flight (they finish or are taken over later). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.watcher?.cancel().catch(() => {});
    await Promise.allSettled([...this.running.values()]);
    await this.lease?.revoke().catch(() => {});
  }

  /** Jobs this replica currently drives. */
  activeJobs(): string[] {
    return [...this.running.keys()];
  }

  private async grant(): Promise<void> {
    const lease = this.etcd.lease(this.ttl);
    this.leaseId = String(await lease.grant());
    this.lease = lease;
    controlMetrics().lease('migrator', true);
    lease.on('lost', () => {
      if (this.lease !== lease) return;
      this.log('claim lease lost: jobs in flight will be taken over by another replica');
      this.lease = undefined;
      this.leaseId = '';
      controlMetrics().lease('migrator', false);
      const retry = () => { if (!this.stopped) this.grant().catch(() => setTimeout(retry, 1000)); };
      setTimeout(retry, LEASE_REGRANT_MS);
    });
  }

  private kick(): void {
    if (this.stopped) return;
    if (this.ticking) { this.again = true; return; }
    this.ticking = true;
    this.tick().catch((e) => { controlMetrics().loopError('migrator'); this.log('scan failed', { error: (e as Error).message }); }).finally(() => {
      this.ticking = false;
      if (this.again) { this.again = false; setImmediate(() => this.kick()); }
    });
  }

  private async tick(): Promise<void> {
    if (!this.leaseId) return;
    const snap = await readSnapshot(this.etcd);
    const claims = new Set((await this.etcd.getAll().prefix(keys.claim('')).keys()).map((k) => k.slice(keys.claim('').length)));
    const jobs = [...snap.jobs.values()].map((v) => v.value).sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
    let adm = snap.admission.value;
    migratorMetrics().limits(snap.config, adm);
    for (const job of jobs) {
      if (this.stopped || !this.leaseId) return;
      if (this.running.has(job.id) || claims.has(job.id) || TERMINAL_PHASES.has(job.phase)) continue;
      if (job.notBefore > Date.now()) continue;
      const admitted = adm.jobs.some((a) => a.id === job.id);
      if (!admitted && !job.cancelRequested && admissionBlocker(adm, job, snap.config)) continue;
      if (!(await this.claim(job.id))) continue;
      if (!admitted && !job.cancelRequested) {
        const next = await this.admit(job, snap.config);
        if (!next) { await this.unclaim(job.id); continue; }
        adm = next;
      }
      const p = this.runJob(job.id, snap.config)
        .catch((e) => { if (!(e instanceof Abandoned)) this.log('job error', { job: job.id, error: (e as Error).message }); })
        .finally(async () => { this.running.delete(job.id); await this.unclaim(job.id).catch(() => {}); this.kick(); });
      this.running.set(job.id, p);
    }
  }

  /** Takes an admission slot for `job` in one CAS; undefined when a limit blocks it now. */
  private admit(job: JobRecord, cfg: ClusterConfig): Promise<Admission | undefined> {
    return updateJson<Admission>(this.etcd, keys.admission(), (cur) => {
      const a = cur ?? { jobs: [] };
      if (admissionBlocker(a, job, cfg)) return undefined;
      return { jobs: [...a.jobs, { id: job.id, from: job.from, to: job.to, at: Date.now() }] };
    });
  }

  private async claim(id: string): Promise<boolean> {
    const r = await this.etcd.if(keys.claim(id), 'Create', '==', 0)
      .then(this.etcd.put(keys.claim(id)).value(this.id).lease(this.leaseId))
      .commit();
    return r.succeeded;
  }

  private async unclaim(id: string): Promise<void> {
    await this.etcd.if(keys.claim(id), 'Value', '==', this.id).then(this.etcd.delete().key(keys.claim(id))).commit();
  }

  private async runJob(id: string, cfg: ClusterConfig): Promise<void> {
    const cur = await getJson<JobRecord>(this.etcd, keys.job(id));
    if (!cur) return;
    return new JobRun(this.store, this.log, cur, cfg).drive();
  }
}
