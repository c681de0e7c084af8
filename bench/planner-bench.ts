/**
 * Planner scale bench: a rebalance plan over a simulated 1,000 nodes and 20,000 VMs (no agents,
 * no etcd: just the planner). Reports the planning time, imbalance before and after, the number
 * of moves and etcd writes per move (counted from the job runner's write sequence).
 *
 *   node dist/bench/planner-bench.js [--nodes N] [--vms N] [--aggressiveness L]
 */
import { planRebalance, type PlanNode, type PlanVm } from '../services/scheduler/planner';
import { ETCD_WRITES_PER_MOVE } from '../services/migrator/job-runner-writes';

const GiB = 2 ** 30;

/** A deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A skewed cluster: a fifth of the nodes hold most of the VMs. */
export function simulatedCluster(nodeCount: number, vmCount: number, seed = 42): { nodes: PlanNode[]; vms: PlanVm[] } {
  const r = rng(seed);
  const nodes: PlanNode[] = [];
  for (let i = 0; i < nodeCount; i++) nodes.push({ id: `node-${i}`, memTotalBytes: 512 * GiB, memUsedBytes: 0, vcpusTotal: 128, cpuUsed: 0, schedulable: true });
  const vms: PlanVm[] = [];
  const sizes = [1, 2, 4, 8, 16];
  for (let v = 0; v < vmCount; v++) {
    const memBytes = sizes[Math.floor(r() * sizes.length)] * GiB;
    const vcpus = 1 + Math.floor(r() * 4);
    const cpu = vcpus * r();
    const dirty = r() < 0.1 ? 2e9 * r() : 50e6 * r();
    let n: PlanNode;
    for (let tries = 0; ; tries++) {
      const hot = r() < 0.6;
      const i = hot ? Math.floor(r() * nodeCount * 0.2) : Math.floor(r() * nodeCount);
      n = nodes[i];
      if (n.memTotalBytes - n.memUsedBytes >= memBytes || tries > 50) break;
    }
    n.memUsedBytes += memBytes;
    n.cpuUsed += cpu;
    vms.push({ name: `vm-${v}`, node: n.id, memBytes, vcpus, cpu, dirtyRateBytesPerSec: dirty, movable: r() > 0.05 });
  }
  return { nodes, vms };
}

/** One planner bench run: the cluster's size, the planning time and the plan's numbers. */
export interface PlannerBenchResult {
  nodes: number;
  vms: number;
  aggressiveness: number;
  planMs: number;
  imbalanceBefore: number;
  imbalanceAfter: number;
  threshold: number;
  moves: number;
  stop: string;
  predictedTiB: number;
  etcdWritesPerMove: number;
  toString(): string;
}

/** Runs the bench; the result prints itself. */
export function runPlannerBench(opts: { nodes?: number; vms?: number; aggressiveness?: number } = {}): PlannerBenchResult {
  const nodeCount = opts.nodes ?? 1000;
  const vmCount = opts.vms ?? 20000;
  const aggressiveness = opts.aggressiveness ?? 3;
  const { nodes, vms } = simulatedCluster(nodeCount, vmCount);
  planRebalance(nodes.slice(0, 50), vms.filter((v) => Number(v.node.slice(5)) < 50), { aggressiveness }); // warm up the JIT
  const t0 = process.hrtime.bigint();
  const plan = planRebalance(nodes, vms, { aggressiveness });
  const planMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const res: PlannerBenchResult = {
    nodes: nodeCount, vms: vmCount, aggressiveness, planMs,
    imbalanceBefore: plan.imbalanceBefore, imbalanceAfter: plan.imbalanceAfter, threshold: plan.threshold,
    moves: plan.moves.length, stop: plan.stop, predictedTiB: plan.predictedBytes / 2 ** 40,
    etcdWritesPerMove: ETCD_WRITES_PER_MOVE,
    toString() {
      return [
        `planner: ${nodeCount} nodes, ${vmCount} VMs, aggressiveness ${aggressiveness} (threshold ${plan.threshold})`,
        `  plan time          ${planMs.toFixed(1)} ms ${planMs < 1000 ? '(< 1 s: ok)' : '(OVER 1 s)'}`,
        `  imbalance          ${plan.imbalanceBefore.toFixed(4)} -> ${plan.imbalanceAfter.toFixed(4)} (stop: ${plan.stop})`,
        `  moves              ${plan.moves.length} (predicted ${res.predictedTiB.toFixed(2)} TiB on the wire)`,
        `  etcd writes/move   ${ETCD_WRITES_PER_MOVE} (job create, admission, phases, owner flip, history; progress writes throttled to 1/s extra)`,
      ].join('\n');
    },
  };
  return res;
}

if (require.main === module) {
  const a = process.argv.slice(2);
  const get = (f: string) => { const i = a.indexOf(f); return i >= 0 ? Number(a[i + 1]) : undefined; };
  const r = runPlannerBench({ nodes: get('--nodes'), vms: get('--vms'), aggressiveness: get('--aggressiveness') });
  if (a.includes('--json')) {
    const { toString: _, ...fields } = r;
    console.log(JSON.stringify({ bench: 'planner', ...fields, underOneSecond: r.planMs < 1000 }));
  } else {
    console.log(r.toString());
  }
  if (r.planMs >= 1000) process.exitCode = 1;
}
