/**
 * Every Prometheus metric Drover exports, in one module (prom-client). One registry per process
 * (`registry`); each service defines its group lazily on first use (`agentMetrics()`,
 * `migratorMetrics()`, `schedulerMetrics()`) and calls small recording functions, so the hooks in
 * the services are one-liners. `startMetricsServer(listen)` serves `/metrics` with node:http.
 *
 * Naming follows Prometheus conventions: base units (`_seconds`, `_bytes`), counters end in
 * `_total`, ratios in `_ratio`. Labels are bounded: no VM names or migration ids on histograms or
 * counters; the per-migration gauges carry `migration`/`vm` only while the migration is in flight
 * (the series is removed when it ends), so their cardinality is bounded by the concurrency limits.
 *
 * | metric | type | labels | what |
 * |---|---|---|---|
 * | **node agent** (source side of migrations; `node` = this agent) | | | |
 * | drover_migration_downtime_seconds | histogram | – | source pause → target resume; buckets 0.5 ms .. 5 s |
 * | drover_migration_duration_seconds | histogram | – | start → target resume; buckets 0.25 s .. 10 min |
 * | drover_migration_rounds | histogram | – | pre-copy rounds per successful migration |
 * | drover_migration_transferred_bytes | histogram | – | bytes on the wire per successful migration |
 * | drover_migration_sent_bytes_total | counter | kind=pages\|zero_pages\|device_state | page payload, RAM covered by zero-page flags (4 KiB each, not on the wire), vCPU/device state |
 * | drover_migration_wire_bytes_total | counter | – | encoded frames on the wire (every migration, also failed ones) |
 * | drover_migrations_started_total | counter | – | MigrateVm requests |
 * | drover_migrations_finished_total | counter | result=succeeded\|failed\|cancelled, reason | reason: the stop reason when succeeded (converged, stalled, max_rounds, max_bytes, timeout, forced), else the lower-case gRPC code (or `other`) |
 * | drover_migrations_inflight | gauge | node, direction=outbound\|inbound | migrations running now |
 * | drover_migration_remaining_bytes | gauge | node, migration, vm | dirty data not yet sent, per in-flight migration |
 * | drover_migration_dirty_rate_bytes_per_second | gauge | node, migration, vm | guest dirty rate, per in-flight migration |
 * | drover_migration_transfer_rate_bytes_per_second | gauge | node, migration, vm | send rate, per in-flight migration |
 * | drover_migration_round | gauge | node, migration, vm | current pre-copy round, per in-flight migration |
 * | drover_node_memory_bytes / drover_node_memory_used_bytes | gauge | node | memory capacity / reserved by VMs |
 * | drover_node_vcpus / drover_node_vcpus_used | gauge | node | vCPU capacity / reserved |
 * | drover_node_load_ratio | gauge | node | max(memory used/total, vCPUs used/total) |
 * | drover_node_vms | gauge | node | VMs hosted (incoming copies not counted) |
 * | drover_grpc_server_handled_total | counter | service, method, type, code | RPCs completed, by gRPC status code name |
 * | drover_grpc_server_handling_seconds | histogram | service, method, type, code | RPC latency (streams: until the status) |
 * | **migrator** | | | |
 * | drover_migrator_jobs_started_total | counter | trigger=manual\|rebalance\|drain | job attempts started |
 * | drover_migrator_jobs_finished_total | counter | result, trigger | jobs finished (moved to the history) |
 * | drover_migrator_job_retries_total | counter | trigger | transient failures retried with backoff |
 * | drover_migrator_jobs_inflight | gauge | – | jobs this replica drives |
 * | drover_migrator_admitted_jobs | gauge | – | jobs admitted cluster-wide (the admission window) |
 * | drover_migrator_limit | gauge | limit=concurrent\|outbound_per_node\|inbound_per_node | configured limits |
 * | drover_migrator_commit_seconds | histogram | – | control-plane share of downtime: awaiting-commit → commit acknowledged |
 * | **scheduler** | | | |
 * | drover_scheduler_leader | gauge | – | 1 while this replica leads |
 * | drover_scheduler_elections_won_total | counter | – | times this replica became leader |
 * | drover_scheduler_imbalance / drover_scheduler_imbalance_threshold | gauge | – | load imbalance and the aggressiveness threshold |
 * | drover_scheduler_moves_planned_total | counter | reason=rebalance\|drain | jobs the scheduler created |
 * | drover_scheduler_moves_done_total | counter | reason | those jobs seen finished |
 * | drover_cluster_vms | gauge | state | VMs in etcd by state (leader only) |
 * | drover_cluster_nodes | gauge | state | nodes by state (leader only) |
 * | drover_node_draining | gauge | node | 1 while a node drains |
 * | drover_drain_remaining_vms | gauge | node | VMs still on a draining node |
 * | drover_drain_inflight_jobs | gauge | node | evacuation jobs running from it |
 * | drover_drain_stuck_vms | gauge | node | VMs that cannot be moved now (see `node list`) |
 * | drover_drain_progress_ratio | gauge | node | 1 - remaining / VMs when the drain was first seen |
 * | **control plane (both)** | | | |
 * | drover_etcd_lease_up | gauge | service | 1 while the service holds its etcd lease (migrator: claim lease; scheduler: the leader's election lease) |
 * | drover_etcd_lease_lost_total | counter | service | leases / election campaigns lost |
 * | drover_control_loop_errors_total | counter | service | scan/round failures (etcd unreachable, ...) |
 * | process_*, nodejs_* | | | prom-client's default process metrics |
 */
import * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { MigrationEventInfo, NodeInfo } from '../services/node-agent/client/agent-codec';
import type { MigrationResult } from '../migration/types';
import type { ClusterSnapshot } from '../cluster/etcd';
import type { ClusterConfig, Admission, JobRecord } from '../cluster/keyspace';

/** The process registry every service of this process records into. */
export const registry = new Registry();

/** Downtime buckets: 0.5 ms .. 5 s. */
export const DOWNTIME_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Total migration time buckets: 0.25 s .. 10 min. */
export const DURATION_BUCKETS = [0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600];
/** Rounds per migration (the engine stops at 30). */
export const ROUND_BUCKETS = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30];
/** Bytes per migration: 1 MiB .. 64 GiB in powers of 4. */
export const BYTES_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536].map((m) => m * 2 ** 20);
/** RPC latency buckets: 0.5 ms .. 10 min (MigrateVm streams last the whole migration). */
export const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600];

const STOP_REASONS = new Set(['converged', 'stalled', 'max_rounds', 'max_bytes', 'timeout', 'forced']);
const GRPC_CODES = new Set(Object.keys(grpc.status).filter((k) => Number.isNaN(Number(k))).map((k) => k.toLowerCase()));

/** The bounded `reason` label of a finished migration. */
export function finishReason(r: Pick<MigrationResult, 'outcome' | 'stopReason' | 'errorCode'>): string {
  if (r.outcome === 'succeeded') {
    const s = (r.stopReason || 'converged').replace(/-/g, '_');
    return STOP_REASONS.has(s) ? s : 'other';
  }
  const c = (r.errorCode || (r.outcome === 'cancelled' ? 'CANCELLED' : 'UNKNOWN')).toLowerCase();
  return GRPC_CODES.has(c) ? c : 'other';
}

// ---------------------------------------------------------------------------- node agent

/** Something that reports a node's state at scrape time (the agent server). */
export interface NodeSource {
  nodeInfo(): NodeInfo;
  readonly incomingCount: number;
}

interface Inflight { node: string; vm: string }

