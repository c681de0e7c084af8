/**
 * Lost VMs: a VM whose record says it runs on a node that is alive (heartbeating) but has not
 * listed it in its heartbeats for LOST_VM_GRACE_MS. That is what an agent killed and restarted
 * within its lease TTL looks like: it registers again with no VMs (they lived in the old
 * process), so the node never looks dead and the VM would otherwise stay `running` in etcd forever.
 * The scheduler marks such a VM `unknown` (the state of "its host died"), with a reason naming
 * the node and since when; it is never started elsewhere on its own.
 *
 * Not lost: a VM in a job (the migrator owns its record), one being created, created or moved
 * within the grace period (the node's heartbeat may not list it yet), or whose node heartbeat has
 * not been refreshed since the VM was first seen missing (one stale heartbeat proves nothing).
 */
import type { ClusterSnapshot } from '../../cluster/etcd';
import type { VmRecord } from '../../cluster/keyspace';

/**
 * How long a live node may leave a VM out of its heartbeats before the VM counts as lost: five
 * heartbeat periods (1 s), so a heartbeat written just before the VM arrived, or a slow beat on a
 * loaded host, never makes a VM lost.
 */
export const LOST_VM_GRACE_MS = 5000;

/** A VM to mark lost, with the record revision the fenced write compares. */
export interface LostVm {
  name: string;
  modRevision: string;
  vm: VmRecord;
  /** Why it is lost (stored as the record's `error`, shown by `vm list`/`vm show`). */
  reason: string;
}

interface Missing {
  node: string;
  since: number;
  /** `at` of the first heartbeat seen without the VM. */
  heartbeatAt: number;
}

/** The reason text of a VM lost on `node`, missing since `since`. */
export function lostReason(node: string, since: number): string {
  return `lost: node ${node} is alive but has not reported this VM since ${new Date(since).toISOString()} ` +
    '(its agent restarted without it?); not restarted elsewhere: destroy it or create it again';
}

/** True when `error` is a lost reason (the record was already marked lost). */
export function isLostReason(error: string): boolean {
  return error.startsWith('lost: ');
}

/** Remembers, across scheduler rounds, since when each VM is missing from its live node's heartbeat. */
export class LostVmTracker {
  private readonly missing = new Map<string, Missing>();

  constructor(private readonly graceMs = LOST_VM_GRACE_MS) {}

  /** The VMs of `snap` that are lost now (running, or unknown with the node back, and unreported for the grace period). */
  check(snap: ClusterSnapshot, now = Date.now()): LostVm[] {
    const out: LostVm[] = [];
    const seen = new Set<string>();
    for (const [name, { value: vm, modRevision }] of snap.vms) {
      const hb = vm.node ? snap.nodes.get(vm.node)?.heartbeat : undefined;
      const candidate = hb && !vm.job && (vm.state === 'running' || (vm.state === 'unknown' && !isLostReason(vm.error)))
        && now - (vm.createdAt || 0) >= this.graceMs && now - (vm.lastMovedAt || 0) >= this.graceMs;
      if (!candidate || hb.vms.some((v) => v.name === name)) continue;
      seen.add(name);
      let m = this.missing.get(name);
      if (!m || m.node !== vm.node) {
        m = { node: vm.node, since: now, heartbeatAt: hb.at };
        this.missing.set(name, m);
      }
      if (now - m.since >= this.graceMs && hb.at > m.heartbeatAt) out.push({ name, modRevision, vm, reason: lostReason(vm.node, m.since) });
    }
    for (const name of [...this.missing.keys()]) if (!seen.has(name)) this.missing.delete(name);
    return out;
  }

  /** Forgets a VM (marked lost, or its record changed). */
  forget(name: string): void {
    this.missing.delete(name);
  }
}
