/**
 * The node agent: one per node. Hosts domains through a hypervisor driver, serves the
 * NodeAgent control API (VM life cycle, source side of migrations: outgoing-migrations.ts) and
 * the MigrationReceiver data plane (target side: incoming-migrations.ts), plus the standard gRPC
 * health service, on one gRPC server. The VMs and reservations live in vm-host.ts.
 */
import { OutcomeJournal } from './outcome-journal';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { addService, type Input, type ServiceHandlers } from '../../proto/load';
import type * as wire from '../../proto/generated/drover-v1';
import { toServiceError } from '../../lib/grpc-status';
import { DroverError, failedPrecondition, invalidArgument } from '../../lib/errors';
import type { Hypervisor } from '../../hypervisor/types';
import { validateSpec } from '../../hypervisor/spec';
import { specFromWire, vmToWire, nodeInfoToWire, type NodeInfo } from './client/agent-codec';
import { TRANSFER_CODECS } from '../../migration/transport/receiver-client';
import { MAX_FRAME_BYTES } from '../../migration/wire/protocol';
import { CHANNEL_OPTIONS } from './client/agent-client';
import { agentMetrics, grpcMetricsInterceptor } from './agent-metrics';
import { VmHost, type AgentCapacity } from './vm-host';
import { StoragePolicy } from './storage-policy';
import { OutgoingMigrations } from './outgoing-migrations';
import { analyzeVmHandler } from './analyze-vm';
import { IncomingMigrations } from './incoming-migrations';
import type { ClusterLink } from './switchover';
import { ReservationGuard } from './incoming-auth';
import { clientCredentials, serverCredentials, type TlsSource } from '../../lib/pki/grpc-credentials';
import { authzInterceptor } from '../../lib/pki/grpc-authz-interceptor';
import { describeIdentity, type Identity } from '../../lib/pki/identity';
import { CertificateReloader, type TlsFiles } from '../../lib/pki/tls-files';
import { tlsClientOptions, tlsServerOptions } from '../../lib/pki/tls-options';
import { startBulkListener, type BulkListener } from '../../migration/transport/bulk-listener';
import type { BulkDialer } from '../../migration/transport/bulk-socket';

/** Capacity this agent offers (re-exported for callers of the server). */
export type { AgentCapacity } from './vm-host';

/** How to run an agent. */
export interface AgentOptions {
  nodeId: string;
  hypervisor: Hypervisor;
  capacity: AgentCapacity;
  /** Storage endpoints (HOST:PORT) a VM's disk may name; absent: DROVER_STORAGE, else loopback only (storage-policy.ts). */
  storage?: readonly string[];
  /** Extra log sink (one JSON object per event). */
  log?: (event: Record<string, unknown>) => void;
  /**
   * Mutual TLS (fixed files or a CertificateReloader): client certificates required, every call
   * authorized (lib/pki/authz.ts), the data plane dialled only to the named node. Its identity
   * must be `spiffe://drover/node/<nodeId>`. Absent: plain text, no authorization (--insecure).
   */
  tls?: TlsSource;
  /** Data streams of an outgoing migration whose request leaves the count open (1..MAX_STREAMS or STREAMS_AUTO; default 1). */
  streams?: number;
  /** Listen for the bulk channel (protocol.ts "Bulk channel") beside the gRPC server; default true. */
  bulk?: boolean;
  /**
   * Where the bulk listener binds (a fixed port for firewalled clusters); absent = the gRPC
   * server's host, a free port. Sources dial the port on the host they reach the gRPC server at.
   */
  bulkListen?: { host: string; port: number };
  /** Directory of the switchover journal (outcome-journal.ts), so a restarted agent still answers its sources; absent: answers from memory only. */
  stateDir?: string;
  /** How long a direct migration's source asks its target for the outcome of a broken switchover before holding the VM (default DIRECT_OUTCOME_WAIT_MS). */
  outcomeWaitMs?: number;
}

/** The files a TLS source holds now (a reloader's current set: new bulk connections use what was loaded last). */
function filesOf(tls: TlsSource): TlsFiles {
  return tls instanceof CertificateReloader ? tls.current() : tls;
}

