/**
 * One job as a replica runs it after claiming (and admitting) it: a job found committed is
 * completed, one found mid-flight is rolled back (takeover.ts), a cancelled one is finished;
 * otherwise it is checked (VM, nodes), started in one transaction fenced on the VM record
 * (VM migrating + job reserving), run as one attempt (attempt.ts), and settled: done, cancelled,
 * completed after the flip, or retried / failed.
 */
import { DroverError } from '../../lib/errors';
import { getJson, type Versioned } from '../../cluster/etcd';
import type { Logger } from '../../cluster/log';
import { migratorMetrics } from './migrator-metrics';
import { keys, type ClusterConfig, type JobPrediction, type JobRecord, type NodeHeartbeat, type VmRecord } from '../../cluster/keyspace';
import type { MigrationResult } from '../../migration/types';
import { dirtyingOf, jobPrediction, linkRate, predictMove, readLink, recordLink } from '../scheduler/move-cost';
import { completionTimeoutMs, resolvePolicy } from '../../migration/types';
import type { AttemptOutcome } from './attempt-state';
import { ENGINE_PHASES, MigrationAttempt } from './attempt';
import { Abandoned, type JobHandle, type JobStore } from './job-store';
import { completeCommitted, recover } from './takeover';
import { foldToTarget, settleFailed } from './fold';

/** The nodes of a job, checked and resolved to agent addresses. */
interface Endpoints {
  fromAddr: string;
  toAddr: string;
  /** The source node's heartbeat (the VM's dirtying, for the prediction). */
  fromHeartbeat: NodeHeartbeat;
}

/** One claimed job on this replica. */
export class JobRun {
  private readonly run: JobHandle;

  constructor(private readonly store: JobStore, private readonly log: Logger, job: Versioned<JobRecord>, private readonly cfg: ClusterConfig) {
    this.run = { job: job.value, rev: job.modRevision };
  }

  /** Drives the job to its next resting point (finished, backoff, or taken by another replica). */
  async drive(): Promise<void> {
    const { job } = this.run;
    if (job.committed) return completeCommitted(this.store, this.log, this.run);
    if (ENGINE_PHASES.has(job.phase) || job.phase === 'recovering') return recover(this.store, this.log, this.run);
    if (job.cancelRequested) return this.store.finish(this.run, { phase: 'cancelled', result: 'cancelled', error: 'cancelled by user before it started' });
    return this.execute();
  }

  private async execute(): Promise<void> {
    const job = this.run.job;
    const vm = await getJson<VmRecord>(this.store.etcd, keys.vm(job.vm));
    const ends = await this.preflight(vm);
    if (!vm || !ends) return;
    const vmRec: VmRecord = { ...vm.value, state: 'migrating' };
    const prediction = await this.predict(vm.value, ends.fromHeartbeat);
    const vmRev = await this.begin(vm, vmRec, prediction);
    if (vmRev === undefined) return;
    migratorMetrics().jobStarted(job);
    const timeoutMs = completionTimeoutMs(resolvePolicy({}), vm.value.spec.memBytes);
    const attempt = new MigrationAttempt({ store: this.store, log: this.log, run: this.run, cfg: this.cfg, vm: vmRec, vmRev, ...ends, timeoutMs });
    return this.settle(await attempt.run());
  }

  /** Checks the VM and both nodes; finishes or reschedules the job (undefined) when it cannot start. */
  private async preflight(vm: Versioned<VmRecord> | undefined): Promise<Endpoints | undefined> {
    const { store, run } = this;
    const job = run.job;
    if (!vm) { await store.fail(run, `VM "${job.vm}" no longer exists`); return undefined; }
    if (vm.value.node !== job.from) { await store.fail(run, `VM "${job.vm}" is on ${vm.value.node}, not ${job.from}`); return undefined; }
    if (vm.value.state !== 'running' && vm.value.state !== 'migrating') return this.notNow(`VM "${job.vm}" is ${vm.value.state}`);
    const [fromAlive, toAlive, toMark] = await Promise.all([
      getJson<NodeHeartbeat>(store.etcd, keys.alive(job.from)), getJson(store.etcd, keys.alive(job.to)), getJson<{ state: string }>(store.etcd, keys.mark(job.to)),
    ]);
    if (!fromAlive) return this.notNow(`source node ${job.from} is not alive`);
    if (!toAlive) return this.notNow(`target node ${job.to} is not alive`);
    if (toMark) { await store.fail(run, `target node ${job.to} is ${toMark.value.state}`); return undefined; }
    const fromAddr = await store.nodeAddress(job.from);
    const toAddr = await store.nodeAddress(job.to);
    return { fromAddr, toAddr, fromHeartbeat: fromAlive.value };
  }

