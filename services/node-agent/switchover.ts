/**
 * The agent's part of protocol 2's switchover in cluster mode (migration/wire/protocol.ts, fault
 * table). Two records decide a switchover whose outcome the stream did not carry, and etcd makes
 * them mutually exclusive:
 * - the target's `owned/<target>/<vm>`: written only if the intent (`vms/<vm>` revision) is
 *   unchanged and the source has written no resume record for this attempt;
 * - the source's resume record `owned/<source>/<vm>` (sourceResumed): written only if the intent
 *   is unchanged and the target holds no record of this attempt.
 * Whoever's txn lands first runs the VM; the other gives its copy up (the target destroys its
 * resumed copy and refuses "fenced"; the source destroys its paused copy).
 * A target whose record txn did not answer before its fence deadline does not know whether it
 * landed: it pauses its copy (before the source may resume) and settles from etcd: its record
 * there, or the VM's record folded onto it (a migrator found the record and deleted it) => resume,
 * it owns the VM; else it writes a tombstone (`fenced`) its record txn compares, so the record can
 * never land later, and destroys its copy.
 */
import type { Etcd3 } from 'etcd3';
import { DroverError, failedPrecondition, invalidArgument } from '../../lib/errors';
import { ETCD_CALL_DEADLINE_MS, getJson, withTimeout, type Versioned } from '../../cluster/etcd';
import { keys, isClaimOf, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';
import type { Fence } from '../../migration/wire/protocol';
import type { SwitchoverOutcome } from '../../migration/precopy/precopy-source';
import { RESOLVE_POLL_MS, sourceResolveBound, targetRecordDeadline } from './switchover-timing';

/** What the agent has of the cluster once registered (registration.ts `lease()`). */
export interface ClusterLink {
  lease(): { deadlineMs: number; ttlMs: number; etcd: Etcd3 | undefined };
}

export { LEASE_MARGIN_MS } from './switchover-timing';

/** Fault injection only: the target waits this many ms after resuming before it records its ownership. */
export const FAULT_OWNERSHIP_DELAY_ENV = 'DROVER_FAULT_OWNERSHIP_DELAY_MS';
/** Must be `1` for any DROVER_FAULT_* knob to be accepted (tests only; never set in production). */
export const FAULT_INJECTION_ENV = 'DROVER_FAULT_INJECTION';

/**
 * The fault-injection delay of the target's ownership record, ms (0 = none). Refused (throws
 * INVALID_ARGUMENT) when set without DROVER_FAULT_INJECTION=1 or when not a non-negative integer.
 */
export function faultOwnershipDelayMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[FAULT_OWNERSHIP_DELAY_ENV];
  if (raw === undefined || raw === '') return 0;
  if (env[FAULT_INJECTION_ENV] !== '1') throw invalidArgument(`${FAULT_OWNERSHIP_DELAY_ENV} is a fault-injection knob for tests: it is refused unless ${FAULT_INJECTION_ENV}=1 is set too`);
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms < 0) throw invalidArgument(`${FAULT_OWNERSHIP_DELAY_ENV} must be a whole number of ms >= 0, got "${raw}"`);
  return ms;
}

/** Read once at start: an agent given the knob without the test switch refuses to start. */
const OWNERSHIP_DELAY_MS = faultOwnershipDelayMs();

/** True when `c` is the record of this fence's job and attempt. */
export function claimMatches(c: OwnershipClaim | undefined, fence: Fence): boolean {
  return isClaimOf(c, fence.job, fence.attempt) && c.vmRevision === fence.vmRevision;
}

/** True when `c` is a target's tombstone of this fence's attempt (it gave the attempt up). */
export function isTombstoneOf(c: OwnershipClaim | undefined, fence: Fence): boolean {
  return !!c && c.fenced === true && c.job === fence.job && c.attempt === fence.attempt;
}

/**
 * True when the cluster put VM `vm` on `nodeId` since the fence: its intent record moved on
 * (revision changed) and names this node. Only this attempt's record can do that while the source
 * waits paused (a migrator folds the record, deleting it: fold.ts foldToTarget), so it means the
 * record landed. The source reads etcd by the same rule (`decided`), so both sides agree.
 */
export function foldedOnto(v: Versioned<VmRecord> | undefined, nodeId: string, fence: Fence): boolean {
  return !!v && v.modRevision !== fence.vmRevision && v.value.node === nodeId;
}

/**
 * recordOwnership could not learn whether its txn landed before the fence deadline: the caller
 * pauses its resumed copy at once and calls `settleUnknownRecord`.
 */
export class RecordOutcomeUnknown extends DroverError {
  constructor(message: string, cause: unknown) {
    super('UNAVAILABLE', message, { cause });
  }
}

/**
 * Target: one txn `if mod_revision(vms/<vm>) == fence.vmRevision and the source's record and its
 * own key are as read (no resume record, no tombstone of this attempt) then put
 * owned/<node>/<vm>`, bounded by the fence deadline (switchover-timing.ts targetRecordDeadline:
 * the sooner of its lease deadline and one TTL after Complete arrived, `completeArrivedAtMs`,
 * minus a margin; the source waits TTL + 2 margins after it sent Complete).
 * FAILED_PRECONDITION "fenced" when the intent changed, the source resumed the VM (its resume
 * record) or no etcd/deadline passed before trying (the caller destroys its copy and refuses);
 * RecordOutcomeUnknown when the txn did not answer in time (the caller pauses, then settles).
 */
