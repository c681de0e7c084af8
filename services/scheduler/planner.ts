/**
 * The scheduler's pure planning functions: initial placement, rebalancing (DRS-like) and
 * evacuation. No I/O: the scheduler feeds them a model of the cluster and turns the result into
 * migration jobs; the bench runs them over 1,000 simulated nodes.
 *
 * Load of a node = a weighted mean (LoadWeights, cluster config `loadWeights`; default memory
 * 0.5, allocated vCPUs 0.25, measured CPU 0.25) of its memory, vCPU allocation and CPU use
 * (each 0..1). Imbalance = the standard
 * deviation of the loads of the schedulable nodes (VMware DRS uses the same measure). The
 * aggressiveness level 1..5 sets the threshold above which the rebalancer acts; it then plans
 * moves until the imbalance is below half the threshold (hysteresis: a cluster just under the
 * threshold is left alone, and a finished plan leaves room before the next one triggers).
 * Each move is the one that cuts the imbalance most per predicted migration time (start to
 * resume on the target: what a move holds the link and the VM's migration slot for, and where a
 * slow link shows even when the bytes are the same) by the cost model
 * (migration/policy/cost-model.ts), from the VM's observed dirtying and the link of the pair when
 * the caller knows them (PlanVm.costTo per target, else PlanVm.cost; services/scheduler/move-cost.ts),
 * else from its size and dirty rate. A move the model predicts not to converge is not planned
 * (a drain still moves such VMs). A VM moves at most once per plan, and VMs still in their cool-down are not
 * candidates (no ping-pong).
 */
import { DEFAULT_LINK_BYTES_PER_SEC, predictMigration } from '../../migration/policy/cost-model';
import { DEFAULT_MAX_DOWNTIME_MS } from '../../migration/types';

/** The cost model's figures for moving one VM. */
export interface MoveCost {
  /** Bytes on the wire. */
  bytes: number;
  /** Start to resume on the target, ms. */
  ms: number;
  downtimeMs: number;
  /** Pre-copy converges within the downtime target without throttling or post-copy. */
  converges: boolean;
  /**
   * Pre-copy converges once auto-converge throttles the guest (the engine does that on its own):
   * the planner moves such a VM too, at its predicted cost; only one that converges neither way is
   * left out (a drain still moves it).
   */
  convergesThrottled?: boolean;
}

/** Whether the engine is predicted to finish the move by pre-copy, throttled or not. */
function finishes(c: MoveCost): boolean {
  return c.converges || c.convergesThrottled === true;
}

/** A node as the planner sees it. */
export interface PlanNode {
  id: string;
  memTotalBytes: number;
  /** Memory in use, including reservations of incoming migrations. */
  memUsedBytes: number;
  vcpusTotal: number;
  /** Measured CPU use in vCPUs (0..vcpusTotal). */
  cpuUsed: number;
  /** Accepts VMs (ready: alive, not cordoned, draining or drained). */
  schedulable: boolean;
  /** vCPUs allocated to VMs (checked against vcpusTotal when set). */
  vcpusAllocated?: number;
}

/** A VM as the planner sees it. */
export interface PlanVm {
  name: string;
  node: string;
  memBytes: number;
  vcpus: number;
  /** Measured CPU use in vCPUs. */
  cpu: number;
  dirtyRateBytesPerSec: number;
  /** False when the VM must not move now (cool-down, in a job, unknown state). */
  movable: boolean;
  /** The model's cost of moving it (planModel fills it from heartbeats and measured links); absent: from size and dirty rate. */
  cost?: MoveCost;
  /** The model's cost of moving it to each target whose link was measured, by node id; other targets take `cost`. */
  costTo?: ReadonlyMap<string, MoveCost>;
}

/** One planned migration. */
export interface PlannedMove {
  vm: string;
  from: string;
  to: string;
  memBytes: number;
  /** Predicted bytes on the wire. */
  predictedBytes: number;
  /** Predicted total time at the assumed bandwidth, ms. */
  predictedMs: number;
  /** Predicted downtime (the stop-and-copy), ms. */
  predictedDowntimeMs: number;
  /** The model predicts pre-copy converges. */
  converges: boolean;
  /** Imbalance after this move (and the ones before it). */
  imbalanceAfter: number;
  /** Why this move was picked, in words. */
  why: string;
}

