/**
 * The source side of migrations on a node agent: MigrateVm (streams progress until the VM runs
 * on the target and owns it) and CancelMigration. CommitMigration is deprecated since protocol 2
 * (the target decides; see migration/wire/protocol.ts). The engine comes from the domain's
 * migration capability (migration/strategy/outgoing.ts); nothing here knows the driver.
 */
import type * as wire from '../../proto/generated/drover-v1';
import type { Input } from '../../proto/load';
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { toServiceError } from '../../lib/grpc-status';
import { failedResult } from '../../migration/result';
import { DroverError, failedPrecondition, invalidArgument, notFound } from '../../lib/errors';
import { resolvePolicy, PHASES_AFTER_SWITCHOVER, type MigrationPhase, type MigrationResult } from '../../migration/types';
import { outgoingEngine } from '../../migration/strategy/outgoing';
import { ReceiverClientConn } from '../../migration/transport/receiver-client';
import { type MigrationEventInfo, policyFromWire, eventToWire, transportFromWire } from './client/agent-codec';
import type { BulkDialer } from '../../migration/transport/bulk-socket';
import type { DataTransport } from '../../migration/wire/protocol';
import { heldReason, outgoingPhase, type HostedVm, type VmHost } from './vm-host';
import { resolveOutcome, type ClusterLink } from './switchover';
import { ASK_DEADLINE_MS, DIRECT_OUTCOME_WAIT_MS, askTargetOutcome } from './direct-outcome';
import type { SwitchoverOutcome } from '../../migration/precopy/precopy-source';
import { autoStreams, type Fence } from '../../migration/wire/protocol';
import { agentMetrics } from './agent-metrics';

/**
 * How long ResumeVm asks the target of a held direct migration again: an operator waits at the
 * prompt, and a target that answers at all answers in milliseconds (ASK_DEADLINE_MS per question).
 */
export const RESUME_ASK_WAIT_MS = 3000;

/** A log sink (one JSON object per event). */
export type AgentLog = (event: Record<string, unknown>) => void;

/** Sink of every progress event of a migration (the agent's metrics). */
export type MigrationEventSink = (vm: string, migrationId: string, ev: MigrationEventInfo) => void;

/**
 * Channel credentials towards a target node's MigrationReceiver (TLS: clientCredentials expecting
 * `spiffe://drover/node/<targetNode>`). Absent: plain text (--insecure).
 */
export type ReceiverCredentials = (targetNode: string) => grpc.ChannelCredentials;

/** The outgoing migrations of one node. */
export class OutgoingMigrations {
  constructor(private readonly host: VmHost, private readonly nodeId: string, private readonly log: AgentLog, private readonly onEvent: MigrationEventSink,
    private readonly receiverCredentials?: ReceiverCredentials, private readonly defaultStreams = 1, private readonly bulkDialer?: (targetNode: string) => BulkDialer) {}

  /** Cluster mode (the agent registered in etcd): a broken switchover is resolved from etcd. */
  cluster: ClusterLink | undefined;
  /** How long a direct migration asks its target for the outcome of a broken switchover before holding the VM paused (--outcome-wait). */
  outcomeWaitMs = DIRECT_OUTCOME_WAIT_MS;
  /** VMs a ResumeVm is settling now (one at a time per VM). */
  private readonly settling = new Set<string>();

  /**
   * The data-plane channel to the target: with TLS only to the node the request names; over the
   * policy's streams (0 = this agent's --streams; auto: from this node's cores).
   */
  private dialTarget(req: wire.MigrateVmRequest): ReceiverClientConn {
    const streams = autoStreams(req.policy?.streams || this.defaultStreams, availableParallelism());
    const transport = transportFromWire(req.policy?.transport) ?? 'auto';
    if (!this.receiverCredentials) return new ReceiverClientConn(req.target, undefined, streams, this.bulkOf(req.targetNode, transport));
    if (!req.targetNode) throw invalidArgument(`MigrateVm: target_node is required with TLS (the node name the target ${req.target} must prove with its certificate)`);
    return new ReceiverClientConn(req.target, this.receiverCredentials(req.targetNode), streams, this.bulkOf(req.targetNode, transport));
  }

