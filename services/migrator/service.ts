/**
 * The migrator service (`drover migrator`): executes migration jobs from etcd.
 *
 * - Claims each job with a key under its own lease (`claims/<id>`), so a job runs once even with
 *   several replicas; a replica that dies loses its lease and another takes the job over.
 * - Admits jobs under the limits (cluster-wide concurrency, per-node outbound and inbound) with
 *   one CAS on `admission`: a rolling window, a job starts as soon as a slot frees.
 * - Drives the source agent with `externalCommit`: when the target holds a verified image the
 *   source waits; the migrator flips the VM's owner in one transaction fenced on the VM record's
 *   revision, the job's revision (a cancel request wins before it) and its own claim, and only
 *   then tells the source to activate the target. A job taken over before that point is rolled
 *   back (cancel on the source: the VM keeps running there) and retried; after it, completed.
 * - Enforces a progress timeout (bytes sent unchanged) and a completion timeout scaled by VM size,
 *   retries transient failures with exponential backoff (bounded), and moves finished jobs into
 *   the history.
 */
import type { Etcd3, Lease, Watcher } from 'etcd3';
import { DroverError } from '../../lib/errors';
import { isRetryable } from '../../lib/grpc-status';
import { AgentClient } from '../node-agent/client/agent-client';
import type { MigrationEventInfo } from '../node-agent/client/agent-codec';
import { completionTimeoutMs, resolvePolicy, type MigrationResult } from '../../migration/types';
import { getJson, readSnapshot, updateJson } from '../../cluster/etcd';
import { finishJob } from '../../cluster/jobs';
import { makeLogger, sleep, type Logger } from '../../cluster/log';
import { controlMetrics } from '../../cluster/control-metrics';
import { migratorMetrics } from './migrator-metrics';
import {
  keys, TERMINAL_PHASES,
  type Admission, type ClusterConfig, type JobPhase, type JobRecord, type NodeRecord, type VmRecord,
} from '../../cluster/keyspace';

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

/** Does `job` fit the limits given the admitted jobs? Returns the reason it does not. */
export function admissionBlocker(adm: Admission, job: { id: string; from: string; to: string }, cfg: ClusterConfig): string | undefined {
  if (adm.jobs.some((a) => a.id === job.id)) return undefined;
  if (adm.jobs.length >= cfg.maxConcurrent) return `cluster-wide limit ${cfg.maxConcurrent}`;
  if (adm.jobs.filter((a) => a.from === job.from).length >= cfg.maxOutboundPerNode) return `outbound limit ${cfg.maxOutboundPerNode} on ${job.from}`;
  if (adm.jobs.filter((a) => a.to === job.to).length >= cfg.maxInboundPerNode) return `inbound limit ${cfg.maxInboundPerNode} on ${job.to}`;
  return undefined;
}

const ENGINE_PHASES = new Set<JobPhase>(['reserving', 'precopy', 'stopcopy', 'verifying', 'awaiting-commit']);

class Abandoned extends Error {}
class CancelRequested extends Error {}

/** State of one job this replica drives. */
interface Run {
  job: JobRecord;
  rev: string;
}