/** A rebalancing plan. */
export interface RebalancePlan {
  aggressiveness: number;
  threshold: number;
  target: number;
  imbalanceBefore: number;
  imbalanceAfter: number;
  moves: PlannedMove[];
  predictedBytes: number;
  predictedMs: number;
  /** Movable VMs left out because the model predicts they would not converge. */
  skippedNotConverging: string[];
  /** Why planning stopped. */
  stop: 'balanced' | 'below-threshold' | 'no-improving-move' | 'max-moves' | 'disabled';
}

/** How eagerly and how far one rebalance plan goes. */
export interface RebalanceOptions {
  aggressiveness?: number;
  /** Most moves in one plan (the scheduler takes a few per round; the bench takes all). */
  maxMoves?: number;
  /** Assumed migration bandwidth, bytes/s (default DEFAULT_LINK_BYTES_PER_SEC, 1 Gbit/s). */
  bandwidthBytesPerSec?: number;
  /** Sources and targets considered per move (most and least loaded nodes). */
  candidates?: number;
  /**
   * A rebalance is already under way (hysteresis, like a Schmitt trigger): keep going while the
   * imbalance is above the target (half the threshold), not just above the threshold.
   */
  continuing?: boolean;
  /** Weights of the balance score (default DEFAULT_LOAD_WEIGHTS; normalised). */
  weights?: Partial<LoadWeights>;
}

/** Imbalance threshold per aggressiveness level (1 = never rebalance, 5 = most eager). */
export const THRESHOLDS: Record<number, number> = { 1: Infinity, 2: 0.2, 3: 0.1, 4: 0.05, 5: 0.02 };

/** Threshold of an aggressiveness level (clamped to 1..5). */
export function thresholdOf(aggressiveness: number): number {
  return THRESHOLDS[Math.min(5, Math.max(1, Math.round(aggressiveness)))];
}

/**
 * The cost model's figures for `v` over `bw`: `v.cost` when the caller computed them, else the
 * model from its size (every byte non-zero) and dirty rate (no WSS curve: dirtied bytes grow
 * linearly with the round's time, capped at RAM).
 */
export function moveCostOf(v: Pick<PlanVm, 'memBytes' | 'dirtyRateBytesPerSec' | 'cost'>, bw = DEFAULT_LINK_BYTES_PER_SEC): MoveCost {
  if (v.cost) return v.cost;
  const p = predictMigration({ memBytes: v.memBytes, nonzeroBytes: v.memBytes, dirtyRateBytesPerSec: Math.max(0, v.dirtyRateBytesPerSec), wss: [], linkBytesPerSec: bw, maxDowntimeMs: DEFAULT_MAX_DOWNTIME_MS });
  return { bytes: p.predictedBytes, ms: p.predictedTotalMs, downtimeMs: p.predictedDowntimeMs, converges: p.converges };
}

/**
 * The planner's former rule, kept for comparison: predicted bytes on the wire to migrate a VM by pre-copy: round 1 sends the RAM, each later
 * round what was dirtied meanwhile (a geometric series of ratio dirty/bandwidth), capped at
 * 3x RAM where pre-copy would not converge (the engine then stops or goes post-copy).
 */
export function predictMigrationBytes(memBytes: number, dirtyRateBytesPerSec: number, bandwidthBytesPerSec = DEFAULT_LINK_BYTES_PER_SEC): number {
  const r = Math.max(0, dirtyRateBytesPerSec) / bandwidthBytesPerSec;
  if (r >= 0.67) return 3 * memBytes;
  return memBytes / (1 - r);
}

/**
 * Weights of a node's balance score (normalised to sum 1): memory in use / RAM, allocated vCPUs /
 * vCPUs (what is promised), measured CPU / vCPUs (what is used). Allocated vCPUs count because a
 * node full by allocation takes no VM however idle its guests are.
 */
export interface LoadWeights {
  memory: number;
  vcpus: number;
  cpu: number;
}

/** Default weights: memory 0.5, allocated vCPUs 0.25, measured CPU 0.25. */
export const DEFAULT_LOAD_WEIGHTS: Readonly<LoadWeights> = Object.freeze({ memory: 0.5, vcpus: 0.25, cpu: 0.25 });