  /** The bulk channel's dialer towards `targetNode` under `transport` (none when the agent has no dialer). */
  private bulkOf(targetNode: string, transport: DataTransport): { dialer: BulkDialer; transport: DataTransport } | undefined {
    if (transport === 'bulk' && !this.bulkDialer) throw failedPrecondition('--transport bulk: this agent cannot dial the bulk channel');
    return this.bulkDialer && { dialer: this.bulkDialer(targetNode), transport };
  }

  /** CancelMigration: aborts a migration that has not switched over; returns the phase it was in. */
  cancel(migrationId: string): { phase: MigrationPhase } {
    const out = this.host.findOutgoing(migrationId)?.outgoing;
    if (!out) throw notFound(`no migration ${migrationId} runs from node ${this.nodeId}`);
    const phase = outgoingPhase(out);
    if (PHASES_AFTER_SWITCHOVER.has(phase)) {
      // Post-copy: the target runs the VM but still needs pages only this node holds; stopping now would lose it.
      const pc = out.stage === 'running' && out.engine.inPostcopy ? ' and still needs memory pages only this node holds (post-copy): cancelling would lose the VM' : '';
      throw failedPrecondition(`migration ${migrationId} is past switchover (phase ${phase}): the VM runs on the target now${pc}; migrate it back once it completes instead`);
    }
    out.abort.abort();
    return { phase };
  }

  /** CommitMigration (deprecated since protocol 2: the target decides): checks the migration exists, does nothing. */
  commit(migrationId: string): void {
    if (!this.host.findOutgoing(migrationId)?.outgoing) throw notFound(`no migration ${migrationId} runs from node ${this.nodeId} (already finished?)`);
  }

  /** MigrateVm: the source side. Streams progress; ends OK when the VM runs on the target. */
  async migrateOut(call: grpc.ServerWritableStream<wire.MigrateVmRequest, Input<wire.MigrationEvent>>): Promise<void> {
    const req = call.request;
    const id: string = req.migrationId || `m-${randomUUID().slice(0, 8)}`;
    const send = (ev: MigrationEventInfo) => {
      this.onEvent(req.vm, id, ev);
      if (!call.cancelled && !call.destroyed) call.write(eventToWire(ev));
    };
    let conn: ReceiverClientConn | undefined;
    let vm: HostedVm | undefined;
    const t0 = performance.now();
    try {
      if (!req.target) throw invalidArgument('MigrateVm: target address is required');
      vm = this.host.get(req.vm);
      if (vm.outgoing) throw failedPrecondition(`VM ${req.vm} is already migrating (${vm.outgoing.id})`);
      if (vm.held) throw failedPrecondition(`VM ${req.vm} cannot migrate: it is ${heldReason(vm.held)}; settle it first (drover vm resume ${req.vm})`);
      conn = this.dialTarget(req);
      const result = await this.run(vm, conn, id, req, send);
      this.log({ msg: 'migration done', migration: id, vm: req.vm, downtimeMs: result.downtimeMs, totalMs: result.totalMs, rounds: result.rounds, ...result.downtimeBreakdown });
      send({ migrationId: id, phase: 'done', round: result.rounds, remainingBytes: 0, dirtyRateBytesPerSec: 0, rateBytesPerSec: result.throughputBytesPerSec, sentBytes: result.bytesSent, etaMs: 0, elapsedMs: performance.now() - t0, result });
      call.end();
    } catch (err) {
      const e = DroverError.from(err);
      const out = vm?.outgoing;
      const pausedMs = out?.stage === 'running' ? Math.round(out.engine.pausedMs * 10) / 10 : undefined;
      if (vm) vm.outgoing = undefined;
      if (vm && out?.stage === 'running' && out.engine.vmLost) await this.discardLost(vm, id, e);
      this.log({ msg: 'migration failed', migration: id, vm: req.vm, code: e.code, error: e.message, pausedMs });
      const failed = failedResult({ migrationId: id, vm: req.vm, profile: vm?.domain.spec.profile ?? '', memBytes: vm?.domain.spec.memBytes ?? 0, totalMs: performance.now() - t0, source: this.nodeId, target: req.target, ...(pausedMs ? { pausedMs } : {}) }, e);
      send({ migrationId: id, phase: e.code === 'CANCELLED' ? 'cancelled' : 'failed', round: 0, remainingBytes: 0, dirtyRateBytesPerSec: 0, rateBytesPerSec: 0, sentBytes: 0, etaMs: NaN, elapsedMs: performance.now() - t0, result: failed });
      call.emit('error', toServiceError(e));
    } finally {
      conn?.close();
    }
  }

