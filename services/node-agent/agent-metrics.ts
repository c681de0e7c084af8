/**
 * Metrics of a node agent (the source side of migrations; `node` = this agent), recorded into the
 * process registry of lib/metrics.ts. Naming and label rules: see lib/metrics.ts.
 *
 * | metric | type | labels | what |
 * |---|---|---|---|
 * | drover_migration_downtime_seconds | histogram | – | source pause → target resume; buckets 0.5 ms .. 5 s |
 * | drover_migration_duration_seconds | histogram | – | start → target resume; buckets 0.25 s .. 10 min |
 * | drover_vm_paused_seconds | histogram | result=succeeded\|failed\|cancelled | how long the source VM was paused per migration (MigrationResult.pausedMs), also a pause that ended in a rollback; buckets 0.5 ms .. 60 s |
 * | drover_migration_rounds | histogram | – | pre-copy rounds per successful migration |
 * | drover_migrations_by_policy_total | counter | policy=precopy\|throttle\|postcopy | successful migrations by what the engine chose (MigrationResult.policy) |
 * | drover_migration_throttled_seconds | histogram | – | how long the guest ran throttled before the pause, per migration that throttled; buckets 0.5 ms .. 10 min |
 * | drover_migration_postcopy_page_wait_seconds | histogram | – | target side: each wait of a guest vCPU for a page still on the source; buckets 0.5 ms .. 5 s |
 * | drover_migration_postcopy_all_present_seconds | histogram | – | target side: the resume until every page was present, per post-copy; buckets 0.25 s .. 10 min |
 * | drover_migration_postcopy_vms_lost_total | counter | side=source\|target | VMs lost after the switch: post-copy failed, or a direct target lost a VM it had resumed (logged as "VM LOST") |
 * | drover_migration_postcopy_stalled_seconds | histogram | – | target side: each time a post-copy stream was down, until the source reconnected or the VM was given up (vCPUs touching missing pages waited that long) |
 * | drover_migration_postcopy_recoveries_total | counter | outcome=resumed\|lost | target side: post-copy streams that dropped, by how the wait for the source ended |
 * | drover_migration_postcopy_link_stalls_total | counter | – | target side: post-copy streams dropped by the stall detector (a vCPU waited on a page and the link was silent for POSTCOPY_STALL_MS) |
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
 * | drover_authz_refusals_total | counter | method, code, role | calls refused by authorization (TLS agents): the interceptor's table, the source check and the reservation token; role `none` without an identity |
 */
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { BYTES_BUCKETS, DOWNTIME_BUCKETS, DURATION_BUCKETS, ROUND_BUCKETS, RPC_BUCKETS, registry } from '../../lib/metrics';
import type { MigrationEventInfo, NodeInfo } from './client/agent-codec';
import type { MigrationResult } from '../../migration/types';

const STOP_REASONS = new Set(['converged', 'stalled', 'max_rounds', 'max_bytes', 'timeout', 'forced']);
const GRPC_CODES = new Set(Object.keys(grpc.status).filter((k) => Number.isNaN(Number(k))).map((k) => k.toLowerCase()));

/** Paused-VM buckets: the downtime's, then the long pauses of a switchover resolved from etcd (lease TTL) or a hung target. */
const PAUSED_BUCKETS = [...DOWNTIME_BUCKETS, 10, 30, 60];

