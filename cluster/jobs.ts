/**
 * Migration jobs as the control plane writes them: creation (fenced on the VM record, so a VM
 * is in at most one job), cancel requests, and the final move of a job into the history.
 */
import type { DeleteBuilder, Etcd3, PutBuilder } from 'etcd3';
import { DroverError, failedPrecondition, notFound } from '../lib/errors';
import { capacityShortfall } from './capacity';
import { getJson } from './etcd';
import {
  keys, newJob, newJobId, AFTER_SWITCHOVER, TERMINAL_PHASES,
  type JobReason, type JobRecord, type VmRecord, type NodeMark, type NodeHeartbeat,
} from './keyspace';

/** Creates a migration job for `vm` to `to`; fails clearly when the VM, node or state is wrong. */
export async function createJob(etcd: Etcd3, p: { vm: string; to: string; reason: JobReason; predictedBytes?: number; maxAttempts?: number; allowCordonedTarget?: boolean; fenceKey?: string }): Promise<JobRecord> {
  const vm = await getJson<VmRecord>(etcd, keys.vm(p.vm));
  if (!vm) throw notFound(`no VM named "${p.vm}"`);
  const target = await getJson<unknown>(etcd, keys.node(p.to));
  if (!target) throw notFound(`no node named "${p.to}"`);
  const v = vm.value;
  if (v.node === p.to) throw failedPrecondition(`VM "${p.vm}" already runs on ${p.to}`);
  if (v.state !== 'running') throw failedPrecondition(`VM "${p.vm}" is ${v.state}, not running`);
  if (v.job) throw failedPrecondition(`VM "${p.vm}" is already being migrated (job ${v.job})`);
  const mark = await getJson<NodeMark>(etcd, keys.mark(p.to));
  if (mark && !p.allowCordonedTarget) throw failedPrecondition(`node ${p.to} is ${mark.value.state}: it takes no VMs`);
  const hb = await getJson<NodeHeartbeat>(etcd, keys.alive(p.to));
  if (!hb) throw failedPrecondition(`node ${p.to} is not alive (no heartbeat)`);
  // Memory only, as the target heartbeats it (the agent checks vCPUs when the VM arrives).
  const short = capacityShortfall(p.to, { memBytes: hb.value.memTotalBytes, vcpus: Infinity }, { memBytes: hb.value.memUsedBytes, vcpus: 0 }, { name: p.vm, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus });
  if (short) throw new DroverError('RESOURCE_EXHAUSTED', short);
  const job = newJob({ id: newJobId(), vm: p.vm, from: v.node, to: p.to, reason: p.reason, predictedBytes: p.predictedBytes, maxAttempts: p.maxAttempts });
  let txn = etcd.if(keys.vm(p.vm), 'Mod', '==', vm.modRevision);
  if (p.fenceKey) txn = txn.and(p.fenceKey, 'Version', '>', 0);
  const r = await txn
    .then(etcd.put(keys.vm(p.vm)).value(JSON.stringify({ ...v, job: job.id })), etcd.put(keys.job(job.id)).value(JSON.stringify(job)))
    .commit();
  if (!r.succeeded) throw new DroverError('ABORTED', `VM "${p.vm}" changed while the job was being created; try again`);
  return job;
}

/** Outcome of a cancel request. */
export type CancelOutcome = 'cancelled' | 'requested';

/**
 * Cancels a job: a queued job is cancelled at once; a running one is flagged and its migrator
 * cancels it on the source agent. Refused (FAILED_PRECONDITION) after switchover.
 */
export async function cancelJob(etcd: Etcd3, id: string): Promise<CancelOutcome> {
  for (let i = 0; i < 10; i++) {
    const j = await getJson<JobRecord>(etcd, keys.job(id));
    if (!j) {
      const h = await getJson<JobRecord>(etcd, keys.history(id));
      if (h) throw failedPrecondition(`migration ${id} already finished (${h.value.result || h.value.phase}): nothing to cancel`);
      throw notFound(`no migration with id "${id}"`);
    }
    const job = j.value;
    if (job.committed || AFTER_SWITCHOVER.has(job.phase)) {
      throw failedPrecondition(`migration ${id} is past switchover (phase ${job.phase}): the VM already runs on ${job.to}; cancel refused`);
    }
    if (TERMINAL_PHASES.has(job.phase)) throw failedPrecondition(`migration ${id} already finished (${job.phase})`);
    if (job.phase === 'pending' || job.phase === 'backoff') {
      const claimed = (await etcd.get(keys.claim(id)).exec()).kvs.length > 0;
      if (!claimed) {
        if (await finishJob(etcd, j.modRevision, { ...job, phase: 'cancelled', result: 'cancelled', error: 'cancelled by user before it started' })) return 'cancelled';
        continue;
      }
    }
    const r = await etcd.if(keys.job(id), 'Mod', '==', j.modRevision)
      .then(etcd.put(keys.job(id)).value(JSON.stringify({ ...job, cancelRequested: true, etcdWrites: job.etcdWrites + 1 })))
      .commit();
    if (r.succeeded) return 'requested';
  }
  throw new DroverError('ABORTED', `migration ${id} kept changing; try again`);
}

/**
 * Moves a finished job into the history and releases its VM (one transaction, fenced on the
 * job's revision). Returns false if the job changed meanwhile. `vmPatch` updates the VM record.
 */
export async function finishJob(etcd: Etcd3, jobRev: string, job: JobRecord, vmPatch: Partial<VmRecord> = {}): Promise<boolean> {
  const final: JobRecord = { ...job, finishedAt: job.finishedAt || Date.now(), etcdWrites: job.etcdWrites + 1 };
  for (let i = 0; i < 10; i++) {
    const vm = await getJson<VmRecord>(etcd, keys.vm(job.vm));
    let txn = etcd.if(keys.job(job.id), 'Mod', '==', jobRev);
    const ops: (DeleteBuilder | PutBuilder)[] = [etcd.delete().key(keys.job(job.id)), etcd.put(keys.history(job.id)).value(JSON.stringify(final))];
    if (vm) {
      txn = txn.and(keys.vm(job.vm), 'Mod', '==', vm.modRevision);
      const next = { ...vm.value, ...vmPatch };
      if (next.job === job.id) next.job = '';
      if (next.state === 'migrating') next.state = 'running';
      ops.push(etcd.put(keys.vm(job.vm)).value(JSON.stringify(next)));
    }
    const r = await txn.then(...ops).commit();
    if (r.succeeded) return true;
    const still = await getJson<JobRecord>(etcd, keys.job(job.id));
    if (!still || still.modRevision !== jobRev) return false;
  }
  return false;
}