  /**
   * The cost model's prediction of this move (move-cost.ts: the VM's dirtying from the source's
   * heartbeat, the pair's measured link rate); undefined when it cannot be made (never fails the job).
   */
  private async predict(vm: VmRecord, hb: NodeHeartbeat): Promise<JobPrediction | undefined> {
    const job = this.run.job;
    try {
      const d = dirtyingOf(vm.spec, hb.vms?.find((v) => v.name === vm.name));
      const link = linkRate(await readLink(this.store.etcd, job.from, job.to));
      return jobPrediction(predictMove(d, link), d, link);
    } catch (e) {
      this.log('no prediction for the job', { job: job.id, error: (e as Error).message });
      return undefined;
    }
  }

  /** After a success: the pair's link rate learns the migration's throughput, the metric its prediction error. */
  private async learn(r: MigrationResult): Promise<void> {
    const job = this.run.job;
    if (job.prediction) migratorMetrics().observePrediction(job.prediction, r);
    try {
      await recordLink(this.store.etcd, job.from, job.to, r);
    } catch (e) {
      this.log('link rate not recorded', { job: job.id, error: (e as Error).message });
    }
  }

  /** A transient reason not to start now: retry later (the try counts). */
  private async notNow(message: string): Promise<undefined> {
    await this.store.retryOrFail(this.run, new DroverError('UNAVAILABLE', message), {}, true);
    return undefined;
  }

  /** VM migrating + job reserving, one transaction fenced on the VM record; its revision, or undefined. */
  private async begin(vm: Versioned<VmRecord>, vmRec: VmRecord, prediction: JobPrediction | undefined): Promise<string | undefined> {
    const { store, run } = this;
    try {
      return await store.patch(run, (j) => ({ phase: 'reserving', attempts: j.attempts + 1, migrator: store.replicaId, admittedAt: j.admittedAt || Date.now(), error: '', ...(prediction ? { prediction } : {}) }),
        [{ key: keys.vm(run.job.vm), rev: vm.modRevision, value: vmRec }]);
    } catch (e) {
      if (e instanceof Abandoned) throw e;
      await store.retryOrFail(run, new DroverError('ABORTED', `VM "${run.job.vm}" changed while starting`), {}, true);
      return undefined;
    }
  }

  /** Turns the attempt's outcome into the job's next state. */
  private async settle(o: AttemptOutcome): Promise<void> {
    const { store, run } = this;
    const job = run.job;
    switch (o.kind) {
      case 'abandoned':
        throw new Abandoned(job.id);
      case 'succeeded':
        // Protocol 2: the target recorded owned/<to>/<vm>; fold it into vms/<vm> (fold.ts).
        if (!(await foldToTarget(store.etcd, job))) this.log('fold of the ownership record failed; finishing on the target', { job: job.id });
        await this.learn(o.result);
        return store.finish(run, { phase: 'done', result: 'succeeded', engine: o.result, downtimeMs: o.result.downtimeMs, error: '', committed: true }, { state: 'running', node: job.to });
      case 'committed':
        return completeCommitted(store, this.log, run);
      case 'cancelled':
        if (await this.targetOwns()) return this.finishOnTarget('cancel came after the switchover');
        return store.finish(run, { phase: o.byUser ? 'cancelled' : 'failed', result: o.byUser ? 'cancelled' : 'failed', error: o.reason, engine: o.result }, { state: 'running' });
      case 'failed':
        if (await this.targetOwns()) return this.finishOnTarget(o.error.message);
        return store.retryOrFail(run, o.error, { state: 'running' });
    }
  }

  /**
   * After a failed attempt: true when the target holds this attempt's ownership record (it runs
   * the VM), else the VM goes back to running on the source in a txn that compares the record's
   * absence, so the target can no longer record it (its fence fails).
   */
  private async targetOwns(): Promise<boolean> {
    return (await settleFailed(this.store.etcd, this.run.job)) === 'target';
  }

  /** The engine failed but the target recorded ownership for this attempt: the VM runs there. */
  private finishOnTarget(why: string): Promise<void> {
    const job = this.run.job;
    this.log('attempt failed but the target owns the VM; finishing on the target', { job: job.id, why });
    return this.store.finish(this.run, { phase: 'done', result: 'succeeded', error: '', committed: true }, { state: 'running', node: job.to });
  }
}