/** Metrics of a node agent. */
export class AgentMetrics {
  readonly downtime: Histogram<string>;
  readonly duration: Histogram<string>;
  readonly rounds: Histogram<string>;
  readonly transferred: Histogram<string>;
  readonly sentBytes: Counter<'kind'>;
  readonly wireBytes: Counter<string>;
  readonly started: Counter<string>;
  readonly finished: Counter<'result' | 'reason'>;
  readonly inflight: Gauge<'node' | 'direction'>;
  readonly remaining: Gauge<'node' | 'migration' | 'vm'>;
  readonly dirtyRate: Gauge<'node' | 'migration' | 'vm'>;
  readonly rate: Gauge<'node' | 'migration' | 'vm'>;
  readonly round: Gauge<'node' | 'migration' | 'vm'>;
  readonly blackout: Histogram;
  readonly throttled: Counter;
  readonly grpcHandled: Counter<'service' | 'method' | 'type' | 'code'>;
  readonly grpcSeconds: Histogram<'service' | 'method' | 'type' | 'code'>;
  private readonly nodes = new Set<NodeSource>();
  private readonly running = new Map<string, Inflight>();

  constructor(reg: Registry) {
    const self = this;
    const registers = [reg];
    this.downtime = new Histogram({ name: 'drover_migration_downtime_seconds', help: 'Migration downtime: source pause to target resume.', buckets: DOWNTIME_BUCKETS, registers });
    this.duration = new Histogram({ name: 'drover_migration_duration_seconds', help: 'Total migration time: start to target resume.', buckets: DURATION_BUCKETS, registers });
    this.rounds = new Histogram({ name: 'drover_migration_rounds', help: 'Pre-copy rounds per successful migration.', buckets: ROUND_BUCKETS, registers });
    this.blackout = new Histogram({ name: 'drover_migration_guest_blackout_seconds', help: "Guest-observed blackout: the source's last heartbeat to the target's first (hypervisors that measure it: qemu).", buckets: DOWNTIME_BUCKETS, registers });
    this.throttled = new Counter({ name: 'drover_migrations_throttled_total', help: 'Successful migrations whose pre-copy converged only with the guest throttled (auto-converge).', registers });
    this.transferred = new Histogram({ name: 'drover_migration_transferred_bytes', help: 'Bytes on the wire per successful migration.', buckets: BYTES_BUCKETS, registers });
    this.sentBytes = new Counter({ name: 'drover_migration_sent_bytes_total', help: 'Migration data by kind: pages (payload), zero_pages (guest RAM covered by zero-page flags, not on the wire), device_state.', labelNames: ['kind'], registers });
    this.wireBytes = new Counter({ name: 'drover_migration_wire_bytes_total', help: 'Encoded migration frames sent on the wire.', registers });
    this.started = new Counter({ name: 'drover_migrations_started_total', help: 'Migrations started (MigrateVm requests).', registers });
    this.finished = new Counter({ name: 'drover_migrations_finished_total', help: 'Migrations finished, by result and bounded reason (stop reason or gRPC code).', labelNames: ['result', 'reason'], registers });
    this.inflight = new Gauge({
      name: 'drover_migrations_inflight', help: 'Migrations running on this node, by direction.', labelNames: ['node', 'direction'], registers,
      collect() {
        this.reset();
        for (const n of self.nodes) {
          const id = n.nodeInfo().nodeId;
          this.set({ node: id, direction: 'inbound' }, n.incomingCount);
          this.set({ node: id, direction: 'outbound' }, [...self.running.values()].filter((r) => r.node === id).length);
        }
      },
    });
    const perMigration = ['node', 'migration', 'vm'] as const;
    this.remaining = new Gauge({ name: 'drover_migration_remaining_bytes', help: 'Dirty data not yet sent, per in-flight migration.', labelNames: perMigration, registers });
    this.dirtyRate = new Gauge({ name: 'drover_migration_dirty_rate_bytes_per_second', help: 'Guest dirty rate, per in-flight migration.', labelNames: perMigration, registers });
    this.rate = new Gauge({ name: 'drover_migration_transfer_rate_bytes_per_second', help: 'Send rate over the last interval, per in-flight migration.', labelNames: perMigration, registers });
    this.round = new Gauge({ name: 'drover_migration_round', help: 'Current pre-copy round, per in-flight migration.', labelNames: perMigration, registers });
    const nodeGauge = (name: string, help: string, f: (i: NodeInfo) => number) => new Gauge({
      name, help, labelNames: ['node'], registers,
      collect() {
        this.reset();
        for (const n of self.nodes) { const i = n.nodeInfo(); this.set({ node: i.nodeId }, f(i)); }
      },
    });
    nodeGauge('drover_node_memory_bytes', 'Memory capacity the node offers to VMs.', (i) => i.memTotalBytes);
    nodeGauge('drover_node_memory_used_bytes', 'Memory reserved by VMs (hosted and incoming).', (i) => i.memUsedBytes);
    nodeGauge('drover_node_vcpus', 'vCPU capacity the node offers.', (i) => i.vcpusTotal);
    nodeGauge('drover_node_vcpus_used', 'vCPUs reserved by VMs.', (i) => i.vcpusUsed);
    nodeGauge('drover_node_load_ratio', 'Node load: max(memory used/total, vCPUs used/total).', (i) =>
      Math.max(i.memTotalBytes ? i.memUsedBytes / i.memTotalBytes : 0, i.vcpusTotal ? i.vcpusUsed / i.vcpusTotal : 0));
    nodeGauge('drover_node_vms', 'VMs hosted on the node.', (i) => i.vms.length);
    const rpc = ['service', 'method', 'type', 'code'] as const;
    this.grpcHandled = new Counter({ name: 'drover_grpc_server_handled_total', help: 'RPCs completed, by service, method, type and status code.', labelNames: rpc, registers });
    this.grpcSeconds = new Histogram({ name: 'drover_grpc_server_handling_seconds', help: 'RPC latency until the status is sent.', labelNames: rpc, buckets: RPC_BUCKETS, registers });
  }

