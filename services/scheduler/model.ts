/**
 * Turns an etcd snapshot into the planner's model: node capacity from registration, memory in use
 * from the VM records (etcd is the truth, plus reservations of incoming migrations), CPU and dirty
 * rates from the heartbeats. Shared by the scheduler and `drover rebalance`.
 */
import type { ClusterSnapshot } from '../../cluster/etcd';
import { nodeUsage } from '../../cluster/usage';
import type { PlanNode, PlanVm } from './planner';

/** The planner's view of the cluster: its nodes and its placed VMs. */
export interface PlanModel {
  nodes: PlanNode[];
  vms: PlanVm[];
}

/** The planner's view of `snap` at time `now`. */
export function planModel(snap: ClusterSnapshot, now = Date.now()): PlanModel {
  const cpu = new Map<string, number>();
  const hbVm = new Map<string, { cpu: number; dirty: number }>();
  for (const n of snap.nodes.values()) for (const v of n.heartbeat?.vms ?? []) hbVm.set(v.name, { cpu: v.cpu, dirty: v.dirtyRateBytesPerSec });
  const vms: PlanVm[] = [];
  for (const { value: v } of snap.vms.values()) {
    if (!v.node) continue;
    const hb = hbVm.get(v.name);
    cpu.set(v.node, (cpu.get(v.node) ?? 0) + (hb?.cpu ?? 0));
    vms.push({
      name: v.name, node: v.node, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus, cpu: hb?.cpu ?? 0,
      dirtyRateBytesPerSec: hb?.dirty ?? v.spec.dirtyRateBytesPerSec ?? 0,
      movable: v.state === 'running' && !v.job && now - (v.lastMovedAt || 0) >= snap.config.cooldownMs,
    });
  }
  const usage = nodeUsage(snap);
  const nodes: PlanNode[] = [...usage].map(([id, u]) => ({
    id,
    memTotalBytes: u.capacity.memBytes,
    memUsedBytes: u.used.memBytes,
    vcpusTotal: u.capacity.vcpus,
    cpuUsed: cpu.get(id) ?? 0,
    schedulable: u.schedulable,
    vcpusAllocated: u.used.vcpus,
  }));
  return { nodes, vms };
}