/** `w` normalised to sum 1; a RangeError naming a negative or all-zero weight. */
export function normaliseWeights(w: Partial<LoadWeights> = {}): LoadWeights {
  const x = { ...DEFAULT_LOAD_WEIGHTS, ...w };
  for (const [k, v] of Object.entries(x)) if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`load weight ${k} must be ≥ 0 (got ${v})`);
  const t = x.memory + x.vcpus + x.cpu;
  if (!(t > 0)) throw new RangeError('load weights must not all be 0');
  return { memory: x.memory / t, vcpus: x.vcpus / t, cpu: x.cpu / t };
}

function loadOf(n: PlanNode, w: LoadWeights = DEFAULT_LOAD_WEIGHTS): number {
  const mem = n.memTotalBytes > 0 ? n.memUsedBytes / n.memTotalBytes : 1;
  const cpu = n.vcpusTotal > 0 ? Math.min(1, n.cpuUsed / n.vcpusTotal) : 0;
  const alloc = n.vcpusTotal > 0 && n.vcpusAllocated !== undefined ? n.vcpusAllocated / n.vcpusTotal : 0;
  return w.memory * mem + w.vcpus * alloc + w.cpu * cpu;
}

/** Imbalance (standard deviation of load) of the schedulable nodes. */
export function imbalance(nodes: PlanNode[], weights: Partial<LoadWeights> = {}): number {
  const w = normaliseWeights(weights);
  const ls = nodes.filter((n) => n.schedulable).map((n) => loadOf(n, w));
  if (ls.length < 2) return 0;
  const mean = ls.reduce((a, b) => a + b, 0) / ls.length;
  return Math.sqrt(ls.reduce((a, l) => a + (l - mean) ** 2, 0) / ls.length);
}

/** Smallest cut in imbalance that counts as an improvement (float noise is not a gain). */
const MIN_GAIN = 1e-12;

/**
 * The rebalancer's working set: loads and free capacity of the schedulable nodes, and the
 * movable VMs per node as indices into flat arrays (the hot loop does no lookups).
 */
interface RebalanceState {
  nodes: PlanNode[];
  load: number[];
  /** Sum of the loads and of their squares (the imbalance in O(1) per candidate move). */
  sum: number;
  sum2: number;
  cur: number;
  vmList: PlanVm[];
  onNode: number[][];
  vmMem: Float64Array;
  vmCpu: Float64Array;
  vmVcpus: Float64Array;
  /** Predicted ms per VM for targets without their own cost (Infinity: does not converge). */
  vmCost: Float64Array;
  /** Predicted ms per VM and target node index, for VMs with PlanVm.costTo (NaN: take vmCost; Infinity: does not converge). */
  vmCostTo: (Float64Array | undefined)[];
  /** The model's figures per VM. */
  costs: MoveCost[];
  freeMem: Float64Array;
  freeVcpu: Float64Array;
  /** Memory weight / RAM, per node (a byte's share of the load). */
  halfInvMem: Float64Array;
  /** CPU weight / vCPUs, per node. */
  halfInvCpu: Float64Array;
  /** Weight of allocated vCPUs / vCPUs (0 where the allocation is unknown). */
  invAlloc: Float64Array;
  /** The K most and K least loaded nodes (reused per move). */
  top: number[];
  bottom: number[];
}

/** The best move found by one search: source, target, index in the source's list, load deltas. */
interface MoveChoice {
  s: number;
  t: number;
  k: number;
  ds: number;
  dt: number;
  /** The cut in imbalance. */
  gain: number;
  /** Candidate moves that would improve the balance (this one among them). */
  improving: number;
}

/** Standard deviation of `n` loads from their sum and sum of squares. */
function stdOf(n: number, s: number, s2: number): number {
  return n < 2 ? 0 : Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2));
}

