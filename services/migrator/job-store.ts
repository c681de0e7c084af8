/**
 * The migrator's writes to one job: patches fenced on the job's revision and this replica's
 * claim (plus any records given, e.g. the VM record for the owner flip), the final move into
 * the history, and the retry-with-backoff decision.
 */
import type { Etcd3 } from 'etcd3';
import { DroverError } from '../../lib/errors';
import { isRetryable } from '../../lib/grpc-status';
import { getJson, updateJson } from '../../cluster/etcd';
import { finishJob } from '../../cluster/jobs';
import type { Logger } from '../../cluster/log';
import { migratorMetrics } from './migrator-metrics';
import { keys, type Admission, type JobRecord, type NodeRecord, type VmRecord } from '../../cluster/keyspace';

/** Times a fenced patch re-reads the job and tries again before giving up. */
const PATCH_RETRIES = 20;

/** The job is no longer this replica's (its claim or record is gone): stop touching it. */
export class Abandoned extends Error {}

/** A cancel request arrived before the owner flip: the flip must not happen. */
export class CancelRequested extends Error {}

/** One job as this replica last wrote or read it. */
export interface JobHandle {
  job: JobRecord;
  /** The job key's mod revision matching `job`. */
  rev: string;
}

/** Another record a patch is fenced on and writes in the same transaction. */
export interface FencedWrite {
  key: string;
  rev: string;
  value: unknown;
}

/** A job patch: fields, or a function of the current record (re-run after a conflict). */
export type JobPatch = Partial<JobRecord> | ((j: JobRecord) => Partial<JobRecord>);

/** The migrator's writes to its jobs, fenced on its claim. */
export class JobStore {
  constructor(
    readonly etcd: Etcd3,
    /** This replica's id, the value of its claims. */
    readonly replicaId: string,
    private readonly log: Logger,
    private readonly backoffBaseMs: number,
  ) {}

  /** The id the agents know an attempt by (job id + attempt number). */
  agentMigrationId(job: JobRecord): string {
    return `${job.id}.${job.attempts}`;
  }

  /** The agent address of a registered node. */
  async nodeAddress(id: string): Promise<string> {
    const n = await getJson<NodeRecord>(this.etcd, keys.node(id));
    if (!n) throw new DroverError('NOT_FOUND', `node ${id} is not registered`);
    return n.value.address;
  }

  /** Writes `patch` onto the job, fenced on its revision and on this replica's claim. */
  async patch(run: JobHandle, patch: JobPatch, extra: FencedWrite[] = []): Promise<string> {
    for (let i = 0; i < PATCH_RETRIES; i++) {
      const p = typeof patch === 'function' ? patch(run.job) : patch;
      const next = { ...run.job, ...p, etcdWrites: run.job.etcdWrites + 1 };
      let txn = this.etcd.if(keys.job(next.id), 'Mod', '==', run.rev).and(keys.claim(next.id), 'Value', '==', this.replicaId);
      for (const e of extra) txn = txn.and(e.key, 'Mod', '==', e.rev);
      const r = await txn.then(this.etcd.put(keys.job(next.id)).value(JSON.stringify(next)), ...extra.map((e) => this.etcd.put(e.key).value(JSON.stringify(e.value)))).commit();
      if (r.succeeded) {
        run.job = next;
        run.rev = String(r.header.revision);
        return run.rev;
      }
      const fresh = await getJson<JobRecord>(this.etcd, keys.job(run.job.id));
      const claim = await this.etcd.get(keys.claim(run.job.id)).string();
      if (!fresh || claim !== this.replicaId) throw new Abandoned(`job ${run.job.id} is no longer ours`);
      if (extra.length > 0 && fresh.modRevision === run.rev) throw new DroverError('ABORTED', 'fenced record changed');
      run.job = fresh.value;
      run.rev = fresh.modRevision;
    }
    throw new DroverError('ABORTED', `job ${run.job.id}: too many concurrent updates`);
  }

  /** Moves the job into the history with `patch` applied, releases its admission slot. */
  async finish(run: JobHandle, patch: Partial<JobRecord>, vmPatch: Partial<VmRecord> = {}): Promise<void> {
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

  /** Fails the job for good with `error`. */
  fail(run: JobHandle, error: string, vmPatch: Partial<VmRecord> = {}): Promise<void> {
    return this.finish(run, { phase: 'failed', result: 'failed', error }, vmPatch);
  }

  /** Retries after a transient failure (backoff) or fails the job for good. */
  async retryOrFail(run: JobHandle, err: DroverError, vmPatch: Partial<VmRecord>, beforeStart = false): Promise<void> {
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
    await this.fail(run, err.message, vmPatch);
  }

  /** Frees the job's admission slot (a no-op when it holds none). */
  async releaseAdmission(id: string): Promise<void> {
    await updateJson<Admission>(this.etcd, keys.admission(), (cur) => (cur && cur.jobs.some((a) => a.id === id) ? { jobs: cur.jobs.filter((a) => a.id !== id) } : undefined));
  }
}