export class Migrator {
  readonly id: string;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly tickMs: number;
  private readonly backoffBaseMs: number;
  private lease?: Lease;
  private leaseId = '';
  private watcher?: Watcher;
  private timer?: NodeJS.Timeout;
  private ticking = false;
  private again = false;
  private stopped = false;
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly etcd: Etcd3, opts: MigratorOptions = {}) {
    this.id = opts.id ?? `migrator-${process.pid}`;
    this.log = opts.log ?? makeLogger(this.id);
    this.ttl = opts.claimTtlSec ?? 3;
    this.tickMs = opts.tickMs ?? 1000;
    this.backoffBaseMs = opts.backoffBaseMs ?? 1000;
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
      setTimeout(retry, 500);
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
        let blocked: string | undefined;
        const next = await updateJson<Admission>(this.etcd, keys.admission(), (cur) => {
          const a = cur ?? { jobs: [] };
          blocked = admissionBlocker(a, job, snap.config);
          if (blocked) return undefined;
          return { jobs: [...a.jobs, { id: job.id, from: job.from, to: job.to, at: Date.now() }] };
        });
        if (!next) { await this.unclaim(job.id); continue; }
        adm = next;
      }
      const p = this.runJob(job.id, snap.config)
        .catch((e) => { if (!(e instanceof Abandoned)) this.log('job error', { job: job.id, error: (e as Error).message }); })
        .finally(async () => { this.running.delete(job.id); await this.unclaim(job.id).catch(() => {}); this.kick(); });
      this.running.set(job.id, p);
    }
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

  private async releaseAdmission(id: string): Promise<void> {
    await updateJson<Admission>(this.etcd, keys.admission(), (cur) => (cur && cur.jobs.some((a) => a.id === id) ? { jobs: cur.jobs.filter((a) => a.id !== id) } : undefined));
  }

  /** Writes `patch` onto the job, fenced on its revision and on this replica's claim. */
  private async patch(run: Run, patch: Partial<JobRecord> | ((j: JobRecord) => Partial<JobRecord>), extra: { key: string; rev: string; value: unknown }[] = []): Promise<string> {
    for (let i = 0; i < 20; i++) {
      const p = typeof patch === 'function' ? patch(run.job) : patch;
      const next = { ...run.job, ...p, etcdWrites: run.job.etcdWrites + 1 };
      let txn = this.etcd.if(keys.job(next.id), 'Mod', '==', run.rev).and(keys.claim(next.id), 'Value', '==', this.id);
      for (const e of extra) txn = txn.and(e.key, 'Mod', '==', e.rev);
      const r = await txn.then(this.etcd.put(keys.job(next.id)).value(JSON.stringify(next)), ...extra.map((e) => this.etcd.put(e.key).value(JSON.stringify(e.value)))).commit();
      if (r.succeeded) {
        run.job = next;
        run.rev = String(r.header.revision);
        return run.rev;
      }
      const fresh = await getJson<JobRecord>(this.etcd, keys.job(run.job.id));
      const claim = await this.etcd.get(keys.claim(run.job.id)).string();
      if (!fresh || claim !== this.id) throw new Abandoned(`job ${run.job.id} is no longer ours`);
      if (extra.length > 0 && fresh.modRevision === run.rev) throw new DroverError('ABORTED', 'fenced record changed');
      run.job = fresh.value;
      run.rev = fresh.modRevision;
    }
    throw new DroverError('ABORTED', `job ${run.job.id}: too many concurrent updates`);
  }

  private async finish(run: Run, patch: Partial<JobRecord>, vmPatch: Partial<VmRecord> = {}): Promise<void> {
    const job = { ...run.job, ...patch, finishedAt: Date.now() };
    if (!(await finishJob(this.etcd, run.rev, job, vmPatch))) {
      // Changed under us (a cancel request): re-read and try once more with the same outcome.
      const fresh = await getJson<JobRecord>(this.etcd, keys.job(run.job.id));
      if (fresh) await finishJob(this.etcd, fresh.modRevision, { ...fresh.value, ...patch, finishedAt: Date.now() }, vmPatch);
    }
    await this.releaseAdmission(run.job.id);
    migratorMetrics().jobFinished(job);
    this.log(`job ${job.result || job.phase}`, { job: job.id, vm: job.vm, from: job.from, to: job.to, downtimeMs: job.downtimeMs, error: job.error || undefined });
  }

  private agentMigrationId(job: JobRecord): string {
    return `${job.id}.${job.attempts}`;
  }

  private async nodeAddress(id: string): Promise<string> {
    const n = await getJson<NodeRecord>(this.etcd, keys.node(id));
    if (!n) throw new DroverError('NOT_FOUND', `node ${id} is not registered`);
    return n.value.address;
  }

  private async runJob(id: string, cfg: ClusterConfig): Promise<void> {
    const cur = await getJson<JobRecord>(this.etcd, keys.job(id));
    if (!cur) return;
    const run: Run = { job: cur.value, rev: cur.modRevision };
    if (run.job.committed) return this.completeCommitted(run);
    if (ENGINE_PHASES.has(run.job.phase) || run.job.phase === 'recovering') return this.recover(run, cfg);
    if (run.job.cancelRequested) return this.finish(run, { phase: 'cancelled', result: 'cancelled', error: 'cancelled by user before it started' });
    return this.execute(run, cfg);
  }

  /** Retries after a transient failure (backoff) or fails the job for good. */
  private async retryOrFail(run: Run, err: DroverError, vmPatch: Partial<VmRecord>, beforeStart = false): Promise<void> {
    if (beforeStart) {
      // A try that failed before reaching the agents still counts: retries stay bounded.
      await this.patch(run, (j) => ({ attempts: j.attempts + 1 }));
    }
    if (isRetryable(err) && run.job.attempts < run.job.maxAttempts && !run.job.cancelRequested) {
      const delay = this.backoffBaseMs * 2 ** Math.max(0, run.job.attempts - 1);
      const vm = await getJson<VmRecord>(this.etcd, keys.vm(run.job.vm));
      const extra = vm ? [{ key: keys.vm(run.job.vm), rev: vm.modRevision, value: { ...vm.value, ...vmPatch, state: vm.value.state === 'migrating' ? 'running' : vm.value.state } }] : [];
      await this.patch(run, { phase: 'backoff', notBefore: Date.now() + delay, error: err.message }, extra);
      await this.releaseAdmission(run.job.id);
      this.log('job will retry', { job: run.job.id, attempt: run.job.attempts, inMs: delay, error: err.message });
      migratorMetrics().jobRetried(run.job);
      return;
    }
    await this.finish(run, { phase: 'failed', result: 'failed', error: err.message }, vmPatch);
  }

  private async execute(run: Run, cfg: ClusterConfig): Promise<void> {
    const job = run.job;
    const vm = await getJson<VmRecord>(this.etcd, keys.vm(job.vm));
    if (!vm) return this.finish(run, { phase: 'failed', result: 'failed', error: `VM "${job.vm}" no longer exists` });
    if (vm.value.node !== job.from) return this.finish(run, { phase: 'failed', result: 'failed', error: `VM "${job.vm}" is on ${vm.value.node}, not ${job.from}` });
    if (vm.value.state !== 'running' && vm.value.state !== 'migrating') return this.retryOrFail(run, new DroverError('UNAVAILABLE', `VM "${job.vm}" is ${vm.value.state}`), {}, true);
    const [fromAlive, toAlive, toMark] = await Promise.all([
      getJson(this.etcd, keys.alive(job.from)), getJson(this.etcd, keys.alive(job.to)), getJson<{ state: string }>(this.etcd, keys.mark(job.to)),
    ]);
    if (!fromAlive) return this.retryOrFail(run, new DroverError('UNAVAILABLE', `source node ${job.from} is not alive`), {}, true);
    if (!toAlive) return this.retryOrFail(run, new DroverError('UNAVAILABLE', `target node ${job.to} is not alive`), {}, true);
    if (toMark) return this.finish(run, { phase: 'failed', result: 'failed', error: `target node ${job.to} is ${toMark.value.state}` });
    const fromAddr = await this.nodeAddress(job.from);
    const toAddr = await this.nodeAddress(job.to);

    // Start: VM migrating + job reserving, one transaction fenced on the VM record.
    let vmRev: string;
    let vmRec: VmRecord = { ...vm.value, state: 'migrating' };
    try {
      vmRev = await this.patch(run, (j) => ({ phase: 'reserving', attempts: j.attempts + 1, migrator: this.id, admittedAt: j.admittedAt || Date.now(), error: '' }),
        [{ key: keys.vm(job.vm), rev: vm.modRevision, value: vmRec }]);
    } catch (e) {
      if (e instanceof Abandoned) throw e;
      return this.retryOrFail(run, new DroverError('ABORTED', `VM "${job.vm}" changed while starting`), {}, true);
    }
    migratorMetrics().jobStarted(job);
    const memBytes = vm.value.spec.memBytes;
    const timeoutMs = completionTimeoutMs(resolvePolicy({}), memBytes);
    const migId = this.agentMigrationId(run.job);
    const source = new AgentClient(fromAddr);
    const started = Date.now();
    let lastSent = -1;
    let lastProgressAt = Date.now();
    let lastWrite = 0;
    let lastPhase = 'reserving';
    let cancelReason = '';
    let userCancel = false;
    let committed = false;
    let committing: Promise<void> | undefined;
    let queue: Promise<unknown> = Promise.resolve();
    let abandoned = false;
    const enqueue = (f: () => Promise<unknown>) => { queue = queue.then(f).catch((e) => { if (e instanceof Abandoned) abandoned = true; else this.log('write failed', { job: job.id, error: (e as Error).message }); }); };
    // Once a commit runs, only the commit itself cancels (before the owner flips, when a cancel
    // request or a changed VM record beats it); the watchdog stays out (see below).
    const cancel = async (reason: string, byUser = false) => {
      if (cancelReason || committed) return;
      cancelReason = reason;
      userCancel = byUser;
      this.log('cancelling', { job: job.id, reason });
      try { await source.cancelMigration(migId); } catch (e) { this.log('cancel failed', { job: job.id, error: (e as Error).message }); }
    };
    let awaitingAt = 0;
    let commitMs: number | undefined;
    const commit = async () => {
      const queuedMs = Date.now() - awaitingAt;
      this.log('committing', { job: job.id, queuedMs });
      for (let i = 0; i < 10 && !abandoned; i++) {
        if (run.job.cancelRequested) { await cancel('cancelled by user', true); return; }
        try {
          vmRec = { ...vmRec, node: job.to, lastMovedAt: Date.now(), lastFrom: job.from };
          vmRev = await this.patch(run, (j) => {
            if (j.cancelRequested) throw new CancelRequested();
            return { phase: 'committed', committed: true };
          }, [{ key: keys.vm(job.vm), rev: vmRev, value: vmRec }]);
          committed = true;
          break;
        } catch (e) {
          this.log('commit attempt failed', { job: job.id, attempt: i, error: e instanceof CancelRequested ? 'cancel requested' : (e as Error).message });
          if (e instanceof Abandoned) { abandoned = true; return; }
          if (e instanceof CancelRequested) { await cancel('cancelled by user', true); return; }
          const v = await getJson<VmRecord>(this.etcd, keys.vm(job.vm));
          if (!v || v.value.node !== job.from) { await cancel(`VM record changed: owner is ${v?.value.node ?? 'nobody'}`); return; }
          vmRec = { ...v.value, state: 'migrating' };
          vmRev = v.modRevision;
        }
      }
      if (!committed) { await cancel('could not record the new owner'); return; }
      const flippedMs = Date.now() - awaitingAt;
      for (let i = 0; i < 20; i++) {
        try {
          await source.commitMigration(migId);
          commitMs = Date.now() - awaitingAt;
          this.log('owner flipped', { job: job.id, vm: job.vm, to: job.to, queuedMs, flippedMs, committedMs: Date.now() - awaitingAt });
          return;
        } catch (e) {
          this.log('commit call failed, retrying', { job: job.id, error: (e as Error).message });
          await sleep(250);
        }
      }
    };
    const onEvent = (ev: MigrationEventInfo) => {
      if (ev.sentBytes !== lastSent) { lastSent = ev.sentBytes; lastProgressAt = Date.now(); }
      const progress = {
        round: ev.round, remainingBytes: ev.remainingBytes, sentBytes: ev.sentBytes, dirtyRateBytesPerSec: ev.dirtyRateBytesPerSec,
        rateBytesPerSec: ev.rateBytesPerSec, etaMs: Number.isFinite(ev.etaMs) ? ev.etaMs : -1, elapsedMs: ev.elapsedMs, at: Date.now(),
      };
      const phase = ev.phase as JobPhase;
      // While the VM is paused (stop-and-copy onwards) nothing is written before the commit:
      // every millisecond there is downtime.
      const paused = phase === 'stopcopy' || phase === 'verifying' || phase === 'awaiting-commit';
      if (paused) lastWrite = Date.now();
      if (ENGINE_PHASES.has(phase) && !paused && phase !== lastPhase && !committed && !committing) {
        lastPhase = phase;
        lastWrite = Date.now();
        enqueue(() => this.patch(run, { phase, progress }));
      } else if (Date.now() - lastWrite > 1000) {
        lastWrite = Date.now();
        enqueue(() => this.patch(run, { progress }));
      }
      if (phase === 'awaiting-commit' && !committing && !cancelReason) {
        this.log('awaiting commit', { job: job.id });
        awaitingAt = Date.now();
        committing = new Promise<void>((resolve) => enqueue(() => commit().finally(resolve)));
      }
    };
    const watchdog = setInterval(() => {
      if (committed || committing || cancelReason) return;
      const now = Date.now();
      if (now - started > timeoutMs) void cancel(`completion timeout: not done after ${Math.round(timeoutMs / 1000)} s (${Math.round(memBytes / 2 ** 20)} MiB VM)`);
      else if (now - lastProgressAt > cfg.progressTimeoutMs) void cancel(`progress timeout: no data moved for ${Math.round(cfg.progressTimeoutMs / 1000)} s`);
      else getJson<JobRecord>(this.etcd, keys.job(job.id)).then((j) => { if (j?.value.cancelRequested && !committing) void cancel('cancelled by user', true); }).catch(() => {});
    }, 500);

    let result: MigrationResult | undefined;
    let error: DroverError | undefined;
    try {
      result = await source.migrateVm(job.vm, toAddr, { externalCommit: true, timeoutMs }, onEvent, migId);
    } catch (e) {
      error = DroverError.from(e);
    } finally {
      clearInterval(watchdog);
    }
    if (committing) await committing;
    await queue;
    source.close();
    if (abandoned) throw new Abandoned(job.id);

    if (result && result.outcome === 'succeeded') {
      if (!committed) {
        // An engine that ignored externalCommit: the VM runs on the target now; record it.
        this.log('engine activated without external commit; recording the owner', { job: job.id });
        const v = await getJson<VmRecord>(this.etcd, keys.vm(job.vm));
        if (v) await this.patch(run, { committed: true, phase: 'committed' }, [{ key: keys.vm(job.vm), rev: v.modRevision, value: { ...v.value, node: job.to, lastMovedAt: Date.now(), lastFrom: job.from } }]).catch(() => {});
      }
      return this.finish(run, { phase: 'done', result: 'succeeded', engine: result, downtimeMs: result.downtimeMs, error: '', commitMs }, { state: 'running', node: job.to });
    }
    const err = error ?? new DroverError(result?.outcome === 'cancelled' ? 'CANCELLED' : 'INTERNAL', result?.error || 'migration failed');
    if (committed) return this.completeCommitted(run);
    if (cancelReason) {
      return this.finish(run, { phase: userCancel ? 'cancelled' : 'failed', result: userCancel ? 'cancelled' : 'failed', error: cancelReason, engine: result }, { state: 'running' });
    }
    return this.retryOrFail(run, err, { state: 'running' });
  }

  /** A job taken over after the owner flip: make sure the target runs the VM, then finish. */
  private async completeCommitted(run: Run): Promise<void> {
    const job = run.job;
    this.log('completing a committed job', { job: job.id });
    const source = new AgentClient(await this.nodeAddress(job.from));
    const target = new AgentClient(await this.nodeAddress(job.to));
    try {
      try { await source.commitMigration(this.agentMigrationId(job)); } catch (e) { this.log('commit (takeover)', { job: job.id, error: (e as Error).message }); }
      let ok = false;
      for (let i = 0; i < 60 && !ok; i++) {
        try { ok = (await target.getVm(job.vm)).state === 'running'; } catch { /* not yet */ }
        if (!ok) await sleep(500);
      }
      await this.finish(run, ok
        ? { phase: 'done', result: 'succeeded', error: '' }
        : { phase: 'failed', result: 'failed', error: `committed to ${job.to} but the VM does not run there` }, { state: ok ? 'running' : 'unknown', node: job.to });
    } finally {
      source.close();
      target.close();
    }
  }

  /** A job taken over before the owner flip: roll back (the VM keeps running on the source), then retry. */
  private async recover(run: Run, cfg: ClusterConfig): Promise<void> {
    const job = run.job;
    this.log('recovering a job whose migrator died', { job: job.id, phase: job.phase });
    await this.patch(run, { phase: 'recovering' });
    const source = new AgentClient(await this.nodeAddress(job.from));
    const target = new AgentClient(await this.nodeAddress(job.to));
    try {
      try { await source.cancelMigration(this.agentMigrationId(job)); } catch (e) { this.log('cancel (takeover)', { job: job.id, error: (e as Error).message }); }
      let where = '';
      for (let i = 0; i < 60 && !where; i++) {
        const [s, t] = await Promise.all([source.getVm(job.vm).catch(() => undefined), target.getVm(job.vm).catch(() => undefined)]);
        if (s?.state === 'running' && (!t || t.state !== 'running')) where = 'source';
        else if (!s && t?.state === 'running') where = 'target';
        else await sleep(500);
      }
      if (where === 'target') {
        // The engine finished on its own (no external commit): record where the VM runs.
        const v = await getJson<VmRecord>(this.etcd, keys.vm(job.vm));
        if (v) await this.patch(run, { committed: true, phase: 'committed' }, [{ key: keys.vm(job.vm), rev: v.modRevision, value: { ...v.value, node: job.to } }]);
        return this.finish(run, { phase: 'done', result: 'succeeded' }, { state: 'running', node: job.to });
      }
      if (!where) return this.finish(run, { phase: 'failed', result: 'failed', error: 'rollback after a migrator failure: the VM was not found running on the source' }, { state: 'unknown' });
      if (run.job.cancelRequested) return this.finish(run, { phase: 'cancelled', result: 'cancelled', error: 'cancelled by user' }, { state: 'running' });
      return this.retryOrFail(run, new DroverError('ABORTED', 'rolled back after its migrator failed'), { state: 'running' });
    } finally {
      source.close();
      target.close();
      void cfg;
    }
  }
}
