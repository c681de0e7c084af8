/**
 * What each node has and what is taken, from an etcd snapshot: capacity from the heartbeat (or
 * the registration), memory and vCPUs in use from the VM records (etcd is the truth) plus the
 * reservations of incoming migrations. Shared by the planner's model and the operations module.
 */
import type { ClusterSnapshot } from './etcd';
import type { Resources } from './capacity';

/** One node's capacity and use. */
export interface NodeUsage {
  capacity: Resources;
  used: Resources;
  /** Accepts new VMs (ready: alive, not cordoned, draining or drained). */
  schedulable: boolean;
}

/** Usage of every registered node of `snap`, by node id (in the snapshot's order). */
export function nodeUsage(snap: ClusterSnapshot): Map<string, NodeUsage> {
  const mem = new Map<string, number>();
  const vcpus = new Map<string, number>();
  const add = (node: string, m: number, c: number) => {
    mem.set(node, (mem.get(node) ?? 0) + m);
    vcpus.set(node, (vcpus.get(node) ?? 0) + c);
  };
  for (const { value: v } of snap.vms.values()) if (v.node) add(v.node, v.spec.memBytes, v.spec.vcpus);
  // Incoming migrations reserve memory on their target until they finish.
  for (const { value: j } of snap.jobs.values()) {
    const vm = snap.vms.get(j.vm)?.value;
    if (vm && vm.node !== j.to) add(j.to, vm.spec.memBytes, vm.spec.vcpus);
  }
  const out = new Map<string, NodeUsage>();
  for (const n of snap.nodes.values()) {
    out.set(n.id, {
      capacity: { memBytes: n.heartbeat?.memTotalBytes ?? n.record.memTotalBytes, vcpus: n.heartbeat?.vcpusTotal ?? n.record.vcpusTotal },
      used: { memBytes: mem.get(n.id) ?? 0, vcpus: vcpus.get(n.id) ?? 0 },
      schedulable: n.state === 'ready',
    });
  }
  return out;
}