  /** Reports node state (capacity, load, VMs, inbound migrations) at scrape time. */
  bindNode(n: NodeSource): void { this.nodes.add(n); }
  unbindNode(n: NodeSource): void { this.nodes.delete(n); }

  /** One hook for the MigrateVm stream: every event it sends (progress, then the final one with `result`). */
  migrationEvent(node: string, vm: string, id: string, ev: MigrationEventInfo): void {
    const labels = { node, migration: id, vm };
    if (!this.running.has(id)) {
      this.started.inc();
      this.running.set(id, { node, vm });
    }
    if (ev.result) return this.migrationFinished(ev.result, labels);
    this.remaining.set(labels, ev.remainingBytes);
    this.dirtyRate.set(labels, ev.dirtyRateBytesPerSec);
    this.rate.set(labels, ev.rateBytesPerSec);
    this.round.set(labels, ev.round);
  }

  private migrationFinished(r: MigrationResult, labels: { node: string; migration: string; vm: string }): void {
    this.running.delete(labels.migration);
    for (const g of [this.remaining, this.dirtyRate, this.rate, this.round]) g.remove(labels);
    this.finished.inc({ result: r.outcome, reason: finishReason(r) });
    this.wireBytes.inc(r.bytesSent || 0);
    this.sentBytes.inc({ kind: 'pages' }, r.pageBytes || 0);
    this.sentBytes.inc({ kind: 'zero_pages' }, (r.zeroPages || 0) * 4096);
    this.sentBytes.inc({ kind: 'device_state' }, r.deviceBytes || 0);
    if (r.outcome !== 'succeeded') return;
    this.downtime.observe(r.downtimeMs / 1000);
    this.duration.observe(r.totalMs / 1000);
    this.rounds.observe(r.rounds);
    this.transferred.observe(r.bytesSent);
    if (typeof r.guestBlackoutMs === 'number') this.blackout.observe(r.guestBlackoutMs / 1000);
    if (r.throttlePercent) this.throttled.inc();
  }

  /** Migration ids in flight (source side) — for tests. */
  inflightIds(): string[] { return [...this.running.keys()]; }
}

/**
 * A grpc-js server interceptor recording every RPC's count and latency by service, method, type
 * and status code: `new grpc.Server({ interceptors: [grpcMetricsInterceptor()] })`.
 */