export async function recordOwnership(link: ClusterLink, nodeId: string, vm: string, fence: Fence, completeArrivedAtMs: number): Promise<void> {
  const { deadlineMs, ttlMs, etcd } = link.lease();
  const budget = targetRecordDeadline({ completeArrivedAtMs, leaseDeadlineMs: deadlineMs, ttlMs }) - Date.now();
  if (!etcd || budget <= 0) throw failedPrecondition(`fenced: node ${nodeId} cannot record VM ${vm} within its record window (no lease, or ${completeArrivedAtMs ? `${Date.now() - completeArrivedAtMs} ms since Complete arrived` : 'no Complete seen'}, or its lease deadline passed)`);
  const claim: OwnershipClaim = { job: fence.job, attempt: fence.attempt, vmRevision: fence.vmRevision, at: Date.now() };
  let refusal = '';
  try {
    refusal = await withTimeout(tryRecord(etcd, nodeId, vm, fence, claim), budget, `recording the ownership of ${vm}`);
  } catch (e) {
    throw new RecordOutcomeUnknown(`node ${nodeId} does not know whether its record of VM ${vm} landed before its fence deadline: ${(e as Error).message}`, e);
  }
  if (refusal) throw failedPrecondition(`fenced: ${refusal}; node ${nodeId} gives the VM up`);
}

/** The target's reads + txn; '' when recorded, else why not. */
async function tryRecord(etcd: Etcd3, nodeId: string, vm: string, fence: Fence, claim: OwnershipClaim): Promise<string> {
  // Fault injection only: a slow etcd path from the target (the txn is sent this much later).
  if (OWNERSHIP_DELAY_MS > 0) await new Promise((r) => setTimeout(r, OWNERSHIP_DELAY_MS));
  const changed = `the intent of VM ${vm} changed (vms/${vm} is no longer at revision ${fence.vmRevision})`;
  const ownKey = keys.ownership(nodeId, vm);
  const [v, own] = await Promise.all([getJson<VmRecord>(etcd, keys.vm(vm)), getJson<OwnershipClaim>(etcd, ownKey)]);
  if (!v || v.modRevision !== fence.vmRevision) return changed;
  if (isTombstoneOf(own?.value, fence)) return `node ${nodeId} gave this attempt up (its tombstone)`;
  // The intent record (state migrating) names the source: its resume record is owned/<from>/<vm>.
  const resumeKey = keys.ownership(v.value.node, vm);
  const resume = await getJson<OwnershipClaim>(etcd, resumeKey);
  const resumed = `the source ${v.value.node} resumed VM ${vm} for this attempt (its resume record exists)`;
  if (claimMatches(resume?.value, fence)) return resumed;
  const r = await etcd.if(keys.vm(vm), 'Mod', '==', fence.vmRevision).and(...compareArgs(resumeKey, resume)).and(...compareArgs(ownKey, own))
    .then(etcd.put(ownKey).value(JSON.stringify(claim))).commit();
  if (r.succeeded) return '';
  // The compare failed: maybe because an earlier send of this same txn landed (etcd3 retries a
  // call that timed out on a member), and a migrator may have folded it since.
  const [mine, now, again] = await Promise.all([getJson<OwnershipClaim>(etcd, ownKey), getJson<VmRecord>(etcd, keys.vm(vm)), getJson<OwnershipClaim>(etcd, resumeKey)]);
  if (claimMatches(mine?.value, fence) || foldedOnto(now, nodeId, fence)) return '';
  return claimMatches(again?.value, fence) ? resumed : changed;
}

/**
 * Target, after RecordOutcomeUnknown with its copy paused: learns from etcd, retrying until it
 * can (the copy stays paused meanwhile). Its record of this attempt, or the VM folded onto it
 * (`foldedOnto`) => 'owned' (resume it); else it puts a tombstone, compared against its own key
 * and the VM's record as read, so its record can never land any more => 'fenced' (destroy the copy).
 */
