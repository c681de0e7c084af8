/**
 * Turns an etcd snapshot into the planner's model: node capacity from registration, memory in use
 * from the VM records (etcd is the truth, plus reservations of incoming migrations), CPU and dirty
 * rates from the heartbeats. Shared by the scheduler and `drover rebalance`.
 */
import type { ClusterSnapshot } from '../../cluster/etcd';
import { nodeUsage } from '../../cluster/usage';
import type { HeartbeatVm } from '../../cluster/keyspace';
import type { PlanNode, PlanVm } from './planner';
import { vmMoveCost, vmMoveCostByTarget, type LinkRates } from './move-cost';

/** The planner's view of the cluster: its nodes and its placed VMs. */
export interface PlanModel {
  nodes: PlanNode[];
  vms: PlanVm[];
}

/**
 * The planner's view of `snap` at time `now`; each placed VM's move cost by the cost model
 * (move-cost.ts: its heartbeat's dirtying; per target over the pair's measured link from `links`,
 * else over its node's mean measured outbound link or the default).
 */
export function planModel(snap: ClusterSnapshot, now = Date.now(), links: LinkRates = new Map()): PlanModel {
  const cpu = new Map<string, number>();
  const hbVm = new Map<string, HeartbeatVm & { dirty: number }>();
  for (const n of snap.nodes.values()) for (const v of n.heartbeat?.vms ?? []) hbVm.set(v.name, { ...v, dirty: v.dirtyRateBytesPerSec });
  const vms: PlanVm[] = [];
  for (const { value: v } of snap.vms.values()) {
    if (!v.node) continue;
    const hb = hbVm.get(v.name);
    cpu.set(v.node, (cpu.get(v.node) ?? 0) + (hb?.cpu ?? 0));
    vms.push({
      name: v.name, node: v.node, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus, cpu: hb?.cpu ?? 0,
      dirtyRateBytesPerSec: hb?.dirty ?? v.spec.dirtyRateBytesPerSec ?? 0,
      movable: v.state === 'running' && !v.job && now - (v.lastMovedAt || 0) >= snap.config.cooldownMs,
      ...costsOf(v.spec, v.node, hb, links),
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

/** The model's move costs (fallback and per measured target); none for a spec the model cannot read (the planner then falls back). */
function costsOf(spec: Parameters<typeof vmMoveCost>[0], node: string, hb: HeartbeatVm | undefined, links: LinkRates): Pick<PlanVm, 'cost' | 'costTo'> {
  try {
    const { bytes, ms, downtimeMs, converges, convergesThrottled } = vmMoveCost(spec, node, hb, links);
    const costTo = vmMoveCostByTarget(spec, node, hb, links);
    return { cost: { bytes, ms, downtimeMs, converges, convergesThrottled }, ...(costTo.size > 0 ? { costTo } : {}) };
  } catch {
    return {};
  }
}