export function grpcMetricsInterceptor(m: () => AgentMetrics = agentMetrics): grpc.ServerInterceptor {
  return (desc, call) => {
    const t0 = performance.now();
    const [, service = 'unknown', method = 'unknown'] = /^\/([^/]+)\/([^/]+)$/.exec(desc.path) ?? [];
    const type = desc.requestStream ? (desc.responseStream ? 'bidi_stream' : 'client_stream') : desc.responseStream ? 'server_stream' : 'unary';
    let done = false;
    const record = (code: number) => {
      if (done) return;
      done = true;
      const labels = { service, method, type, code: grpc.status[code] ?? 'UNKNOWN' };
      m().grpcHandled.inc(labels);
      m().grpcSeconds.observe(labels, (performance.now() - t0) / 1000);
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => record(grpc.status.CANCELLED) }),
      sendStatus: (status, next) => { record(status.code); next(status); },
    });
  };
}

// ---------------------------------------------------------------------------- migrator

/** Metrics of a migrator replica. */
export class MigratorMetrics {
  readonly jobsStarted: Counter<'trigger'>;
  readonly jobsFinished: Counter<'result' | 'trigger'>;
  readonly retries: Counter<'trigger'>;
  readonly admitted: Gauge<string>;
  readonly limit: Gauge<'limit'>;
  readonly commit: Histogram<string>;
  private readonly migrators = new Set<{ activeJobs(): string[] }>();

  constructor(reg: Registry) {
    const self = this;
    const registers = [reg];
    this.jobsStarted = new Counter({ name: 'drover_migrator_jobs_started_total', help: 'Job attempts started, by what created the job.', labelNames: ['trigger'], registers });
    this.jobsFinished = new Counter({ name: 'drover_migrator_jobs_finished_total', help: 'Jobs finished, by result and trigger.', labelNames: ['result', 'trigger'], registers });
    this.retries = new Counter({ name: 'drover_migrator_job_retries_total', help: 'Transient job failures retried with backoff.', labelNames: ['trigger'], registers });
    new Gauge({
      name: 'drover_migrator_jobs_inflight', help: 'Jobs this replica drives now.', registers,
      collect() { this.set([...self.migrators].reduce((n, m) => n + m.activeJobs().length, 0)); },
    });
    this.admitted = new Gauge({ name: 'drover_migrator_admitted_jobs', help: 'Jobs admitted cluster-wide under the concurrency limits.', registers });
    this.limit = new Gauge({ name: 'drover_migrator_limit', help: 'Configured migration limits.', labelNames: ['limit'], registers });
    this.commit = new Histogram({ name: 'drover_migrator_commit_seconds', help: 'Control-plane share of downtime: awaiting-commit to commit acknowledged.', buckets: DOWNTIME_BUCKETS, registers });
  }

  /** Reports this migrator's in-flight jobs at scrape time. */
  track(m: { activeJobs(): string[] }): void { this.migrators.add(m); }

  /** Limits and the admission window, from each scan. */
  limits(cfg: ClusterConfig, adm: Admission): void {
    this.limit.set({ limit: 'concurrent' }, cfg.maxConcurrent);
    this.limit.set({ limit: 'outbound_per_node' }, cfg.maxOutboundPerNode);
    this.limit.set({ limit: 'inbound_per_node' }, cfg.maxInboundPerNode);
    this.admitted.set(adm.jobs.length);
  }

  jobStarted(job: Pick<JobRecord, 'reason'>): void { this.jobsStarted.inc({ trigger: job.reason || 'manual' }); }
  jobRetried(job: Pick<JobRecord, 'reason'>): void { this.retries.inc({ trigger: job.reason || 'manual' }); }
  jobFinished(job: Pick<JobRecord, 'reason' | 'result' | 'phase' | 'commitMs'>): void {
    this.jobsFinished.inc({ result: job.result || job.phase, trigger: job.reason || 'manual' });
    if (job.result === 'succeeded' && typeof job.commitMs === 'number') this.commit.observe(job.commitMs / 1000);
  }
}

// ---------------------------------------------------------------------------- scheduler