/** Copies the schedulable nodes and indexes the movable VMs on them. */
function rebalanceState(nodesIn: PlanNode[], vmsIn: PlanVm[], bw: number, w: LoadWeights, skipped: string[]): RebalanceState {
  const nodes = nodesIn.filter((n) => n.schedulable).map((n) => ({ ...n }));
  const idx = new Map(nodes.map((n, i) => [n.id, i]));
  const load = nodes.map((n) => loadOf(n, w));
  const sum = load.reduce((a, b) => a + b, 0);
  const sum2 = load.reduce((a, b) => a + b * b, 0);
  const vmList: PlanVm[] = [];
  const costs: MoveCost[] = [];
  const vmCostTo: (Float64Array | undefined)[] = [];
  const onNode: number[][] = nodes.map(() => []);
  for (const vm of vmsIn) {
    const i = idx.get(vm.node);
    if (i === undefined || !vm.movable) continue;
    const c = moveCostOf(vm, bw);
    const row = costRow(vm, idx, nodes.length);
    if (!finishes(c) && !(row && row.some((x) => x < Infinity))) { skipped.push(vm.name); continue; }
    onNode[i].push(vmList.length);
    vmList.push(vm);
    costs.push(c);
    vmCostTo.push(row);
  }
  return {
    nodes, load, sum, sum2, cur: stdOf(nodes.length, sum, sum2), vmList, onNode,
    vmMem: Float64Array.from(vmList, (v) => v.memBytes),
    vmCpu: Float64Array.from(vmList, (v) => v.cpu),
    vmVcpus: Float64Array.from(vmList, (v) => v.vcpus),
    vmCost: Float64Array.from(costs, costMs),
    vmCostTo,
    costs,
    freeMem: Float64Array.from(nodes, (n) => n.memTotalBytes - n.memUsedBytes),
    freeVcpu: Float64Array.from(nodes, (n) => (n.vcpusAllocated === undefined ? Infinity : n.vcpusTotal - n.vcpusAllocated)),
    halfInvMem: Float64Array.from(nodes, (n) => (n.memTotalBytes > 0 ? w.memory / n.memTotalBytes : 0)),
    halfInvCpu: Float64Array.from(nodes, (n) => (n.vcpusTotal > 0 ? w.cpu / n.vcpusTotal : 0)),
    invAlloc: Float64Array.from(nodes, (n) => (n.vcpusTotal > 0 && n.vcpusAllocated !== undefined ? w.vcpus / n.vcpusTotal : 0)),
    top: [],
    bottom: [],
  };
}

/** A cost as the search weighs it: predicted ms (at least 1), Infinity when the move does not converge (even throttled). */
function costMs(c: MoveCost): number {
  return finishes(c) ? Math.max(1, c.ms) : Infinity;
}

/** `vm.costTo` by node index (NaN where a target has none), or undefined without one. */
function costRow(vm: PlanVm, idx: ReadonlyMap<string, number>, n: number): Float64Array | undefined {
  if (!vm.costTo || vm.costTo.size === 0) return undefined;
  const row = new Float64Array(n).fill(NaN);
  for (const [id, c] of vm.costTo) {
    const t = idx.get(id);
    if (t !== undefined) row[t] = costMs(c);
  }
  return row;
}

/** The model's figures for moving VM `v` of the working set to node index `t`. */
function costFor(st: RebalanceState, v: number, t: number): MoveCost {
  return st.vmList[v].costTo?.get(st.nodes[t].id) ?? st.costs[v];
}

/** Fills `top` (sources: most loaded with movable VMs) and `bottom` (targets: least loaded), K each, by one linear scan. */
function pickExtremes(st: RebalanceState, K: number): void {
  const { load, onNode, top, bottom } = st;
  top.length = 0;
  bottom.length = 0;
  for (let i = 0; i < load.length; i++) {
    const li = load[i];
    if (onNode[i].length > 0 && (top.length < K || li > load[top[top.length - 1]])) {
      let j = top.length < K ? top.length : K - 1;
      while (j > 0 && load[top[j - 1]] < li) { top[j] = top[j - 1]; j--; }
      top[j] = i;
    }
    if (bottom.length < K || li < load[bottom[bottom.length - 1]]) {
      let j = bottom.length < K ? bottom.length : K - 1;
      while (j > 0 && load[bottom[j - 1]] > li) { bottom[j] = bottom[j - 1]; j--; }
      bottom[j] = i;
    }
  }
}

