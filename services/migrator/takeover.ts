/**
 * Jobs a replica takes over from one that died, resolved from the target's ownership record
 * (protocol 2, fold.ts) and the agents' own state: a record of the job's attempt means the
 * target runs the VM (fold, done); otherwise the attempt is rolled back (cancel on the source,
 * wait until the VM runs on one node) and the VM is put back on the source in a txn that
 * compares the record's absence (a target still trying to record is fenced by it), then retried.
 * A source resume record of the attempt (the source resumed after an unresolved switchover; it
 * excludes the target's record) means the VM runs on the source: settle there (both records
 * deleted), then retry.
 */
import { DroverError } from '../../lib/errors';
import { AgentClient, agentCredentials } from '../node-agent/client/agent-client';
import { getJson } from '../../cluster/etcd';
import { sleep, type Logger } from '../../cluster/log';
import { keys, type VmRecord } from '../../cluster/keyspace';
import type { JobHandle, JobStore } from './job-store';
import { claimOfAttempt, foldToTarget, ownershipOf, resumeRecordOf, settleFailed } from './fold';

/** Polls of the agents while waiting for a VM to settle on one node after a takeover. */
const SETTLE_POLLS = 60;
/** Pause between those polls, ms (60 × 500 ms: half a minute). */
const SETTLE_POLL_MS = 500;

/** Where a VM was found running after a rollback: on the source, the target, or not settled. */
type Settled = 'source' | 'target' | '';

/** A job taken over after the owner flip: make sure the target runs the VM, then finish. */
export async function completeCommitted(store: JobStore, log: Logger, run: JobHandle): Promise<void> {
  const job = run.job;
  log('completing a committed job', { job: job.id });
  const source = new AgentClient(await store.nodeAddress(job.from), agentCredentials(job.from));
  const target = new AgentClient(await store.nodeAddress(job.to), agentCredentials(job.to));
  try {
    let ok = false;
    for (let i = 0; i < SETTLE_POLLS && !ok; i++) {
      try { ok = (await target.getVm(job.vm)).state === 'running'; } catch { /* not yet */ }
      if (!ok) await sleep(SETTLE_POLL_MS);
    }
    await store.finish(run, ok
      ? { phase: 'done', result: 'succeeded', error: '' }
      : { phase: 'failed', result: 'failed', error: `committed to ${job.to} but the VM does not run there` }, { state: ok ? 'running' : 'unknown', node: job.to });
  } finally {
    source.close();
    target.close();
  }
}

/** Polls both agents until the VM runs on exactly one of them (or gives up: ''). */
async function whereItSettled(source: AgentClient, target: AgentClient, vm: string): Promise<Settled> {
  for (let i = 0; i < SETTLE_POLLS; i++) {
    const [s, t] = await Promise.all([source.getVm(vm).catch(() => undefined), target.getVm(vm).catch(() => undefined)]);
    if (s?.state === 'running' && (!t || t.state !== 'running')) return 'source';
    if (!s && t?.state === 'running') return 'target';
    await sleep(SETTLE_POLL_MS);
  }
  return '';
}

/** A job taken over before the owner flip: roll back (the VM keeps running on the source), then retry. */
export async function recover(store: JobStore, log: Logger, run: JobHandle): Promise<void> {
  const job = run.job;
  log('recovering a job whose migrator died', { job: job.id, phase: job.phase });
  if (claimOfAttempt(await ownershipOf(store.etcd, job), job)) {
    // The target resumed the VM and recorded it for this attempt: fold, done.
    log('takeover: the target owns the VM (ownership record); folding', { job: job.id });
    await foldToTarget(store.etcd, job);
    return store.finish(run, { phase: 'done', result: 'succeeded', committed: true, error: '' }, { state: 'running', node: job.to });
  }
  if (claimOfAttempt(await resumeRecordOf(store.etcd, job), job) && (await settleFailed(store.etcd, job)) === 'source') {
    log('takeover: the source resumed the VM (its resume record); settled on the source', { job: job.id });
    if (run.job.cancelRequested) return store.finish(run, { phase: 'cancelled', result: 'cancelled', error: 'cancelled by user' }, { state: 'running' });
    return store.retryOrFail(run, new DroverError('ABORTED', 'the source resumed the VM after an unresolved switchover'), { state: 'running' });
  }
  await store.patch(run, { phase: 'recovering' });
  const source = new AgentClient(await store.nodeAddress(job.from), agentCredentials(job.from));
  const target = new AgentClient(await store.nodeAddress(job.to), agentCredentials(job.to));
  try {
    try { await source.cancelMigration(store.agentMigrationId(job)); } catch (e) { log('cancel (takeover)', { job: job.id, error: (e as Error).message }); }
    const where = await whereItSettled(source, target, job.vm);
    // The record decides (the agents' state only told us the switchover settled): put back on the
    // source only if the target holds no record, compared in the same txn.
    const folded = await settleFailed(store.etcd, job);
    if (folded === 'target' || (where === 'target' && folded !== 'source')) {
      if (folded !== 'target') {
        const v = await getJson<VmRecord>(store.etcd, keys.vm(job.vm));
        if (v) await store.patch(run, { committed: true, phase: 'committed' }, [{ key: keys.vm(job.vm), rev: v.modRevision, value: { ...v.value, node: job.to } }]);
      }
      return store.finish(run, { phase: 'done', result: 'succeeded', committed: true }, { state: 'running', node: job.to });
    }
    if (!where) return store.fail(run, 'rollback after a migrator failure: the VM was not found running on the source', { state: 'unknown' });
    if (run.job.cancelRequested) return store.finish(run, { phase: 'cancelled', result: 'cancelled', error: 'cancelled by user' }, { state: 'running' });
    return store.retryOrFail(run, new DroverError('ABORTED', 'rolled back after its migrator failed'), { state: 'running' });
  } finally {
    source.close();
    target.close();
  }
}