/** The bounded `reason` label of a finished migration. */
export function finishReason(r: Pick<MigrationResult, 'outcome' | 'stopReason' | 'errorCode'>): string {
  if (r.outcome === 'succeeded') {
    const s = (r.stopReason || 'converged').replace(/-/g, '_');
    return STOP_REASONS.has(s) ? s : 'other';
  }
  const c = (r.errorCode || (r.outcome === 'cancelled' ? 'CANCELLED' : 'UNKNOWN')).toLowerCase();
  return GRPC_CODES.has(c) ? c : 'other';
}


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
  readonly paused: Histogram<'result'>;
  readonly throttled: Counter;
  readonly byPolicy: Counter<'policy'>;
  readonly throttledSeconds: Histogram;
  readonly pageWait: Histogram;
  readonly allPresent: Histogram;
  readonly lost: Counter<'side'>;
  readonly stalled: Histogram;
  readonly recoveries: Counter<'outcome'>;
  readonly stalls: Counter;
  readonly grpcHandled: Counter<'service' | 'method' | 'type' | 'code'>;
  readonly grpcSeconds: Histogram<'service' | 'method' | 'type' | 'code'>;
  readonly authzRefusals: Counter<'method' | 'code' | 'role'>;
  private readonly nodes = new Set<NodeSource>();
  private readonly running = new Map<string, Inflight>();

  constructor(reg: Registry) {
    const { nodes, running } = this; // read by the gauges' collect(), where `this` is the gauge
    const registers = [reg];
    this.downtime = new Histogram({ name: 'drover_migration_downtime_seconds', help: 'Migration downtime: source pause to target resume.', buckets: DOWNTIME_BUCKETS, registers });
    this.duration = new Histogram({ name: 'drover_migration_duration_seconds', help: 'Total migration time: start to target resume.', buckets: DURATION_BUCKETS, registers });
    this.rounds = new Histogram({ name: 'drover_migration_rounds', help: 'Pre-copy rounds per successful migration.', buckets: ROUND_BUCKETS, registers });
    this.paused = new Histogram({ name: 'drover_vm_paused_seconds', help: 'How long the source VM was paused per migration, a pause that ended in a rollback included.', labelNames: ['result'], buckets: PAUSED_BUCKETS, registers });
    this.blackout = new Histogram({ name: 'drover_migration_guest_blackout_seconds', help: "Guest-observed blackout: the source's last heartbeat to the target's first (hypervisors that measure it: qemu).", buckets: DOWNTIME_BUCKETS, registers });
    this.throttled = new Counter({ name: 'drover_migrations_throttled_total', help: 'Successful migrations whose pre-copy converged only with the guest throttled (auto-converge).', registers });
    this.byPolicy = new Counter({ name: 'drover_migrations_by_policy_total', help: 'Successful migrations by the policy the engine chose (precopy, throttle, postcopy).', labelNames: ['policy'], registers });
    this.throttledSeconds = new Histogram({ name: 'drover_migration_throttled_seconds', help: 'How long the guest ran throttled before the pause, per migration that throttled.', buckets: [...DOWNTIME_BUCKETS, ...DURATION_BUCKETS.filter((b) => b > 5)], registers });
    this.pageWait = new Histogram({ name: 'drover_migration_postcopy_page_wait_seconds', help: 'Target side: each wait of a guest vCPU for a page still on the source (post-copy).', buckets: DOWNTIME_BUCKETS, registers });
    this.allPresent = new Histogram({ name: 'drover_migration_postcopy_all_present_seconds', help: 'Target side: the resume until every page was present, per post-copy.', buckets: DURATION_BUCKETS, registers });
    this.stalled = new Histogram({ name: 'drover_migration_postcopy_stalled_seconds', help: 'Target side: each time a post-copy stream was down, until the source reconnected or the VM was given up.', buckets: DURATION_BUCKETS, registers });
    this.recoveries = new Counter({ name: 'drover_migration_postcopy_recoveries_total', help: 'Target side: post-copy streams that dropped, by how the wait for the source ended (resumed, lost).', labelNames: ['outcome'], registers });
    this.stalls = new Counter({ name: 'drover_migration_postcopy_link_stalls_total', help: 'Target side: post-copy streams dropped because the link went silent while a vCPU waited for a page.', registers });
    this.lost = new Counter({ name: 'drover_migration_postcopy_vms_lost_total', help: 'VMs lost after the switch (post-copy failed, or the target lost a VM it had resumed), by the side that reports it.', labelNames: ['side'], registers });
    this.transferred = new Histogram({ name: 'drover_migration_transferred_bytes', help: 'Bytes on the wire per successful migration.', buckets: BYTES_BUCKETS, registers });
    this.sentBytes = new Counter({ name: 'drover_migration_sent_bytes_total', help: 'Migration data by kind: pages (payload), zero_pages (guest RAM covered by zero-page flags, not on the wire), device_state.', labelNames: ['kind'], registers });
    this.wireBytes = new Counter({ name: 'drover_migration_wire_bytes_total', help: 'Encoded migration frames sent on the wire.', registers });
    this.started = new Counter({ name: 'drover_migrations_started_total', help: 'Migrations started (MigrateVm requests).', registers });
    this.finished = new Counter({ name: 'drover_migrations_finished_total', help: 'Migrations finished, by result and bounded reason (stop reason or gRPC code).', labelNames: ['result', 'reason'], registers });
    this.inflight = new Gauge({
      name: 'drover_migrations_inflight', help: 'Migrations running on this node, by direction.', labelNames: ['node', 'direction'], registers,
      collect() {
        this.reset();
        for (const n of nodes) {
          const id = n.nodeInfo().nodeId;
          this.set({ node: id, direction: 'inbound' }, n.incomingCount);
          this.set({ node: id, direction: 'outbound' }, [...running.values()].filter((r) => r.node === id).length);
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
        for (const n of nodes) { const i = n.nodeInfo(); this.set({ node: i.nodeId }, f(i)); }
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
    this.authzRefusals = new Counter({ name: 'drover_authz_refusals_total', help: 'Calls refused by authorization, by method, status code and caller role (none: no identity).', labelNames: ['method', 'code', 'role'], registers });
  }

  /** Reports node state (capacity, load, VMs, inbound migrations) at scrape time. */
  bindNode(n: NodeSource): void { this.nodes.add(n); }
  /** Stops reporting `n` (the agent stopped). */
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
    if (r.pausedMs) this.paused.observe({ result: r.outcome }, r.pausedMs / 1000);
    if (r.outcome !== 'succeeded') return;
    this.downtime.observe(r.downtimeMs / 1000);
    this.duration.observe(r.totalMs / 1000);
    this.rounds.observe(r.rounds);
    this.transferred.observe(r.bytesSent);
    if (typeof r.guestBlackoutMs === 'number') this.blackout.observe(r.guestBlackoutMs / 1000);
    if (r.throttlePercent) this.throttled.inc();
    if (r.policy) this.byPolicy.inc({ policy: r.policy });
    if (r.throttledMs) this.throttledSeconds.observe(r.throttledMs / 1000);
  }

  /** Target side: one post-copy ended with every page present; `waitsMs` are its vCPUs' page waits. */
  postcopyDone(waitsMs: readonly number[], allPresentMs: number): void {
    for (const w of waitsMs) this.pageWait.observe(w / 1000);
    this.allPresent.observe(allPresentMs / 1000);
  }

  /** Counts one refused call (`method` a full name, `role` the caller's or undefined). */
  authzRefused(method: string, code: string, role: string | undefined): void {
    this.authzRefusals.inc({ method, code, role: role ?? 'none' });
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

let agent: AgentMetrics | undefined;
/** The agent metrics of this process (defined on first use). */
export function agentMetrics(): AgentMetrics { return (agent ??= new AgentMetrics(registry)); }