/** The identity of a TLS source's certificate. */
function identityOfSource(tls: TlsSource): Identity | undefined {
  return (tls instanceof CertificateReloader ? tls.current() : tls).identity;
}

/** Throws FAILED_PRECONDITION unless the certificate is this node's identity. */
function checkOwnIdentity(tls: TlsSource, nodeId: string): void {
  const id = identityOfSource(tls);
  if (id?.role !== 'node' || id.name !== nodeId) {
    const file = (tls instanceof CertificateReloader ? tls.current() : tls).paths.cert;
    throw failedPrecondition(`certificate ${file} is ${describeIdentity(id)}, but agent --node-id ${nodeId} needs node/${nodeId}`);
  }
}

/** Health service names this server reports. */
const HEALTH_SERVICES = ['', 'drover.v1.NodeAgent', 'drover.v1.MigrationReceiver'];
/** Period of the expired-reservation reaper, ms. */
const REAPER_PERIOD_MS = 5000;
/** Largest message the server sends (node info with many VMs, progress events). */
const MAX_SEND_MESSAGE_BYTES = 64 * 1024 * 1024;

/** The node agent's state and its gRPC server. */
export class NodeAgentServer {
  private readonly server: grpc.Server;
  private readonly host: VmHost;
  private readonly outgoing: OutgoingMigrations;
  private readonly incoming: IncomingMigrations;
  private readonly health = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING'])));
  private reaper: NodeJS.Timeout | undefined;
  private bulk: BulkListener | undefined;
  /** The bulk listener's own host (--bulk-listen), undefined = the gRPC server's. */
  private bulkHost: string | undefined;
  /** host:port the server listens on, once started. */
  address = '';

