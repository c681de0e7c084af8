/**
 * Turns an etcd snapshot into the planner's model: node capacity from registration, memory in use
 * from the VM records (etcd is the truth, plus reservations of incoming migrations), CPU and dirty
 * rates from the heartbeats. Shared by the scheduler and `drover rebalance`.
 */
import type { ClusterSnapshot } from '../../cluster/etcd';
import type { PlanNode, PlanVm } from './planner';

export interface PlanModel {
  nodes: PlanNode[];
  vms: PlanVm[];
}

/** The planner's view of `snap` at time `now`. */
export function planModel(snap: ClusterSnapshot, now = Date.now()): PlanModel {
  const used = new Map<string, number>();
  const vcpus = new Map<string, number>();
  const cpu = new Map<string, number>();
  const hbVm = new Map<string, { cpu: number; dirty: number }>();
  for (const n of snap.nodes.values()) for (const v of n.heartbeat?.vms ?? []) hbVm.set(v.name, { cpu: v.cpu, dirty: v.dirtyRateBytesPerSec });
  const vms: PlanVm[] = [];
  for (const { value: v } of snap.vms.values()) {
    if (!v.node) continue;
    used.set(v.node, (used.get(v.node) ?? 0) + v.spec.memBytes);
    vcpus.set(v.node, (vcpus.get(v.node) ?? 0) + v.spec.vcpus);
    const hb = hbVm.get(v.name);
    cpu.set(v.node, (cpu.get(v.node) ?? 0) + (hb?.cpu ?? 0));
    vms.push({
      name: v.name, node: v.node, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus, cpu: hb?.cpu ?? 0,
      dirtyRateBytesPerSec: hb?.dirty ?? v.spec.dirtyRateBytesPerSec ?? 0,
      movable: v.state === 'running' && !v.job && now - (v.lastMovedAt || 0) >= snap.config.cooldownMs,
    });
  }
  // Incoming migrations reserve memory on their target until they finish.
  for (const { value: j } of snap.jobs.values()) {
    const vm = snap.vms.get(j.vm)?.value;
    if (vm && vm.node !== j.to) {
      used.set(j.to, (used.get(j.to) ?? 0) + vm.spec.memBytes);
      vcpus.set(j.to, (vcpus.get(j.to) ?? 0) + vm.spec.vcpus);
    }
  }
  const nodes: PlanNode[] = [...snap.nodes.values()].map((n) => ({
    id: n.id,
    memTotalBytes: n.heartbeat?.memTotalBytes ?? n.record.memTotalBytes,
    memUsedBytes: used.get(n.id) ?? 0,
    vcpusTotal: n.heartbeat?.vcpusTotal ?? n.record.vcpusTotal,
    cpuUsed: cpu.get(n.id) ?? 0,
    schedulable: n.state === 'ready',
    vcpusAllocated: vcpus.get(n.id) ?? 0,
  }));
  return { nodes, vms };
}
