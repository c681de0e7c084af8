/**
 * VMs lost to an agent restart, found at once. An agent process that starts registers anew
 * (`nodes/<id>` written at revision R, carried by each of its heartbeats as `registrationRev`), and
 * its heartbeats list every VM the process holds. A VM that etcd placed on that node before R and
 * that the heartbeat does not list lived in an earlier process: it is lost, and waiting proves
 * nothing more (lost-vms.ts's grace period is for VMs whose placement may be newer than the list).
 *
 * "Placed before R" is certain when the VM record is older than R, or when a migration placed it
 * there before R (`placed`: the revision of the target's switchover record, which an agent can
 * write only once registered; a target killed after recording and folded onto later). Another
 * record written after R (say its job was cleared, or it was marked unknown in the meantime) was
 * placed before R when the record as of revision R has the same node, creation and last move (one
 * historical read).
 *
 * Never reported here: a VM in a job or `migrating`, or with any switchover record
 * `owned/<node>/<vm>` (a target's claim or a source's resume record: the migrator decides where it
 * runs), or one being created. Those wait for lost-vms.ts's grace rule, or for the migrator.
 */
import type { Etcd3 } from 'etcd3';
import type { ClusterSnapshot } from '../../cluster/etcd';
import { keys, type NodeHeartbeat, type VmRecord } from '../../cluster/keyspace';
import { isLostReason, type LostVm } from './lost-vms';

/** A VM missing from its node's new registration whose placement needs the historical read. */
export interface Unsure extends LostVm {
  registrationRev: string;
}

/** The reason of a VM its node's restarted agent does not hold. */
export function restartLostReason(node: string, hb: NodeHeartbeat, registeredAt: number): string {
  return `lost: node ${node} restarted at ${new Date(registeredAt).toISOString()} (registration revision ${hb.registrationRev}) ` +
    'without this VM; not restarted elsewhere: destroy it or create it again';
}

/** Names of the VMs that have a switchover record (`owned/<node>/<vm>`) on any node. */
function switchingVms(snap: ClusterSnapshot): Set<string> {
  const out = new Set<string>();
  for (const key of snap.ownerships.keys()) out.add(key.slice(key.lastIndexOf('/') + 1));
  return out;
}

/** A VM whose record says it runs on a live node: could the node's current registration have lost it? */
function candidate(vm: VmRecord): boolean {
  return !vm.job && (vm.state === 'running' || (vm.state === 'unknown' && !isLostReason(vm.error)));
}

/** True when the record itself proves `vm` was placed on its node before `registrationRev`. */
function placedBefore(vm: VmRecord, modRevision: string, registrationRev: string): boolean {
  const reg = BigInt(registrationRev);
  return BigInt(modRevision) < reg || (vm.placed?.node === vm.node && BigInt(vm.placed.rev) < reg);
}

/**
 * The VMs of `snap` that their node's current registration does not hold: `sure` were placed
 * before it (record older than the registration), `unsure` need `placedBeforeThen`.
 */
export function missingFromRegistration(snap: ClusterSnapshot): { sure: LostVm[]; unsure: Unsure[] } {
  const sure: LostVm[] = [];
  const unsure: Unsure[] = [];
  const switching = switchingVms(snap);
  for (const [name, { value: vm, modRevision }] of snap.vms) {
    const n = vm.node ? snap.nodes.get(vm.node) : undefined;
    const hb = n?.heartbeat;
    if (!n || !hb?.registrationRev || !candidate(vm) || switching.has(name) || hb.vms.some((v) => v.name === name)) continue;
    const lost: LostVm = { name, modRevision, vm, reason: restartLostReason(vm.node, hb, n.record.registeredAt) };
    if (placedBefore(vm, modRevision, hb.registrationRev)) sure.push(lost);
    else unsure.push({ ...lost, registrationRev: hb.registrationRev });
  }
  return { sure, unsure };
}

/**
 * True when `u`'s record as of its node's registration already placed it there (same node,
 * creation and last move, not being created): the restarted agent should hold it. False when it
 * was placed later, or the revision is compacted (the grace rule then decides).
 */
export async function placedBeforeThen(etcd: Etcd3, u: Unsure): Promise<boolean> {
  const r = await etcd.get(keys.vm(u.name)).revision(u.registrationRev).exec().catch(() => undefined);
  const kv = r?.kvs[0];
  if (!kv) return false;
  const then = JSON.parse(kv.value.toString()) as VmRecord;
  return then.node === u.vm.node && then.createdAt === u.vm.createdAt && then.lastMovedAt === u.vm.lastMovedAt
    && then.state !== 'creating' && then.state !== 'pending';
}
