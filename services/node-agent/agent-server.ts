/**
 * The node agent: one per node. Hosts domains through a hypervisor driver, serves the
 * NodeAgent control API (VM life cycle, source side of migrations) and the MigrationReceiver
 * data plane (target side), plus the standard gRPC health service, on one gRPC server.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { serviceDefinition } from '../../proto/load';
import { toServiceError } from '../../lib/grpc-status';
import { DroverError, failedPrecondition, invalidArgument, notFound } from '../../lib/errors';
import type { Domain, Hypervisor, PagedDomain, VmSpec } from '../../hypervisor/types';
import { validateSpec } from '../../hypervisor/spec';
import { PrecopySource } from '../../migration/precopy/precopy-source';
import { resolvePolicy, PHASES_AFTER_SWITCHOVER, type MigrationPhase } from '../../migration/types';
import { failedResult } from '../../migration/result';
import {
  type VmInfo, type NodeInfo, type MigrationEventInfo,
  specFromWire, vmToWire, nodeInfoToWire, policyFromWire, eventToWire,
} from './client/agent-codec';
import { IncomingMigration } from '../../migration/receiver/receiver';
import { decodeFrame, encodeAck } from '../../migration/wire/frame-codec';
import { ReceiverClientConn, TRANSFER_CODECS } from '../../migration/transport/receiver-client';
import { PROTOCOL_VERSION, RESERVATION_TTL_MS, RECEIVE_IDLE_TIMEOUT_MS, versionMismatch, MAX_FRAME_BYTES } from '../../migration/wire/protocol';
import { CHANNEL_OPTIONS } from './client/agent-client';
import { widenReceiveWindow } from '../../lib/grpc-window';
import { agentMetrics, grpcMetricsInterceptor } from '../../lib/metrics';
// QEMU hooks: QEMU sends its own migration stream; these tunnel it over Transfer (protocol.ts).
import { QemuSource } from '../../migration/qemu/qemu-source';
import { QemuTunnelTarget } from '../../migration/qemu/qemu-target';
import { TUNNEL_QEMU } from '../../migration/wire/protocol';
import type { QemuDomain, QemuHypervisor } from '../../hypervisor/qemu/qemu-hypervisor';

/** Capacity this agent offers. */
export interface AgentCapacity {
  memBytes: number;
  vcpus: number;
}

/** How to run an agent. */
export interface AgentOptions {
  nodeId: string;
  hypervisor: Hypervisor;
  capacity: AgentCapacity;
  /** Extra log sink (one JSON object per event). */
  log?: (event: Record<string, unknown>) => void;
}

interface HostedVm {
  domain: Domain;
  /** Set while the VM migrates out. */
  outgoing?: { id: string; engine: { readonly currentPhase: MigrationPhase }; abort: AbortController; commit: () => void };
}

