/**
 * Metrics of a scheduler replica, recorded into the process registry of lib/metrics.ts.
 *
 * | metric | type | labels | what |
 * |---|---|---|---|
 * | drover_scheduler_leader | gauge | – | 1 while this replica leads |
 * | drover_scheduler_elections_won_total | counter | – | times this replica became leader |
 * | drover_scheduler_imbalance / drover_scheduler_imbalance_threshold | gauge | – | load imbalance and the aggressiveness threshold |
 * | drover_scheduler_moves_planned_total | counter | reason=rebalance\|drain | jobs the scheduler created |
 * | drover_scheduler_moves_done_total | counter | reason | those jobs seen finished |
 * | drover_cluster_vms | gauge | state | VMs in etcd by state (leader only) |
 * | drover_vms_lost_total | counter | – | VMs this leader marked lost (their live node stopped reporting them) |
 * | drover_cluster_nodes | gauge | state | nodes by state (leader only) |
 * | drover_node_draining | gauge | node | 1 while a node drains |
 * | drover_drain_remaining_vms | gauge | node | VMs still on a draining node |
 * | drover_drain_inflight_jobs | gauge | node | evacuation jobs running from it |
 * | drover_drain_stuck_vms | gauge | node | VMs that cannot be moved now (see `node list`) |
 * | drover_drain_progress_ratio | gauge | node | 1 - remaining / VMs when the drain was first seen |
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { registry } from '../../lib/metrics';
import type { ClusterSnapshot } from '../../cluster/etcd';

/** Metrics of a scheduler replica. */
export class SchedulerMetrics {
  readonly electionsWon: Counter<string>;
  readonly imbalance: Gauge<string>;
  readonly threshold: Gauge<string>;
  readonly planned: Counter<'reason'>;
  readonly done: Counter<'reason'>;
  readonly vms: Gauge<'state'>;
  readonly vmsLost: Counter<string>;
  readonly nodes: Gauge<'state'>;
  readonly draining: Gauge<'node'>;
  readonly drainRemaining: Gauge<'node'>;
  readonly drainJobs: Gauge<'node'>;
  readonly drainStuck: Gauge<'node'>;
  readonly drainProgress: Gauge<'node'>;
  private readonly schedulers = new Set<{ isLeader(): boolean }>();
  private readonly moves = new Map<string, string>();
  private readonly drainStart = new Map<string, number>();

  constructor(reg: Registry) {
    const { schedulers } = this; // read by the gauge's collect(), where `this` is the gauge
    const registers = [reg];
    new Gauge({
      name: 'drover_scheduler_leader', help: '1 while this scheduler replica is the leader.', registers,
      collect() { this.set([...schedulers].some((s) => s.isLeader()) ? 1 : 0); },
    });
    this.electionsWon = new Counter({ name: 'drover_scheduler_elections_won_total', help: 'Times this replica became the leader.', registers });
    this.imbalance = new Gauge({ name: 'drover_scheduler_imbalance', help: 'Load imbalance across ready nodes (planner metric).', registers });
    this.threshold = new Gauge({ name: 'drover_scheduler_imbalance_threshold', help: 'Imbalance above which the scheduler rebalances (from aggressiveness).', registers });
    this.planned = new Counter({ name: 'drover_scheduler_moves_planned_total', help: 'Migration jobs the scheduler created.', labelNames: ['reason'], registers });
    this.done = new Counter({ name: 'drover_scheduler_moves_done_total', help: 'Jobs the scheduler created that have finished.', labelNames: ['reason'], registers });
    this.vms = new Gauge({ name: 'drover_cluster_vms', help: 'VMs in the cluster by state (leader only).', labelNames: ['state'], registers });
    this.vmsLost = new Counter({ name: 'drover_vms_lost_total', help: 'VMs marked lost: their node is alive but has not reported them for the grace period.', registers });
    this.nodes = new Gauge({ name: 'drover_cluster_nodes', help: 'Nodes by state (leader only).', labelNames: ['state'], registers });
    this.draining = new Gauge({ name: 'drover_node_draining', help: '1 while the node drains.', labelNames: ['node'], registers });
    this.drainRemaining = new Gauge({ name: 'drover_drain_remaining_vms', help: 'VMs still on a draining node.', labelNames: ['node'], registers });
    this.drainJobs = new Gauge({ name: 'drover_drain_inflight_jobs', help: 'Evacuation jobs running from a draining node.', labelNames: ['node'], registers });
    this.drainStuck = new Gauge({ name: 'drover_drain_stuck_vms', help: 'VMs of a draining node that cannot be moved now.', labelNames: ['node'], registers });
    this.drainProgress = new Gauge({ name: 'drover_drain_progress_ratio', help: 'Drain progress: 1 - remaining / VMs when the drain was first seen.', labelNames: ['node'], registers });
  }

  /** Reports leadership at scrape time. */
  track(s: { isLeader(): boolean }): void { this.schedulers.add(s); }

  /** This replica became the leader. */
  elected(): void { this.electionsWon.inc(); }

  /** A job the scheduler created (`reason` rebalance|drain). */
  movePlanned(reason: string, jobId: string): void {
    this.planned.inc({ reason });
    this.moves.set(jobId, reason);
  }

  /** The leader marked a VM lost. */
  vmLost(): void { this.vmsLost.inc(); }

  /** One hook per leader round: imbalance, cluster counts, drains, and moves seen finished. */
  observe(snap: ClusterSnapshot, imbalance: number, threshold: number): void {
    this.imbalance.set(imbalance);
    this.threshold.set(threshold);
    for (const [id, reason] of this.moves) {
      if (!snap.jobs.has(id)) { this.done.inc({ reason }); this.moves.delete(id); }
    }
    this.vms.reset();
    for (const s of ['pending', 'creating', 'running', 'migrating', 'unknown', 'failed']) this.vms.set({ state: s }, 0);
    for (const v of snap.vms.values()) this.vms.inc({ state: v.value.state });
    this.nodes.reset();
    for (const s of ['ready', 'cordoned', 'draining', 'drained', 'unknown']) this.nodes.set({ state: s }, 0);
    for (const n of snap.nodes.values()) this.nodes.inc({ state: n.state });
    for (const g of [this.draining, this.drainRemaining, this.drainJobs, this.drainStuck, this.drainProgress]) g.reset();
    for (const n of snap.nodes.values()) {
      const mark = n.mark?.state;
      if (mark !== 'draining' && mark !== 'drained') { this.drainStart.delete(n.id); continue; }
      const remaining = [...snap.vms.values()].filter((v) => v.value.node === n.id).length;
      const jobs = [...snap.jobs.values()].filter((j) => j.value.from === n.id).length;
      const total = Math.max(this.drainStart.get(n.id) ?? 0, remaining);
      this.drainStart.set(n.id, total);
      this.draining.set({ node: n.id }, mark === 'draining' ? 1 : 0);
      this.drainRemaining.set({ node: n.id }, remaining);
      this.drainJobs.set({ node: n.id }, jobs);
      this.drainStuck.set({ node: n.id }, n.mark?.note ? n.mark.note.split('; ').length : 0);
      this.drainProgress.set({ node: n.id }, total > 0 ? 1 - remaining / total : 1);
    }
  }
}

let scheduler: SchedulerMetrics | undefined;
/** The scheduler metrics of this process. */
export function schedulerMetrics(): SchedulerMetrics { return (scheduler ??= new SchedulerMetrics(registry)); }