export async function settleUnknownRecord(link: ClusterLink, nodeId: string, vm: string, fence: Fence, log: (e: Record<string, unknown>) => void): Promise<'owned' | 'fenced'> {
  const key = keys.ownership(nodeId, vm);
  for (;;) {
    const etcd = link.lease().etcd;
    try {
      if (etcd) {
        const [own, v] = await withTimeout(Promise.all([getJson<OwnershipClaim>(etcd, key), getJson<VmRecord>(etcd, keys.vm(vm))]), ETCD_CALL_DEADLINE_MS, `reading ${key}`);
        if (claimMatches(own?.value, fence)) return 'owned';
        // The record landed and a migrator already folded it (deleting it): the VM is ours.
        if (foldedOnto(v, nodeId, fence)) return 'owned';
        if (isTombstoneOf(own?.value, fence)) return 'fenced';
        const tomb: OwnershipClaim = { job: fence.job, attempt: fence.attempt, vmRevision: '', at: Date.now(), fenced: true };
        // Compared with the VM's record as read too: a fold landing meanwhile fails it (re-read: owned).
        const r = await withTimeout(etcd.if(...compareArgs(key, own)).and(...compareArgs(keys.vm(vm), v)).then(etcd.put(key).value(JSON.stringify(tomb))).commit(), ETCD_CALL_DEADLINE_MS, `writing the tombstone ${key}`);
        if (r.succeeded) return 'fenced';
      }
    } catch (e) {
      log({ msg: 'switchover: the record\'s outcome is still unknown, the resumed copy stays paused', vm, error: (e as Error).message });
    }
    await new Promise((r) => setTimeout(r, RESOLVE_POLL_MS));
  }
}

/** The arguments of a compare "this key is as read" (`.if(...)` / `.and(...)`). */
function compareArgs(key: string, read: Versioned<unknown> | undefined): [string, 'Mod' | 'Create', '==', string | number] {
  return read ? [key, 'Mod', '==', read.modRevision] : [key, 'Create', '==', 0];
}

/** What the source reads to decide: the intent record, the target's record and its own resume record. */
interface SwitchoverView {
  vm: Versioned<VmRecord> | undefined;
  theirs: Versioned<OwnershipClaim> | undefined;
  mine: Versioned<OwnershipClaim> | undefined;
}

async function readView(etcd: Etcd3, self: string, target: string, vm: string): Promise<SwitchoverView> {
  const [v, theirs, mine] = await Promise.all([
    getJson<VmRecord>(etcd, keys.vm(vm)), getJson<OwnershipClaim>(etcd, keys.ownership(target, vm)), getJson<OwnershipClaim>(etcd, keys.ownership(self, vm)),
  ]);
  return { vm: v, theirs, mine };
}

/**
 * The outcome etcd already decided, if any: the source's own resume record of this attempt =>
 * 'refused' (resume); the target's record of this attempt, or the VM folded onto the target =>
 * 'owned'; the intent changed otherwise (the target's fenced txn can no longer land) => 'refused'.
 */
export function decided(view: SwitchoverView, target: string, fence: Fence): SwitchoverOutcome | undefined {
  if (claimMatches(view.mine?.value, fence) && view.mine?.value.sourceResumed) return 'refused';
  if (claimMatches(view.theirs?.value, fence)) return 'owned';
  if (!view.vm) return 'refused';
  if (view.vm.modRevision !== fence.vmRevision) return view.vm.value.node === target ? 'owned' : 'refused';
  return undefined;
}

/**
 * Source: after Complete the stream broke with neither Owned nor a refusal; the VM is paused here.
 * Polls etcd until it decided (see `decided`). Once the target's lease is gone or its tombstone
 * is there, or its deadline
 * (Complete + TTL + margin) passed with nothing decided, writes the resume record in one txn that
 * requires the intent unchanged and the target's record as read (none of this attempt): landed
 * => 'refused' (resume; the target's record can no longer land), lost => re-read (the target won:
 * 'owned'). etcd unreachable past that bound: 'unknown' (stay paused). `log` names each try.
 */
export async function resolveOutcome(link: ClusterLink, self: string, target: string, vm: string, fence: Fence, log: (e: Record<string, unknown>) => void): Promise<SwitchoverOutcome> {
  // The cluster's node TTL (registration.ts) is the target's too: one DROVER_NODE_TTL_SEC per cluster.
  const ttlMs = link.lease().ttlMs;
  const bound = sourceResolveBound(Date.now(), ttlMs);
  for (;;) {
    const etcd = link.lease().etcd;
    try {
      if (!etcd) return 'unknown';
      const view = await readView(etcd, self, target, vm);
      const d = decided(view, target, fence);
      if (d) return d;
      const alive = await getJson(etcd, keys.alive(target));
      // A tombstone of this attempt: the target gave it up for good (its record cannot land).
      if (!alive || isTombstoneOf(view.theirs?.value, fence) || Date.now() > bound) {
        const mine: OwnershipClaim = { job: fence.job, attempt: fence.attempt, vmRevision: fence.vmRevision, at: Date.now(), sourceResumed: true };
        const r = await etcd.if(keys.vm(vm), 'Mod', '==', fence.vmRevision).and(...compareArgs(keys.ownership(target, vm), view.theirs))
          .then(etcd.put(keys.ownership(self, vm)).value(JSON.stringify(mine))).commit();
        if (r.succeeded) {
          log({ msg: 'switchover outcome: the source recorded its resume (the target cannot record any more)', vm, target, targetAlive: !!alive });
          return 'refused';
        }
        continue; // something changed under us: re-read at once and decide
      }
    } catch (e) {
      log({ msg: 'switchover outcome: etcd unreachable, VM stays paused', vm, target, error: (e as Error).message });
      if (Date.now() > bound + ttlMs) return 'unknown';
    }
    await new Promise((r) => setTimeout(r, RESOLVE_POLL_MS));
  }
}