/** The node agent's state and its gRPC server. */
export class NodeAgentServer {
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * MAX_FRAME_BYTES, // larger frames than MAX_FRAME_BYTES reach the handler, which names the limit
    'grpc.max_send_message_length': 64 * 1024 * 1024, interceptors: [grpcMetricsInterceptor()] });
  private readonly vms = new Map<string, HostedVm>();
  private readonly incoming = new Map<string, IncomingMigration>();
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', 'drover.v1.NodeAgent': 'NOT_SERVING', 'drover.v1.MigrationReceiver': 'NOT_SERVING' });
  private reaper: NodeJS.Timeout | undefined;
  /** host:port the server listens on, once started. */
  address = '';

  constructor(private readonly o: AgentOptions) {
    this.server.addService(serviceDefinition('NodeAgent'), this.nodeAgentHandlers() as any);
    this.server.addService(serviceDefinition('MigrationReceiver', TRANSFER_CODECS), this.receiverHandlers() as any);
    this.health.addToServer(this.server);
    agentMetrics().bindNode(this); // node capacity, load, VMs, inbound migrations at scrape time
  }

  /** Binds `listen` (host:port, port 0 = any free) and starts serving. */
  start(listen: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) return reject(new DroverError('UNAVAILABLE', `cannot listen on ${listen}: ${err.message}`, { cause: err }));
        this.address = `${listen.replace(/:[0-9]+$/, '')}:${port}`;
        for (const s of ['', 'drover.v1.NodeAgent', 'drover.v1.MigrationReceiver']) this.health.setStatus(s, 'SERVING');
        this.reaper = setInterval(() => this.reapReservations(), 5000);
        this.reaper.unref();
        resolve(this.address);
      });
    });
  }

  /** Stops serving and destroys every domain. */
  async stop(): Promise<void> {
    if (this.reaper) clearInterval(this.reaper);
    agentMetrics().unbindNode(this);
    await new Promise<void>((r) => this.server.tryShutdown(() => r()));
    for (const m of this.incoming.values()) await m.domain.destroy();
    await this.o.hypervisor.close();
  }

  private log(event: Record<string, unknown>): void {
    // Every line of a migration names its VM too (lib/log.ts: migration + vm + node).
    const mid = event.migration === undefined || event.vm !== undefined ? undefined : String(event.migration);
    const vm = mid && (this.incoming.get(mid)?.domain.spec.name ?? [...this.vms].find(([, v]) => v.outgoing?.id === mid)?.[0]);
    this.o.log?.({ node: this.o.nodeId, ...(vm ? { vm } : {}), ...event });
  }

  // ---- node state -------------------------------------------------------------------------

  private usedMem(): number {
    let n = 0;
    for (const v of this.vms.values()) n += v.domain.spec.memBytes;
    for (const m of this.incoming.values()) n += m.domain.spec.memBytes;
    return n;
  }

  private usedVcpus(): number {
    let n = 0;
    for (const v of this.vms.values()) n += v.domain.spec.vcpus;
    for (const m of this.incoming.values()) n += m.domain.spec.vcpus;
    return n;
  }

  private reserveCapacity(spec: VmSpec): void {
    const freeMem = this.o.capacity.memBytes - this.usedMem();
    if (spec.memBytes > freeMem) {
      throw new DroverError('RESOURCE_EXHAUSTED', `node ${this.o.nodeId} has ${freeMem} bytes of memory free, VM ${spec.name} needs ${spec.memBytes}`);
    }
    const freeCpu = this.o.capacity.vcpus - this.usedVcpus();
    if (spec.vcpus > freeCpu) throw new DroverError('RESOURCE_EXHAUSTED', `node ${this.o.nodeId} has ${freeCpu} vCPUs free, VM ${spec.name} needs ${spec.vcpus}`);
  }

  private vmInfo(name: string, v: HostedVm): VmInfo {
    const st = v.domain.stats();
    const hb = v.domain.heartbeat();
    return {
      spec: v.domain.spec, state: v.outgoing ? 'migrating' : v.domain.state(), nodeId: this.o.nodeId,
      dirtyRateBytesPerSec: st.dirtyRateBytesPerSec, touchedBytes: st.touchedBytes, cpu: st.cpu,
      heartbeatBeats: hb.beats, heartbeatLastMs: hb.lastBeatMs, heartbeatMaxGapMs: hb.maxGapMs,
    };
  }

  private get(name: string): HostedVm {
    const v = this.vms.get(name);
    if (!v) throw notFound(`VM ${name} is not on node ${this.o.nodeId}`);
    return v;
  }

  /** A snapshot of this node's capacity, load and VMs. */
  nodeInfo(): NodeInfo {
    return {
      nodeId: this.o.nodeId, hypervisor: this.o.hypervisor.kind, memTotalBytes: this.o.capacity.memBytes, memUsedBytes: this.usedMem(),
      vcpusTotal: this.o.capacity.vcpus, vcpusUsed: this.usedVcpus(), protocolVersion: PROTOCOL_VERSION,
      vms: [...this.vms.entries()].map(([n, v]) => this.vmInfo(n, v)),
    };
  }

  // ---- NodeAgent service ----------------------------------------------------------------------

  private nodeAgentHandlers(): grpc.UntypedServiceImplementation {
    const unary = (f: (req: any) => Promise<object> | object) => async (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      try {
        cb(null, await f(call.request));
      } catch (err) {
        cb(toServiceError(err) as grpc.ServiceError);
      }
    };
    return {
      CreateVm: unary(async (req) => {
        const spec = validateSpec(specFromWire(req.spec ?? {}));
        if (this.vms.has(spec.name) || [...this.incoming.values()].some((m) => m.domain.spec.name === spec.name)) {
          throw new DroverError('ALREADY_EXISTS', `VM ${spec.name} already exists on node ${this.o.nodeId}`);
        }
        this.reserveCapacity(spec);
        const domain = await this.o.hypervisor.createDomain(spec);
        const v: HostedVm = { domain };
        this.vms.set(spec.name, v);
        this.log({ msg: 'vm created', vm: spec.name, profile: spec.profile, memBytes: spec.memBytes });
        return vmToWire(this.vmInfo(spec.name, v));
      }),
      ListVms: unary(() => ({ vms: [...this.vms.entries()].map(([n, v]) => vmToWire(this.vmInfo(n, v))) })),
      GetVm: unary((req) => vmToWire(this.vmInfo(req.name, this.get(req.name)))),
      DestroyVm: unary(async (req) => {
        const v = this.get(req.name);
        if (v.outgoing) throw failedPrecondition(`VM ${req.name} is migrating (${v.outgoing.id}); cancel the migration first`);
        this.vms.delete(req.name);
        await v.domain.destroy();
        this.log({ msg: 'vm destroyed', vm: req.name });
        return {};
      }),
      VerifyVm: unary(async (req) => {
        const v = this.get(req.name);
        if (v.outgoing) throw failedPrecondition(`VM ${req.name} is migrating; verify it after the migration`);
        const r = await v.domain.guestCheck();
        const hb = v.domain.heartbeat();
        return {
          ok: r.ok, pagesChecked: r.pagesChecked, badPages: r.badPages, detail: r.detail,
          diskChecked: r.diskOk !== undefined, diskOk: r.diskOk ?? false, diskDetail: r.diskDetail ?? '', diskAckedSeq: r.diskAckedSeq ?? 0,
          heartbeatLastMs: hb.lastBeatMs, heartbeatMaxGapMs: hb.maxGapMs, heartbeatBeats: hb.beats,
        };
      }),
      GetNodeInfo: unary(() => nodeInfoToWire(this.nodeInfo())),
      MigrateVm: (call: grpc.ServerWritableStream<any, any>) => this.migrateOut(call),
      CancelMigration: unary((req) => {
        for (const v of this.vms.values()) {
          const out = v.outgoing;
          if (out && out.id === req.migrationId) {
            const phase = out.engine.currentPhase;
            if (PHASES_AFTER_SWITCHOVER.has(phase)) {
              throw failedPrecondition(`migration ${req.migrationId} is past switchover (phase ${phase}): the VM runs on the target now; migrate it back instead`);
            }
            out.abort.abort();
            return { phase };
          }
        }
        throw notFound(`no migration ${req.migrationId} runs from node ${this.o.nodeId}`);
      }),
      CommitMigration: unary((req) => {
        for (const v of this.vms.values()) {
          if (v.outgoing && v.outgoing.id === req.migrationId) {
            v.outgoing.commit();
            return {};
          }
        }
        throw notFound(`no migration ${req.migrationId} runs from node ${this.o.nodeId} (already finished?)`);
      }),
    };
  }

  /** MigrateVm: the source side. Streams progress; ends OK when the VM runs on the target. */
  private async migrateOut(call: grpc.ServerWritableStream<any, any>): Promise<void> {
    const req = call.request;
    const send = (ev: MigrationEventInfo) => {
      agentMetrics().migrationEvent(this.o.nodeId, req.vm, id, ev);
      if (!call.cancelled && !call.destroyed) call.write(eventToWire(ev));
    };
    let conn: ReceiverClientConn | undefined;
    let vm: HostedVm | undefined;
    const id = req.migrationId || `m-${randomUUID().slice(0, 8)}`;
    const t0 = performance.now();
    try {
      if (!req.target) throw invalidArgument('MigrateVm: target address is required');
      vm = this.get(req.vm);
      if (vm.outgoing) throw failedPrecondition(`VM ${req.vm} is already migrating (${vm.outgoing.id})`);
      const policy = resolvePolicy(policyFromWire(req.policy));
      const domain = vm.domain;
      conn = new ReceiverClientConn(req.target);
      const abort = new AbortController();
      let commit!: () => void;
      const committed = new Promise<void>((r) => { commit = r; });
      send({ migrationId: id, phase: 'reserving', round: 0, remainingBytes: domain.spec.memBytes, dirtyRateBytesPerSec: 0, rateBytesPerSec: 0, sentBytes: 0, etaMs: NaN, elapsedMs: 0 });
      const placeholder = { id, engine: { currentPhase: 'reserving' } as PrecopySource, abort, commit };
      vm.outgoing = placeholder;
      const reservation = await conn.prepare(domain.spec, this.o.nodeId, id);
      if (abort.signal.aborted) {
        await conn.abort(reservation.migrationId, reservation.token);
        throw new DroverError('CANCELLED', `migration ${id} cancelled in phase reserving`);
      }
      // QEMU hook: QEMU migrates itself into a socket of this agent; qemu-source.ts tunnels it.
      const engine = this.o.hypervisor.kind === 'qemu'
        ? new QemuSource({
          migrationId: id, hypervisor: this.o.hypervisor as QemuHypervisor, domain: domain as QemuDomain, conn, reservation, policy,
          sourceName: this.o.nodeId, targetName: req.target, signal: abort.signal, onProgress: (p) => send(p), log: (e) => this.log({ migration: id, vm: req.vm, ...e }),
        })
        : new PrecopySource({
          migrationId: reservation.migrationId, domain: domain as PagedDomain, channel: conn.open(10 * 60_000), policy, token: reservation.token,
          sourceName: this.o.nodeId, targetName: req.target, signal: abort.signal,
          onProgress: (p) => send(p), waitForCommit: () => committed,
        });
      vm.outgoing = { id, engine, abort, commit };
      this.log({ msg: 'migration started', migration: id, vm: req.vm, target: req.target });
      const result = await engine.run();
      result.migrationId = id;
      // Committed: the VM runs on the target. The source discards its copy.
      this.vms.delete(req.vm);
      await domain.destroy();
      this.log({ msg: 'migration done', migration: id, vm: req.vm, downtimeMs: result.downtimeMs, totalMs: result.totalMs, rounds: result.rounds, ...result.downtimeBreakdown });
      send({ migrationId: id, phase: 'done', round: result.rounds, remainingBytes: 0, dirtyRateBytesPerSec: 0, rateBytesPerSec: result.throughputBytesPerSec, sentBytes: result.bytesSent, etaMs: 0, elapsedMs: performance.now() - t0, result });
      call.end();
    } catch (err) {
      const e = DroverError.from(err);
      if (vm) vm.outgoing = undefined;
      this.log({ msg: 'migration failed', migration: id, vm: req.vm, code: e.code, error: e.message });
      const failed = failedResult({
        migrationId: id, vm: req.vm, profile: vm?.domain.spec.profile ?? '', memBytes: vm?.domain.spec.memBytes ?? 0,
        totalMs: performance.now() - t0, source: this.o.nodeId, target: req.target,
      }, e);
      send({ migrationId: id, phase: e.code === 'CANCELLED' ? 'cancelled' : 'failed', round: 0, remainingBytes: 0, dirtyRateBytesPerSec: 0, rateBytesPerSec: 0, sentBytes: 0, etaMs: NaN, elapsedMs: performance.now() - t0, result: failed });
      call.emit('error', toServiceError(e));
    } finally {
      conn?.close();
    }
  }

  // ---- MigrationReceiver service ------------------------------------------------------------

  private receiverHandlers(): grpc.UntypedServiceImplementation {
    return {
      PrepareIncoming: async (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
        try {
          const req = call.request;
          if (req.protocolVersion !== PROTOCOL_VERSION) throw versionMismatch(req.protocolVersion);
          const spec = validateSpec(specFromWire(req.spec ?? {}));
          if (this.vms.has(spec.name)) throw new DroverError('ALREADY_EXISTS', `VM ${spec.name} already runs on target node ${this.o.nodeId}`);
          const id = req.migrationId || `m-${randomUUID().slice(0, 8)}`;
          const existing = this.incoming.get(id);
          if (existing) throw new DroverError('ALREADY_EXISTS', `migration ${id} is already prepared on node ${this.o.nodeId}`);
          this.reserveCapacity(spec);
          const token = randomBytes(24).toString('base64url');
          const domain = await this.o.hypervisor.createIncoming(spec);
          const inc = new IncomingMigration(id, token, domain as PagedDomain);
          if (this.o.hypervisor.kind === 'qemu') inc.tunnel = TUNNEL_QEMU; // QEMU hook: expect a tunnel Start
          this.incoming.set(id, inc);
          this.log({ msg: 'incoming prepared', migration: id, vm: spec.name, source: req.sourceNode });
          cb(null, { migrationId: id, token, protocolVersion: PROTOCOL_VERSION, maxFrameBytes: MAX_FRAME_BYTES });
        } catch (err) {
          cb(toServiceError(err) as grpc.ServiceError);
        }
      },
      AbortIncoming: async (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
        const m = this.incoming.get(call.request.migrationId);
        if (m && m.state === 'prepared') await this.discard(m, 'aborted by source before start');
        cb(null, {});
      },
      Transfer: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.transfer(call),
    };
  }

  /** The target side of the page stream. */
  private transfer(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
    widenReceiveWindow(call);
    let m: IncomingMigration | undefined;
    let tunnel: QemuTunnelTarget | undefined; // QEMU hook: set after a tunnel Start
    let done = false;
    let queue = Promise.resolve();
    let idle: NodeJS.Timeout | undefined;
    const armIdle = () => {
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => fail(new DroverError('DEADLINE_EXCEEDED', `no frame for ${RECEIVE_IDLE_TIMEOUT_MS} ms; target discards the migration`)), RECEIVE_IDLE_TIMEOUT_MS);
    };
    const finish = () => {
      done = true;
      if (idle) clearTimeout(idle);
    };
    const fail = (err: unknown) => {
      if (done) return;
      finish();
      const e = DroverError.from(err);
      this.log({ msg: 'incoming failed', migration: m?.migrationId, code: e.code, error: e.message });
      tunnel?.close();
      if (m && m.state !== 'active') void this.discard(m, e.message);
      call.emit('error', toServiceError(e));
    };
    armIdle();
    call.on('data', (bytes: Buffer) => {
      armIdle();
      queue = queue.then(async () => {
        if (done) return;
        try {
          const frame = decodeFrame(bytes);
          if (!m) {
            if (frame.kind !== 'start') throw failedPrecondition(`the first frame must be Start, got ${frame.kind}`);
            const found = this.incoming.get(frame.migrationId);
            if (frame.protocolVersion !== PROTOCOL_VERSION) throw versionMismatch(frame.protocolVersion);
            if (!found) throw notFound(`no migration ${frame.migrationId} is prepared on node ${this.o.nodeId}`);
            const ack = found.start(frame);
            m = found;
            // QEMU hook: a tunnel Start connects to the target QEMU (qemu-target.ts), which takes the frames.
            if (m.state === 'tunnel') {
              const t = await QemuTunnelTarget.open(m, this.o.hypervisor, call, fail);
              tunnel = t.target;
              call.write(encodeAck(t.accepted));
              return;
            }
            call.write(encodeAck(ack));
            return;
          }
          const out = tunnel ? await tunnel.onFrame(frame) : await m.apply(frame);
          for (const a of out) call.write(encodeAck(a));
          if (m.state === 'active') this.adopt(m);
        } catch (err) {
          fail(err);
        }
      });
    });
    call.on('end', () => {
      void queue.then(() => {
        if (!done && m && m.state !== 'active') fail(new DroverError('ABORTED', `source closed the stream of migration ${m.migrationId} before it completed`));
        finish();
        if (!call.destroyed) call.end();
      });
    });
    call.on('cancelled', () => {
      void queue.then(() => {
        if (m && m.state !== 'active') {
          tunnel?.close();
          this.log({ msg: 'incoming cancelled', migration: m.migrationId });
          void this.discard(m, 'source went away');
        }
        finish();
      });
    });
    call.on('error', () => { /* reported through 'cancelled' or 'end' */ });
  }

  /** An activated incoming migration becomes a hosted VM. */
  private adopt(m: IncomingMigration): void {
    if (!this.incoming.has(m.migrationId)) return;
    this.incoming.delete(m.migrationId);
    this.vms.set(m.domain.spec.name, { domain: m.domain });
    this.log({ msg: 'incoming activated', migration: m.migrationId, vm: m.domain.spec.name });
  }

  /** Throws away an incoming copy (before commit). Safe to repeat. */
  private async discard(m: IncomingMigration, why: string): Promise<void> {
    if (!this.incoming.has(m.migrationId)) return;
    this.incoming.delete(m.migrationId);
    m.markAborted();
    this.log({ msg: 'incoming discarded', migration: m.migrationId, vm: m.domain.spec.name, why });
    await m.domain.destroy();
  }

  private reapReservations(): void {
    const now = Date.now();
    for (const m of this.incoming.values()) {
      if (m.state === 'prepared' && now - m.createdAt > RESERVATION_TTL_MS) void this.discard(m, 'reservation expired');
    }
  }

  /** Number of incoming reservations/migrations (for tests and metrics). */
  get incomingCount(): number {
    return this.incoming.size;
  }
}

export { CHANNEL_OPTIONS };