  /** Reserves on the target, runs the engine, and discards the source copy once the VM runs there. */
  private async run(vm: HostedVm, conn: ReceiverClientConn, id: string, req: wire.MigrateVmRequest, send: (ev: MigrationEventInfo) => void): Promise<MigrationResult> {
    const policy = resolvePolicy(policyFromWire(req.policy));
    const domain = vm.domain;
    const abort = new AbortController();
    const fence: Fence | undefined = req.fence?.vmRevision ? { vmRevision: req.fence.vmRevision, job: req.fence.job, attempt: req.fence.attempt } : undefined;
    send({ migrationId: id, phase: 'reserving', round: 0, remainingBytes: domain.spec.memBytes, dirtyRateBytesPerSec: 0, rateBytesPerSec: 0, sentBytes: 0, etaMs: NaN, elapsedMs: 0 });
    vm.outgoing = { id, abort, stage: 'reserving' };
    const reservation = await conn.prepare(domain.spec, this.nodeId, id);
    if (abort.signal.aborted) {
      await conn.abort(reservation.migrationId, reservation.token);
      throw new DroverError('CANCELLED', `migration ${id} cancelled in phase reserving`);
    }
    const engine = outgoingEngine({
      migrationId: id, domain, conn, reservation, policy, sourceName: this.nodeId, targetName: req.target, signal: abort.signal,
      onProgress: (p) => send(p), log: (e) => this.log({ migration: id, vm: req.vm, ...e }), fence,
      resolveOutcome: (cause) => this.resolve(req, fence, cause, () => conn.switchoverOutcome(reservation.migrationId, reservation.token, ASK_DEADLINE_MS)),
    });
    vm.outgoing = { id, abort, stage: 'running', engine };
    this.log({ msg: 'migration started', migration: id, vm: req.vm, target: req.target, streams: conn.streams });
    const result = await engine.run().catch((err: unknown) => {
      if (engine.switchoverUnresolved) {
        vm.held = {
          migrationId: id, target: req.targetNode ? `${req.targetNode} (${req.target})` : req.target, sinceMs: Date.now(), cluster: !!(this.cluster && fence && req.targetNode),
          resolve: () => this.resolve(req, fence, DroverError.from(err), () => conn.switchoverOutcome(reservation.migrationId, reservation.token, ASK_DEADLINE_MS), RESUME_ASK_WAIT_MS),
        };
      }
      throw err;
    });
    result.migrationId = id;
    if (conn.transportUsed) result.transport = conn.transportUsed;
    // Owned: the VM runs on the target, which recorded it. The source discards its copy.
    this.host.remove(req.vm);
    await domain.destroy();
    return result;
  }

  /**
   * The VM was lost after the switch (post-copy failed, or the target lost it after Complete): the
   * paused copy here is stale (the guest ran on the target) and must never resume, so it is
   * destroyed; the VM is lost, said loudly.
   */
  private async discardLost(vm: HostedVm, id: string, e: DroverError): Promise<void> {
    const name = vm.domain.spec.name;
    agentMetrics().lost.inc({ side: 'source' });
    this.log({ msg: 'VM LOST after the switch: the source never resumes a copy the guest ran past; its stale copy is destroyed', migration: id, vm: name, code: e.code, error: e.message });
    try { this.host.remove(name); } catch { /* already gone */ }
    await vm.domain.destroy().catch(() => undefined);
  }

