/**
 * A typed client of one node agent (control API). Every call has a deadline; failures come
 * back as DroverErrors naming the agent and the call (see lib/grpc-status.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { clientConstructor, type Input, type ServiceClient } from '../../../proto/load';
import type { Wire } from '../../../proto/generated/drover-v1';
import { deadlineIn, fromServiceError } from '../../../lib/grpc-status';
import { CHANNEL_OPTIONS } from '../../../lib/grpc-channel';

/** The channel options of every Drover client (re-exported for the agent's users). */
export { CHANNEL_OPTIONS };
import type { VmSpec } from '../../../hypervisor/types';
import type { MigrationPolicy, MigrationResult } from '../../../migration/types';
import {
  type NodeInfo, type VmInfo, type VerifyInfo, type MigrationEventInfo,
  specToWire, vmFromWire, nodeInfoFromWire, policyToWire, eventFromWire,
} from './agent-codec';

const NodeAgentClient = clientConstructor('NodeAgent');

/** The NodeAgent methods with one request and one response. */
type UnaryMethod = { [M in keyof Wire['NodeAgent']]: Wire['NodeAgent'][M]['responseStream'] extends false ? M : never }[keyof Wire['NodeAgent']];
/** Request of NodeAgent method `M`. */
type Req<M extends UnaryMethod> = Input<Wire['NodeAgent'][M]['request']>;
/** Response of NodeAgent method `M`. */
type Res<M extends UnaryMethod> = Wire['NodeAgent'][M]['response'];
/** A unary call, uniform over the methods (each method's own type fixes Req<M> and Res<M>). */
type UnaryCall<M extends UnaryMethod> = (req: Req<M>, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res<M>) => void) => grpc.ClientUnaryCall;

/**
 * TLS server name (SNI) of Drover's clients: agents are dialled by IP, which SNI may not carry
 * (Node warns, RFC 6066); the certificate's identity is checked instead (lib/pki/grpc-credentials.ts).
 */
export const TLS_SERVER_NAME: grpc.ChannelOptions = { 'grpc.ssl_target_name_override': 'drover' };

/** Channel credentials towards an agent, expecting node `node`'s identity when named (any node otherwise). */
export type AgentCredentials = (node?: string) => grpc.ChannelCredentials;

let processCredentials: AgentCredentials = () => grpc.credentials.createInsecure();

/**
 * Sets this process's credentials towards agents (a migrator or scheduler: its controller
 * certificate; the cluster CLI: the admin's), used by every AgentClient built without explicit
 * credentials. Plain text until set.
 */
export function setAgentCredentials(f: AgentCredentials): void {
  processCredentials = f;
}

/** This process's credentials towards the agent of node `node` (any node of the cluster when absent). */
export function agentCredentials(node?: string): grpc.ChannelCredentials {
  return processCredentials(node);
}

/** Client of the NodeAgent service at `address` (host:port). */
export class AgentClient {
  private readonly client: ServiceClient<'NodeAgent'>;

  /** `credentials`: TLS from lib/pki/grpc-credentials.ts clientCredentials(); by default the process's (setAgentCredentials; plain text unless set). */
  constructor(readonly address: string, credentials: grpc.ChannelCredentials = agentCredentials()) {
    this.client = new NodeAgentClient(address, credentials, { ...CHANNEL_OPTIONS, ...TLS_SERVER_NAME });
  }

  private unary<M extends UnaryMethod>(method: M, req: Req<M>, deadlineMs?: number): Promise<Res<M>> {
    const call = this.client[method].bind(this.client) as UnaryCall<M>;
    return new Promise((resolve, reject) => {
      call(req, { deadline: deadlineIn(deadlineMs) }, (err, res) => {
        if (err) reject(fromServiceError(err, `agent ${this.address} ${method}`));
        else resolve(res);
      });
    });
  }

