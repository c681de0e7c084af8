/**
 * The agent's part of protocol 2's switchover in cluster mode (migration/wire/protocol.ts, fault
 * table): the target records its ownership in etcd fenced on the intent's revision and before its
 * node lease could expire; a source whose stream broke after Complete resolves the outcome from
 * etcd (the target's record, its lease).
 */
import type { Etcd3 } from 'etcd3';
import { failedPrecondition } from '../../lib/errors';
import { getJson, withTimeout } from '../../cluster/etcd';
import { keys, isClaimOf, type OwnershipClaim } from '../../cluster/keyspace';
import type { Fence } from '../../migration/wire/protocol';
import type { SwitchoverOutcome } from '../../migration/precopy/precopy-source';

/** What the agent has of the cluster once registered (registration.ts `lease()`). */
export interface ClusterLink {
  lease(): { deadlineMs: number; ttlMs: number; etcd: Etcd3 | undefined };
}

/** The target stops trying to record this long before its lease could expire, ms. */
export const LEASE_MARGIN_MS = 500;
/** How often a source re-reads etcd while resolving an outcome, ms. */
const RESOLVE_POLL_MS = 200;

/**
 * Target: one txn `if mod_revision(vms/<vm>) == fence.vmRevision then put owned/<node>/<vm>`,
 * given up at the lease deadline minus LEASE_MARGIN_MS. FAILED_PRECONDITION "fenced" when the
 * intent changed or the deadline passed (the caller destroys its copy and refuses).
 */
export async function recordOwnership(link: ClusterLink, nodeId: string, vm: string, fence: Fence): Promise<void> {
  const { deadlineMs, etcd } = link.lease();
  const budget = deadlineMs - LEASE_MARGIN_MS - Date.now();
  if (!etcd || budget <= 0) throw failedPrecondition(`fenced: node ${nodeId} cannot record VM ${vm} before its lease could expire (no lease or deadline passed)`);
  const claim: OwnershipClaim = { job: fence.job, attempt: fence.attempt, vmRevision: fence.vmRevision, at: Date.now() };
  let ok: boolean;
  try {
    const r = await withTimeout(etcd.if(keys.vm(vm), 'Mod', '==', fence.vmRevision).then(etcd.put(keys.ownership(nodeId, vm)).value(JSON.stringify(claim))).commit(), budget,
      `recording the ownership of ${vm}`);
    ok = r.succeeded;
  } catch (e) {
    // The txn may still land: take the record back (best effort) so nobody reads a fenced owner.
    void etcd.if(keys.ownership(nodeId, vm), 'Create', '>', 0).then(etcd.delete().key(keys.ownership(nodeId, vm))).commit().catch(() => undefined);
    throw failedPrecondition(`fenced: node ${nodeId} could not record VM ${vm} before its lease deadline: ${(e as Error).message}`, e);
  }
  if (!ok) throw failedPrecondition(`fenced: the intent of VM ${vm} changed (vms/${vm} is no longer at revision ${fence.vmRevision}); node ${nodeId} gives the VM up`);
}

/** True when `c` is the record of this fence's job and attempt. */
export function claimMatches(c: OwnershipClaim | undefined, fence: Fence): boolean {
  return isClaimOf(c, fence.job, fence.attempt) && c.vmRevision === fence.vmRevision;
}

/**
 * Source: after Complete the stream broke with neither Owned nor a refusal. Polls etcd: the
 * target's record for this attempt => 'owned'; the target's lease gone, or no record once the
 * target's deadline (Complete + TTL + margin) passed => 'refused' (the target fenced itself or
 * died: resume). etcd unreachable past that bound: 'unknown' (stay paused). `log` names each try.
 */
export async function resolveOutcome(link: ClusterLink, target: string, vm: string, fence: Fence, log: (e: Record<string, unknown>) => void): Promise<SwitchoverOutcome> {
  // The cluster's node TTL (registration.ts) is the target's too: one DROVER_NODE_TTL_SEC per cluster.
  const ttlMs = link.lease().ttlMs;
  const bound = Date.now() + ttlMs + 2 * LEASE_MARGIN_MS;
  for (;;) {
    const etcd = link.lease().etcd;
    try {
      if (!etcd) return 'unknown';
      const rec = await getJson<OwnershipClaim>(etcd, keys.ownership(target, vm));
      if (claimMatches(rec?.value, fence)) return 'owned';
      const alive = await getJson(etcd, keys.alive(target));
      if (!alive || Date.now() > bound) {
        // Read the record once more: a late record wins over an expired lease.
        const again = await getJson<OwnershipClaim>(etcd, keys.ownership(target, vm));
        return claimMatches(again?.value, fence) ? 'owned' : 'refused';
      }
    } catch (e) {
      log({ msg: 'switchover outcome: etcd unreachable, VM stays paused', vm, target, error: (e as Error).message });
      if (Date.now() > bound + ttlMs) return 'unknown';
    }
    await new Promise((r) => setTimeout(r, RESOLVE_POLL_MS));
  }
}