  /**
   * ResumeVm: settles a VM held paused after a migration whose outcome was unknown. Asks again:
   * the guest never ran on the target => resumes here; it runs there => releases the paused copy;
   * lost there => discards it. Still unknown: refused, unless `force` on a direct migration (the
   * operator says the target is gone for good). A cluster migration is never forced: etcd decides.
   */
  async resume(name: string, force: boolean): Promise<HostedVm> {
    const vm = this.host.get(name);
    const held = vm.held;
    if (vm.outgoing) throw failedPrecondition(`VM ${name} is migrating (${vm.outgoing.id}); nothing to resume`);
    if (!held) throw failedPrecondition(`VM ${name} is ${vm.domain.state()} on node ${this.nodeId} and no migration holds it: nothing to resume`);
    if (this.settling.has(name)) throw failedPrecondition(`VM ${name} is being settled already (another resume runs)`);
    this.settling.add(name);
    try {
      const outcome = await held.resolve().catch(() => 'unknown' as const);
      this.log({ msg: 'held VM: outcome asked again', vm: name, migration: held.migrationId, target: held.target, outcome, force });
      if (outcome === 'owned') {
        vm.held = undefined;
        this.host.remove(name);
        await vm.domain.destroy();
        throw failedPrecondition(`VM ${name} runs on ${held.target}: it took over in migration ${held.migrationId}; the paused copy on node ${this.nodeId} is released`);
      }
      if (outcome === 'lost') {
        vm.held = undefined;
        const e = new DroverError('DATA_LOSS', `VM ${name} is LOST: ${held.target} resumed it in migration ${held.migrationId} and lost it; the stale paused copy on node ${this.nodeId} is discarded, never resumed`);
        await this.discardLost(vm, held.migrationId, e);
        throw e;
      }
      if (outcome === 'unknown' && (!force || held.cluster)) {
        const how = held.cluster ? 'etcd decides who owns it: retry once etcd answers' : 'resume it with --force only once that node is gone for good (if the guest runs there too, the VM splits)';
        throw failedPrecondition(`VM ${name} stays paused: ${held.target} still cannot say whether the guest ran there (migration ${held.migrationId}); ${how}`);
      }
      await vm.domain.resume();
      vm.held = undefined;
      this.log({ msg: outcome === 'refused' ? 'held VM resumed: the target never ran it' : 'held VM resumed by force: the operator says the target is gone for good', vm: name, migration: held.migrationId, target: held.target });
      return vm;
    } finally {
      this.settling.delete(name);
    }
  }

  /** After Complete with a broken stream: cluster mode asks etcd; direct mode asks the target (direct-outcome.ts) within `waitMs`. */
  private async resolve(req: wire.MigrateVmRequest, fence: Fence | undefined, cause: DroverError, askTarget: () => Promise<string>, waitMs = this.outcomeWaitMs): Promise<SwitchoverOutcome> {
    this.log({ msg: 'switchover outcome unknown after Complete; resolving, VM stays paused', vm: req.vm, target: req.targetNode || req.target, error: cause.message });
    if (!this.cluster || !fence || !req.targetNode) {
      const outcome = await askTargetOutcome(askTarget, (e) => this.log({ vm: req.vm, target: req.target, ...e }), waitMs);
      this.log({ msg: 'switchover outcome resolved by the target (direct migration)', vm: req.vm, target: req.target, outcome });
      return outcome;
    }
    const outcome = await resolveOutcome(this.cluster, this.nodeId, req.targetNode, req.vm, fence, (e) => this.log(e));
    this.log({ msg: 'switchover outcome resolved', vm: req.vm, target: req.targetNode, outcome });
    return outcome;
  }
}