  /** Waits until the agent's channel is connected, or fails with UNAVAILABLE. */
  waitReady(timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err?: Error) => {
        if (err) reject(fromServiceError({ code: grpc.status.UNAVAILABLE, details: `cannot reach agent at ${this.address}: ${err.message}` }, `agent ${this.address}`));
        else resolve();
      });
    });
  }

  /** Creates and boots a VM (booting fills guest memory: allow time for big VMs). */
  async createVm(spec: VmSpec): Promise<VmInfo> {
    return vmFromWire(await this.unary('CreateVm', { spec: specToWire(spec) }, 120_000));
  }

  /** Observes a VM's dirty pages for `windowMs` (AnalyzeVm; sends nothing). */
  async analyzeVm(name: string, windowMs: number): Promise<Wire['NodeAgent']['AnalyzeVm']['response']> {
    return this.unary('AnalyzeVm', { name, windowMs }, windowMs + 30_000);
  }

  /** Lists the VMs of this node. */
  async listVms(): Promise<VmInfo[]> {
    const res = await this.unary('ListVms', {});
    return (res.vms ?? []).map(vmFromWire);
  }

  /** One VM of this node; NOT_FOUND if absent. */
  async getVm(name: string): Promise<VmInfo> {
    return vmFromWire(await this.unary('GetVm', { name }));
  }

  /**
   * Settles a VM held paused after a migration whose outcome was unknown: resumes it here when
   * the target never ran it (or, with `force` on a direct migration, when the operator says the
   * target is gone); FAILED_PRECONDITION when it runs on the target or the outcome is still unknown.
   */
  async resumeVm(name: string, force = false): Promise<VmInfo> {
    return vmFromWire(await this.unary('ResumeVm', { name, force }, 30_000));
  }

  /** Destroys a VM of this node. */
  async destroyVm(name: string): Promise<void> {
    await this.unary('DestroyVm', { name });
  }

  /** Runs the guest's own check and reads its heartbeat. */
  async verifyVm(name: string): Promise<VerifyInfo> {
    const r = await this.unary('VerifyVm', { name }, 120_000);
    return { ...r, pagesChecked: Number(r.pagesChecked), badPages: Number(r.badPages), heartbeatBeats: Number(r.heartbeatBeats), diskAckedSeq: Number(r.diskAckedSeq ?? 0), diskDetail: r.diskDetail ?? '' };
  }

  /** Capacity, load and VMs of this node. */
  async nodeInfo(): Promise<NodeInfo> {
    return nodeInfoFromWire(await this.unary('GetNodeInfo', {}));
  }

  /**
   * Migrates `vm` from this agent to the agent at `target`, calling `onEvent` for each progress
   * event. Resolves with the result when the VM runs on the target; rejects with the error
   * otherwise (the VM then runs on this node). `targetNode` names the target's node: with TLS
   * the source streams only to a server whose certificate is that node of this cluster.
   */
  migrateVm(vm: string, target: string, policy: Partial<MigrationPolicy>, onEvent?: (e: MigrationEventInfo) => void, migrationId = '', targetNode = '',
    fence?: { vmRevision: string; job: string; attempt: number }): Promise<MigrationResult> {
    return new Promise((resolve, reject) => {
      const call = this.client.MigrateVm({ vm, target, policy: policyToWire(policy), migrationId, targetNode, fence: fence ?? null }, {});
      let result: MigrationResult | undefined;
      call.on('data', (w: Wire['NodeAgent']['MigrateVm']['response']) => {
        const ev = eventFromWire(w);
        if (ev.result) result = ev.result;
        onEvent?.(ev);
      });
      call.on('error', (err: grpc.ServiceError) => reject(fromServiceError(err, `agent ${this.address} MigrateVm`)));
      call.on('end', () => {
        if (result) resolve(result);
        else reject(fromServiceError({ code: grpc.status.INTERNAL, details: 'migration stream ended without a result' }, 'MigrateVm'));
      });
    });
  }

  /** Cancels a migration this agent runs as source; returns the phase it was cancelled in. */
  async cancelMigration(migrationId: string): Promise<string> {
    const r = await this.unary('CancelMigration', { migrationId });
    return r.phase;
  }

  /** Deprecated since protocol 2 (the target decides): checks the migration exists on the source. */
  async commitMigration(migrationId: string): Promise<void> {
    await this.unary('CommitMigration', { migrationId });
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }
}