/** Metrics of a scheduler replica. */
export class SchedulerMetrics {
  readonly electionsWon: Counter<string>;
  readonly imbalance: Gauge<string>;
  readonly threshold: Gauge<string>;
  readonly planned: Counter<'reason'>;
  readonly done: Counter<'reason'>;
  readonly vms: Gauge<'state'>;
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
    const self = this;
    const registers = [reg];
    new Gauge({
      name: 'drover_scheduler_leader', help: '1 while this scheduler replica is the leader.', registers,
      collect() { this.set([...self.schedulers].some((s) => s.isLeader()) ? 1 : 0); },
    });
    this.electionsWon = new Counter({ name: 'drover_scheduler_elections_won_total', help: 'Times this replica became the leader.', registers });
    this.imbalance = new Gauge({ name: 'drover_scheduler_imbalance', help: 'Load imbalance across ready nodes (planner metric).', registers });
    this.threshold = new Gauge({ name: 'drover_scheduler_imbalance_threshold', help: 'Imbalance above which the scheduler rebalances (from aggressiveness).', registers });
    this.planned = new Counter({ name: 'drover_scheduler_moves_planned_total', help: 'Migration jobs the scheduler created.', labelNames: ['reason'], registers });
    this.done = new Counter({ name: 'drover_scheduler_moves_done_total', help: 'Jobs the scheduler created that have finished.', labelNames: ['reason'], registers });
    this.vms = new Gauge({ name: 'drover_cluster_vms', help: 'VMs in the cluster by state (leader only).', labelNames: ['state'], registers });
    this.nodes = new Gauge({ name: 'drover_cluster_nodes', help: 'Nodes by state (leader only).', labelNames: ['state'], registers });
    this.draining = new Gauge({ name: 'drover_node_draining', help: '1 while the node drains.', labelNames: ['node'], registers });
    this.drainRemaining = new Gauge({ name: 'drover_drain_remaining_vms', help: 'VMs still on a draining node.', labelNames: ['node'], registers });
    this.drainJobs = new Gauge({ name: 'drover_drain_inflight_jobs', help: 'Evacuation jobs running from a draining node.', labelNames: ['node'], registers });
    this.drainStuck = new Gauge({ name: 'drover_drain_stuck_vms', help: 'VMs of a draining node that cannot be moved now.', labelNames: ['node'], registers });
    this.drainProgress = new Gauge({ name: 'drover_drain_progress_ratio', help: 'Drain progress: 1 - remaining / VMs when the drain was first seen.', labelNames: ['node'], registers });
  }

  /** Reports leadership at scrape time. */
  track(s: { isLeader(): boolean }): void { this.schedulers.add(s); }

  elected(): void { this.electionsWon.inc(); }

  /** A job the scheduler created (`reason` rebalance|drain). */
  movePlanned(reason: string, jobId: string): void {
    this.planned.inc({ reason });
    this.moves.set(jobId, reason);
  }

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

// ---------------------------------------------------------------------------- control plane

/** Lease and loop health shared by the migrator and the scheduler. */
export class ControlPlaneMetrics {
  readonly leaseUp: Gauge<'service'>;
  readonly leaseLost: Counter<'service'>;
  readonly loopErrors: Counter<'service'>;
  constructor(reg: Registry) {
    const registers = [reg];
    this.leaseUp = new Gauge({ name: 'drover_etcd_lease_up', help: '1 while the service holds its etcd lease.', labelNames: ['service'], registers });
    this.leaseLost = new Counter({ name: 'drover_etcd_lease_lost_total', help: 'etcd leases or election campaigns lost.', labelNames: ['service'], registers });
    this.loopErrors = new Counter({ name: 'drover_control_loop_errors_total', help: 'Failed control-loop iterations (scan, round).', labelNames: ['service'], registers });
  }
  /** The service holds its lease (true) or lost it (false: also counted as lost). */
  lease(service: string, up: boolean): void {
    if (!up) this.leaseLost.inc({ service });
    this.leaseUp.set({ service }, up ? 1 : 0);
  }
  loopError(service: string): void { this.loopErrors.inc({ service }); }
}

