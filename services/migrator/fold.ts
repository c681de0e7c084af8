/**
 * The migrator's end of protocol 2's switchover (migration/wire/protocol.ts, fault table): the
 * target agent records `owned/<to>/<vm>` itself, fenced on the intent (the `vms/<vm>` revision
 * of state migrating); the migrator folds that record into `vms/<vm>`, or, when the attempt
 * failed and no record exists, puts the VM back on its source in a transaction that compares
 * the record's absence, so a late record (fenced on the old revision) can never land after it.
 * A source that could not learn the outcome may have resumed the VM itself with a resume record
 * `owned/<from>/<vm>` (sourceResumed; switchover.ts): it excludes the target's record, so the VM
 * stays on the source; both records are deleted when the VM record is settled.
 */
import type { Etcd3 } from 'etcd3';
import { getJson } from '../../cluster/etcd';
import { keys, isClaimOf, type JobRecord, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';

/** Where the VM of a finished attempt runs, as recorded: on the target, on the source, or the record changed under us. */
export type Folded = 'target' | 'source' | 'changed';

/** True when `c` is the ownership record of `job`'s current attempt. */
export function claimOfAttempt(c: OwnershipClaim | undefined, job: JobRecord): boolean {
  return isClaimOf(c, job.id, job.attempts);
}

/** Reads the target's ownership record of `job`'s VM (any attempt), undefined when absent. */
export async function ownershipOf(etcd: Etcd3, job: JobRecord): Promise<OwnershipClaim | undefined> {
  return (await getJson<OwnershipClaim>(etcd, keys.ownership(job.to, job.vm)))?.value;
}

/** Reads the source's resume record of `job`'s VM (any attempt), undefined when absent. */
export async function resumeRecordOf(etcd: Etcd3, job: JobRecord): Promise<OwnershipClaim | undefined> {
  const c = (await getJson<OwnershipClaim>(etcd, keys.ownership(job.from, job.vm)))?.value;
  return c?.sourceResumed ? c : undefined;
}

/**
 * Folds the target's record: vms/<vm> node=to, state running, placed at the record's revision (CAS
 * on its revision), owned/<to>/<vm> deleted, and owned/<from>/<vm> too (a stale record; one of this attempt cannot coexist with the target's).
 */
export async function foldToTarget(etcd: Etcd3, job: JobRecord): Promise<boolean> {
  for (let i = 0; i < 5; i++) {
    const [v, claim] = await Promise.all([getJson<VmRecord>(etcd, keys.vm(job.vm)), getJson<OwnershipClaim>(etcd, keys.ownership(job.to, job.vm))]);
    if (!v) return false;
    // The placement's revision: the target's record of this job (what a restarted target is compared with).
    const placed = claim && isClaimOf(claim.value, job.id, claim.value.attempt) ? { node: job.to, rev: claim.modRevision } : undefined;
    const next: VmRecord = { ...v.value, node: job.to, state: 'running', lastMovedAt: Date.now(), lastFrom: job.from, placed };
    const r = await etcd.if(keys.vm(job.vm), 'Mod', '==', v.modRevision)
      .then(etcd.put(keys.vm(job.vm)).value(JSON.stringify(next)), etcd.delete().key(keys.ownership(job.to, job.vm)), etcd.delete().key(keys.ownership(job.from, job.vm))).commit();
    if (r.succeeded) return true;
  }
  return false;
}

/**
 * After a failed attempt: the VM back to running on `from` only if the target holds no record
 * (compared in the same txn; the source's resume record, if any, is deleted in it); a record of
 * this attempt folds to the target instead.
 */
export async function settleFailed(etcd: Etcd3, job: JobRecord): Promise<Folded> {
  for (let i = 0; i < 5; i++) {
    const v = await getJson<VmRecord>(etcd, keys.vm(job.vm));
    if (!v) return 'changed';
    if (v.value.node !== job.from) return 'changed';
    const next: VmRecord = { ...v.value, state: v.value.state === 'migrating' ? 'running' : v.value.state };
    const r = await etcd.if(keys.ownership(job.to, job.vm), 'Create', '==', 0).and(keys.vm(job.vm), 'Mod', '==', v.modRevision)
      .then(etcd.put(keys.vm(job.vm)).value(JSON.stringify(next)), etcd.delete().key(keys.ownership(job.from, job.vm))).commit();
    if (r.succeeded) return 'source';
    const claim = await ownershipOf(etcd, job);
    if (claim && claimOfAttempt(claim, job)) return (await foldToTarget(etcd, job)) ? 'target' : 'changed';
    if (claim) {
      // A stale record of an earlier attempt (its fold was lost): drop it, it no longer matches the intent.
      await etcd.if(keys.ownership(job.to, job.vm), 'Create', '>', 0).then(etcd.delete().key(keys.ownership(job.to, job.vm))).commit();
    }
  }
  return 'changed';
}
