/**
 * Stray VMs: a VM whose record is `unknown` (its node died, or it was reported lost) while a live
 * node reports it running: an orphan etcd no longer points at, which `vm destroy` and `migrate`
 * could not manage. The scheduler makes the record follow the VM (fenced on the record's
 * revision): the VM keeps running where it runs and the CLI manages it again.
 *
 * Adopted only when the picture is unambiguous: no job holds the VM, no switchover record
 * (ownership) is pending for it, its recorded node does not report it running, exactly one live
 * node does, and that node's heartbeat was written well after the VM last moved (a heartbeat from
 * before a move may still list a copy that has since been released). Two nodes reporting it
 * running is a split: the record stays `unknown` and says where it runs, for the operator.
 */
import type { ClusterSnapshot } from '../../cluster/etcd';
import { idOf, type VmRecord } from '../../cluster/keyspace';

/**
 * How much newer than the VM's last move a heartbeat must be before it counts as evidence of
 * where the VM runs: two heartbeat periods (1 s each), so the one an agent wrote while it still
 * held a copy it then released is never taken for the truth.
 */
export const STRAY_HEARTBEAT_MARGIN_MS = 2000;

/** What to do with one stray VM: `adopt` points its record at the one node running it; `split` names the nodes that all run it. */
export type StrayVm =
  | { kind: 'adopt'; name: string; modRevision: string; vm: VmRecord; node: string }
  | { kind: 'split'; name: string; modRevision: string; vm: VmRecord; nodes: string[]; reason: string };

/** The reason a split VM's record carries (shown by `vm list`/`vm show`). */
export function splitReason(nodes: readonly string[]): string {
  return `split: running on ${nodes.join(' and ')} at once; destroy the copies that must not run (drover vm destroy NAME --agent ADDR), then the record follows the one left`;
}

/** The stray VMs of `snap` (see the module doc). */
export function findStrays(snap: ClusterSnapshot): StrayVm[] {
  const out: StrayVm[] = [];
  // VMs with a switchover record (a claim or a source's resume record; tombstones are none): the migrator settles those.
  const recorded = new Set([...snap.ownerships].filter(([, c]) => !c.value.fenced).map(([k]) => idOf(k)));
  for (const [name, { value: vm, modRevision }] of snap.vms) {
    if (vm.state !== 'unknown' || vm.job || recorded.has(name)) continue;
    const on: string[] = [];
    for (const n of snap.nodes.values()) {
      const hb = n.heartbeat;
      if (!hb || hb.at - (vm.lastMovedAt || 0) < STRAY_HEARTBEAT_MARGIN_MS) continue;
      if (hb.vms.some((v) => v.name === name && v.state === 'running')) on.push(n.id);
    }
    if (on.length === 1 && on[0] !== vm.node) out.push({ kind: 'adopt', name, modRevision, vm, node: on[0] });
    else if (on.length > 1 && vm.error !== splitReason(on)) out.push({ kind: 'split', name, modRevision, vm, nodes: on, reason: splitReason(on) });
  }
  return out;
}