// ---------------------------------------------------------------------------- per process

let agent: AgentMetrics | undefined;
let migrator: MigratorMetrics | undefined;
let scheduler: SchedulerMetrics | undefined;
let control: ControlPlaneMetrics | undefined;
/** The agent metrics of this process (defined on first use). */
export function agentMetrics(): AgentMetrics { return (agent ??= new AgentMetrics(registry)); }
/** The migrator metrics of this process. */
export function migratorMetrics(): MigratorMetrics { return (migrator ??= new MigratorMetrics(registry)); }
/** The scheduler metrics of this process. */
export function schedulerMetrics(): SchedulerMetrics { return (scheduler ??= new SchedulerMetrics(registry)); }
/** Lease and loop health of this process's control-plane services. */
export function controlMetrics(): ControlPlaneMetrics { return (control ??= new ControlPlaneMetrics(registry)); }

let defaults = false;

/** A registry holding every Drover metric (all groups and the default process metrics). */
export function fullRegistry(): Registry {
  const reg = new Registry();
  new AgentMetrics(reg); new MigratorMetrics(reg); new SchedulerMetrics(reg); new ControlPlaneMetrics(reg);
  collectDefaultMetrics({ register: reg });
  return reg;
}

/**
 * Every series name Drover can export (histograms expanded to `_bucket`, `_sum`, `_count`),
 * computed from the metric definitions themselves.
 */
export async function exportedMetricNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const m of await fullRegistry().getMetricsAsJSON()) {
    const type = String(m.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) names.add(m.name + s);
    else names.add(m.name);
  }
  return names;
}

/** Metric definitions (name, type, labels) for docs and tests. */
export async function metricTable(): Promise<{ name: string; type: string; labels: string[] }[]> {
  const out: { name: string; type: string; labels: string[] }[] = [];
  const reg = new Registry();
  new AgentMetrics(reg); new MigratorMetrics(reg); new SchedulerMetrics(reg); new ControlPlaneMetrics(reg);
  for (const o of reg.getMetricsAsArray()) {
    const m = o as unknown as { name: string; type: string; labelNames?: string[] };
    out.push({ name: m.name, type: String(m.type), labels: [...(m.labelNames ?? [])] });
  }
  return out;
}

/** A running /metrics endpoint. */
export interface MetricsServer {
  /** host:port it listens on. */
  address: string;
  close(): Promise<void>;
}

/** Serves `reg` (default: the process registry, with default process metrics) on http://listen/metrics. */
export function startMetricsServer(listen: string, reg: Registry = registry): Promise<MetricsServer> {
  if (reg === registry && !defaults) { defaults = true; collectDefaultMetrics({ register: registry }); }
  const m = /^(.*):([0-9]+)$/.exec(listen);
  if (!m) return Promise.reject(new Error(`metrics address "${listen}" is not HOST:PORT`));
  const host = m[1].replace(/^\[(.*)\]$/, '$1');
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405).end(); return; }
    if (url === '/metrics') {
      reg.metrics().then((body) => { res.writeHead(200, { 'Content-Type': reg.contentType }); res.end(body); },
        (err) => { res.writeHead(500, { 'Content-Type': 'text/plain' }); res.end(String((err as Error).message)); });
    } else if (url === '/healthz' || url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end(url === '/' ? 'drover metrics: /metrics\n' : 'ok\n');
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot serve metrics on ${listen}: ${e.message}`)));
    server.listen(Number(m[2]), host, () => {
      const a = server.address() as { port: number };
      server.unref();
      resolve({
        address: `${m[1]}:${a.port}`,
        close: () => new Promise<void>((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

/** Value of one series in `reg` (tests). */
export async function valueOf(reg: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const m = (await reg.getMetricsAsJSON()).find((x) => x.name === name) as MetricObjectWithValues<MetricValue<string>> | undefined;
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => String((x.labels as Record<string, unknown>)[k]) === val));
  return v?.value;
}