  constructor(private readonly o: AgentOptions) {
    const tls = o.tls;
    if (tls) checkOwnIdentity(tls, o.nodeId);
    // Authorization first: a refused call reaches no other interceptor's handler side.
    const interceptors = tls ? [authzInterceptor({ onRefusal: (e) => this.refused(e.method, e.code, e.identity, e.peer, e.message) }), grpcMetricsInterceptor()] : [grpcMetricsInterceptor()];
    this.server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * MAX_FRAME_BYTES, // larger frames than MAX_FRAME_BYTES reach the handler, which names the limit
      'grpc.max_send_message_length': MAX_SEND_MESSAGE_BYTES, interceptors });
    this.host = new VmHost(o.nodeId, o.hypervisor.kind, o.capacity, o.storage ? new StoragePolicy(o.storage) : StoragePolicy.fromEnv());
    const log = (e: Record<string, unknown>) => this.log(e);
    const receiverCreds = tls && ((targetNode: string) => clientCredentials(tls, { role: 'node', name: targetNode }));
    // The bulk channel's socket: mutual TLS with the same node certificate, expecting the same target identity.
    const bulkDialer = (targetNode: string): BulkDialer => (tls ? { mode: 'tls', tls: tlsClientOptions(filesOf(tls), { role: 'node', name: targetNode }, 'TLSv1.3') } : { mode: 'tcp' });
    this.outgoing = new OutgoingMigrations(this.host, o.nodeId, log, (vm, id, ev) => agentMetrics().migrationEvent(o.nodeId, vm, id, ev), receiverCreds || undefined, o.streams, bulkDialer);
    if (o.outcomeWaitMs) this.outgoing.outcomeWaitMs = o.outcomeWaitMs;
    const guard = new ReservationGuard(!!tls, (r) => this.refused(r.method, r.code, r.identity, '', r.message));
    this.incoming = new IncomingMigrations(this.host, o.nodeId, o.hypervisor, log, guard);
    if (o.stateDir) this.incoming.journal = new OutcomeJournal(o.stateDir);
    addService(this.server, 'NodeAgent', this.nodeAgentHandlers());
    addService<'MigrationReceiver', ReceiverHandlers>(this.server, 'MigrationReceiver', this.receiverHandlers(), TRANSFER_CODECS);
    this.health.addToServer(this.server);
    agentMetrics().bindNode(this); // node capacity, load, VMs, inbound migrations at scrape time
  }

  /**
   * Cluster mode: the agent's registration (etcd client, lease deadline). A target then records
   * ownership of a VM it resumed, and a source resolves a broken switchover from etcd (switchover.ts).
   */
  attachCluster(link: ClusterLink): void {
    this.incoming.cluster = link;
    this.outgoing.cluster = link;
  }

  /**
   * Binds `listen` (host:port, port 0 = any free) and starts serving; the bulk listener at
   * `bulkListen`, else on the same host at a free port (a bind that fails: BulkListenError).
   */
  async start(listen: string): Promise<string> {
    if (this.o.bulk !== false) {
      const at = this.o.bulkListen ?? { host: listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, ''), port: 0 };
      this.bulk = await startBulkListener(at.host, at.port, this.o.tls && tlsServerOptions(filesOf(this.o.tls)), (s, cert) => this.incoming.acceptBulk(s, cert, this.bulk!.mode));
      this.bulkHost = this.o.bulkListen?.host;
      this.incoming.bulkOffer = { mode: this.bulk.mode, port: this.bulk.port };
      const reloader = this.o.tls instanceof CertificateReloader ? this.o.tls : undefined;
      // After SIGHUP's reload new bulk connections present the new certificate, as new gRPC ones do.
      reloader?.addIdentityCertificateListener(() => this.bulk?.reload(tlsServerOptions(reloader.current())));
    }
    try {
      return await this.bindGrpc(listen);
    } catch (err) {
      await this.bulk?.close();
      throw err;
    }
  }

  private bindGrpc(listen: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const creds = this.o.tls ? serverCredentials(this.o.tls) : grpc.ServerCredentials.createInsecure();
      this.server.bindAsync(listen, creds, (err, port) => {
        if (err) return reject(new DroverError('UNAVAILABLE', `cannot listen on ${listen}: ${err.message}`, { cause: err }));
        this.address = `${listen.replace(/:[0-9]+$/, '')}:${port}`;
        for (const s of HEALTH_SERVICES) this.health.setStatus(s, 'SERVING');
        this.reaper = setInterval(() => this.incoming.reapReservations(), REAPER_PERIOD_MS);
        this.reaper.unref();
        resolve(this.address);
      });
    });
  }

  /** HOST:PORT of the bulk channel's listener once started ('' = none): its own host when it has one (--bulk-listen), else the gRPC server's. */
  get bulkAddress(): string {
    if (!this.bulk) return '';
    const host = this.bulkHost === undefined ? this.address.slice(0, this.address.lastIndexOf(':')) : this.bulkHost.includes(':') ? `[${this.bulkHost}]` : this.bulkHost;
    return `${host}:${this.bulk.port}`;
  }

  /** Stops serving and destroys every domain. */
  async stop(): Promise<void> {
    if (this.reaper) clearInterval(this.reaper);
    agentMetrics().unbindNode(this);
    await this.bulk?.close();
    await new Promise<void>((r) => this.server.tryShutdown(() => r()));
    await this.incoming.destroyAll();
    this.incoming.journal?.close();
    await this.o.hypervisor.close();
  }

  /** One refused call: a log line (method, code, peer identity) and drover_authz_refusals_total. */
  private refused(method: string, code: string, identity: Identity | undefined, peer: string, message: string): void {
    agentMetrics().authzRefused(method, code, identity?.role);
    this.log({ msg: 'call refused', method, code, peerIdentity: describeIdentity(identity), ...(peer ? { peer } : {}), error: message });
  }

  private log(event: Record<string, unknown>): void {
    // Every line of a migration names its VM too (lib/log.ts: migration + vm + node).
    const mid = event.migration === undefined || event.vm !== undefined ? undefined : String(event.migration);
    const vm = mid && this.host.vmOfMigration(mid);
    this.o.log?.({ node: this.o.nodeId, ...(vm ? { vm } : {}), ...event });
  }

  /** A snapshot of this node's capacity, load and VMs. */
  nodeInfo(): NodeInfo {
    return this.host.nodeInfo();
  }

  /** Number of incoming reservations/migrations (for tests and metrics). */
  get incomingCount(): number {
    return this.host.incomingCount;
  }

  // ---- NodeAgent service ----------------------------------------------------------------------

  private nodeAgentHandlers(): ServiceHandlers<'NodeAgent'> {
    const host = this.host;
    return {
      CreateVm: unary(async (req) => {
        const spec = validateSpec(specFromWire(req.spec));
        host.reserveVm(spec); // checks and reserves in one synchronous step: concurrent creates cannot overcommit
        const v = host.add(await this.o.hypervisor.createDomain(spec).catch((err: unknown) => { host.releaseCreating(spec.name); throw err; }));
        this.log({ msg: 'vm created', vm: spec.name, profile: spec.profile, memBytes: spec.memBytes });
        return vmToWire(host.vmInfo(spec.name, v));
      }),
      ListVms: unary(() => ({ vms: [...host.entries()].map(([n, v]) => vmToWire(host.vmInfo(n, v))) })),
      GetVm: unary((req) => vmToWire(host.vmInfo(req.name, host.get(req.name)))),
      DestroyVm: unary(async (req) => {
        const v = host.get(req.name);
        if (v.outgoing) throw failedPrecondition(`VM ${req.name} is migrating (${v.outgoing.id}); cancel the migration first`);
        host.remove(req.name);
        await v.domain.destroy();
        this.log({ msg: 'vm destroyed', vm: req.name });
        return {};
      }),
      VerifyVm: unary((req) => this.verifyVm(req.name)),
      ResumeVm: unary(async (req) => {
        if (!req.name) throw invalidArgument('ResumeVm: name is required');
        return vmToWire(host.vmInfo(req.name, await this.outgoing.resume(req.name, req.force)));
      }),
      GetNodeInfo: unary(() => nodeInfoToWire(this.nodeInfo())),
      MigrateVm: (call) => this.outgoing.migrateOut(call),
      CancelMigration: unary((req) => this.outgoing.cancel(req.migrationId)),
      CommitMigration: unary((req) => { this.outgoing.commit(req.migrationId); return {}; }),
      AnalyzeVm: analyzeVmHandler(host, this.o.hypervisor.kind),
    };
  }

  /** VerifyVm: the guest's own check and its heartbeat. */
  private async verifyVm(name: string): Promise<Input<wire.VerifyVmResponse>> {
    const v = this.host.get(name);
    if (v.outgoing) throw failedPrecondition(`VM ${name} is migrating; verify it after the migration`);
    const r = await v.domain.guestCheck();
    const hb = v.domain.heartbeat();
    return {
      ok: r.ok, pagesChecked: r.pagesChecked, badPages: r.badPages, detail: r.detail,
      diskChecked: r.diskOk !== undefined, diskOk: r.diskOk ?? false, diskDetail: r.diskDetail ?? '', diskAckedSeq: r.diskAckedSeq ?? 0,
      heartbeatLastMs: hb.lastBeatMs, heartbeatMaxGapMs: hb.maxGapMs, heartbeatBeats: hb.beats,
    };
  }

  // ---- MigrationReceiver service ------------------------------------------------------------

  private receiverHandlers(): ReceiverHandlers {
    return {
      PrepareIncoming: unary((req, call) => this.incoming.prepare(req, call)),
      AbortIncoming: unary(async (req, call) => { await this.incoming.abort(req.migrationId, req.token, call); return {}; }),
      SwitchoverOutcome: unary(async (req) => ({ outcome: await this.incoming.outcome(req.migrationId, req.token) })),
      Transfer: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => this.incoming.transfer(call),
    };
  }
}

export { CHANNEL_OPTIONS };

/** The receiver's handlers: Transfer carries raw frames (TRANSFER_CODECS), the rest are typed. */
type ReceiverHandlers = Omit<ServiceHandlers<'MigrationReceiver'>, 'Transfer'> & { Transfer: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => void };

/** One unary method from a function of its request: errors become gRPC statuses (lib/grpc-status.ts). */
function unary<Req, Res>(f: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res): (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => Promise<void> {
  return async (call, cb) => {
    try {
      cb(null, await f(call.request, call));
    } catch (err) {
      cb(toServiceError(err) as grpc.ServiceError);
    }
  };
}