/** The move between the extremes that cuts the imbalance most per predicted ms (the target's own cost when known), if any improves it. */
function bestMove(st: RebalanceState): MoveChoice | undefined {
  const { load, onNode, top, bottom, freeMem, freeVcpu, halfInvMem, halfInvCpu, invAlloc, vmMem, vmCpu, vmVcpus, vmCost, vmCostTo, sum, sum2, cur } = st;
  const N = load.length;
  let bestScore = -1;
  let best: MoveChoice | undefined;
  let improving = 0;
  for (let si = 0; si < top.length; si++) {
    const s = top[si];
    const list = onNode[s];
    const ls = load[s];
    const hms = halfInvMem[s], hcs = halfInvCpu[s], has = invAlloc[s];
    for (let ti = 0; ti < bottom.length; ti++) {
      const t = bottom[ti];
      const lt = load[t];
      if (t === s || lt >= ls) continue;
      const free = freeMem[t], freeCpu = freeVcpu[t];
      const hmt = halfInvMem[t], hct = halfInvCpu[t], hat = invAlloc[t];
      const base2 = sum2 - ls * ls - lt * lt;
      for (let k = 0; k < list.length; k++) {
        const v = list[k];
        const mem = vmMem[v];
        if (free < mem || freeCpu < vmVcpus[v]) continue;
        const own = vmCostTo[v]?.[t];
        const cost = own === undefined || Number.isNaN(own) ? vmCost[v] : own;
        if (cost === Infinity) continue; // predicted not to converge to this target
        const ds = mem * hms + vmCpu[v] * hcs + vmVcpus[v] * has;
        const dt = mem * hmt + vmCpu[v] * hct + vmVcpus[v] * hat;
        const a = ls - ds, b = lt + dt;
        const gain = cur - stdOf(N, sum - ds + dt, base2 + a * a + b * b);
        if (gain <= MIN_GAIN) continue;
        improving++;
        const score = gain / cost;
        if (score > bestScore) { bestScore = score; best = { s, t, k, ds, dt, gain, improving: 0 }; }
      }
    }
  }
  if (best) best.improving = improving;
  return best;
}

/** Applies a move to the working set (loads, free capacity, node copies) and returns the VM's index. */
function applyMove(st: RebalanceState, m: MoveChoice): number {
  const { s: bs, t: bt, k: bk, ds: bds, dt: bdt } = m;
  const { load, freeMem, freeVcpu, nodes } = st;
  const v = st.onNode[bs][bk];
  const vm = st.vmList[v];
  st.sum2 = st.sum2 - load[bs] ** 2 - load[bt] ** 2 + (load[bs] - bds) ** 2 + (load[bt] + bdt) ** 2;
  st.sum = st.sum - bds + bdt;
  load[bs] -= bds;
  load[bt] += bdt;
  freeMem[bs] += vm.memBytes;
  freeMem[bt] -= vm.memBytes;
  freeVcpu[bs] += vm.vcpus;
  freeVcpu[bt] -= vm.vcpus;
  nodes[bs].memUsedBytes -= vm.memBytes;
  nodes[bs].cpuUsed -= vm.cpu;
  nodes[bt].memUsedBytes += vm.memBytes;
  nodes[bt].cpuUsed += vm.cpu;
  if (nodes[bs].vcpusAllocated !== undefined) nodes[bs].vcpusAllocated! -= vm.vcpus;
  if (nodes[bt].vcpusAllocated !== undefined) nodes[bt].vcpusAllocated! += vm.vcpus;
  st.onNode[bs].splice(bk, 1); // at most one move per VM per plan
  st.cur = stdOf(load.length, st.sum, st.sum2);
  return v;
}

/** Plans moves that bring the imbalance under the aggressiveness threshold. */
export function planRebalance(nodesIn: PlanNode[], vmsIn: PlanVm[], opts: RebalanceOptions = {}): RebalancePlan {
  const aggressiveness = opts.aggressiveness ?? 3;
  const threshold = thresholdOf(aggressiveness);
  const target = threshold / 2;
  const bw = opts.bandwidthBytesPerSec ?? DEFAULT_LINK_BYTES_PER_SEC;
  const maxMoves = opts.maxMoves ?? Infinity;
  const K = opts.candidates ?? 4;

  const skipped: string[] = [];
  const st = rebalanceState(nodesIn, vmsIn, bw, normaliseWeights(opts.weights), skipped);
  const before = st.cur;
  const plan: RebalancePlan = {
    aggressiveness, threshold, target, imbalanceBefore: before, imbalanceAfter: before, moves: [],
    predictedBytes: 0, predictedMs: 0, skippedNotConverging: skipped, stop: 'below-threshold',
  };
  if (!Number.isFinite(threshold)) { plan.stop = 'disabled'; return plan; }
  if (before <= (opts.continuing ? target : threshold)) return plan;

  while (st.cur > target) {
    if (plan.moves.length >= maxMoves) { plan.stop = 'max-moves'; break; }
    pickExtremes(st, K);
    const m = bestMove(st);
    if (!m) { plan.stop = 'no-improving-move'; break; }
    const ls = st.load[m.s], lt = st.load[m.t], cur = st.cur;
    const v = applyMove(st, m);
    const vm = st.vmList[v];
    const c = costFor(st, v, m.t);
    const why = `${st.nodes[m.s].id} load ${ls.toFixed(3)} -> ${st.nodes[m.t].id} ${lt.toFixed(3)}: imbalance ${cur.toFixed(3)} -> ${st.cur.toFixed(3)}; `
      + `the largest cut per predicted second (${(m.gain / (Math.max(1, c.ms) / 1000)).toFixed(4)}/s) of ${m.improving} improving move(s); ${c.converges ? 'converges' : 'converges once throttled'} in ${c.downtimeMs.toFixed(1)} ms downtime`;
    plan.moves.push({
      vm: vm.name, from: st.nodes[m.s].id, to: st.nodes[m.t].id, memBytes: vm.memBytes,
      predictedBytes: c.bytes, predictedMs: c.ms, predictedDowntimeMs: c.downtimeMs, converges: c.converges, imbalanceAfter: st.cur, why,
    });
    plan.predictedBytes += c.bytes;
    plan.predictedMs += c.ms;
  }
  if (st.cur <= target) plan.stop = 'balanced';
  plan.imbalanceAfter = st.cur;
  return plan;
}

function vcpusFit(n: PlanNode, vcpus: number): boolean {
  return n.vcpusAllocated === undefined || n.vcpusTotal - n.vcpusAllocated >= vcpus;
}

/** Picks a node for a new VM: the schedulable node with room whose load ends lowest. */
export function placeVm(nodes: PlanNode[], vm: { memBytes: number; vcpus: number }): PlanNode | undefined {
  let best: PlanNode | undefined;
  let bestLoad = Infinity;
  for (const n of nodes) {
    if (!n.schedulable || n.memTotalBytes - n.memUsedBytes < vm.memBytes || !vcpusFit(n, vm.vcpus)) continue;
    const l = (n.memUsedBytes + vm.memBytes) / n.memTotalBytes + (n.vcpusTotal > 0 ? n.cpuUsed / n.vcpusTotal : 0);
    if (l < bestLoad) { bestLoad = l; best = n; }
  }
  return best;
}

/** Evacuation plan of a node: a target for each of its VMs (largest first), or why none fits. */
export function planEvacuation(nodesIn: PlanNode[], vms: PlanVm[], nodeId: string): { moves: PlannedMove[]; unplaced: { vm: string; reason: string }[] } {
  const nodes = nodesIn.filter((n) => n.id !== nodeId).map((n) => ({ ...n }));
  const moves: PlannedMove[] = [];
  const unplaced: { vm: string; reason: string }[] = [];
  const mine = vms.filter((v) => v.node === nodeId).sort((a, b) => b.memBytes - a.memBytes || a.name.localeCompare(b.name));
  for (const vm of mine) {
    const t = placeVm(nodes, vm);
    if (!t) {
      unplaced.push({ vm: vm.name, reason: nodes.some((n) => n.schedulable) ? `no schedulable node has ${vm.memBytes} bytes and ${vm.vcpus} vCPU(s) free` : 'no other schedulable node' });
      continue;
    }
    t.memUsedBytes += vm.memBytes;
    t.cpuUsed += vm.cpu;
    if (t.vcpusAllocated !== undefined) t.vcpusAllocated += vm.vcpus;
    const c = vm.costTo?.get(t.id) ?? moveCostOf(vm);
    moves.push({
      vm: vm.name, from: nodeId, to: t.id, memBytes: vm.memBytes, predictedBytes: c.bytes, predictedMs: c.ms, predictedDowntimeMs: c.downtimeMs,
      converges: c.converges, imbalanceAfter: imbalance(nodes), why: `evacuating ${nodeId}: ${t.id} has room and ends least loaded`,
    });
  }
  return { moves, unplaced };
}
