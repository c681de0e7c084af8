/**
 * A typed client of one node agent (control API). Every call has a deadline; failures come
 * back as DroverErrors naming the agent and the call (see lib/grpc-status.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { serviceDefinition } from '../../../proto/load';
import { deadlineIn, fromServiceError } from '../../../lib/grpc-status';
import { CHANNEL_OPTIONS } from '../../../lib/grpc-channel';

export { CHANNEL_OPTIONS };
import type { VmSpec } from '../../../hypervisor/types';
import type { MigrationPolicy, MigrationResult } from '../../../migration/types';
import {
  type NodeInfo, type VmInfo, type VerifyInfo, type MigrationEventInfo,
  specToWire, vmFromWire, nodeInfoFromWire, policyToWire, eventFromWire,
} from './agent-codec';

const NodeAgentClient = grpc.makeGenericClientConstructor(serviceDefinition('NodeAgent'), 'NodeAgent');


/** Client of the NodeAgent service at `address` (host:port). */
export class AgentClient {
  private readonly client: grpc.Client & Record<string, any>;

  constructor(readonly address: string) {
    this.client = new NodeAgentClient(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as any;
  }

  private unary<T>(method: string, req: object, deadlineMs?: number): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method](req, { deadline: deadlineIn(deadlineMs) }, (err: grpc.ServiceError | null, res: T) => {
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

  /** Lists the VMs of this node. */
  async listVms(): Promise<VmInfo[]> {
    const res = await this.unary<any>('ListVms', {});
    return (res.vms ?? []).map(vmFromWire);
  }

  /** One VM of this node; NOT_FOUND if absent. */
  async getVm(name: string): Promise<VmInfo> {
    return vmFromWire(await this.unary('GetVm', { name }));
  }

  /** Destroys a VM of this node. */
  async destroyVm(name: string): Promise<void> {
    await this.unary('DestroyVm', { name });
  }

  /** Runs the guest's own check and reads its heartbeat. */
  async verifyVm(name: string): Promise<VerifyInfo> {
    const r = await this.unary<any>('VerifyVm', { name }, 120_000);
    return { ...r, pagesChecked: Number(r.pagesChecked), badPages: Number(r.badPages), heartbeatBeats: Number(r.heartbeatBeats), diskAckedSeq: Number(r.diskAckedSeq ?? 0), diskDetail: r.diskDetail ?? '' };
  }

  /** Capacity, load and VMs of this node. */
  async nodeInfo(): Promise<NodeInfo> {
    return nodeInfoFromWire(await this.unary('GetNodeInfo', {}));
  }

  /**
   * Migrates `vm` from this agent to the agent at `target`, calling `onEvent` for each progress
   * event. Resolves with the result when the VM runs on the target; rejects with the error
   * otherwise (the VM then runs on this node).
   */
  migrateVm(vm: string, target: string, policy: Partial<MigrationPolicy>, onEvent?: (e: MigrationEventInfo) => void, migrationId = ''): Promise<MigrationResult> {
    return new Promise((resolve, reject) => {
      const call = this.client.MigrateVm({ vm, target, policy: policyToWire(policy), migrationId }, {});
      let result: MigrationResult | undefined;
      call.on('data', (w: any) => {
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
    const r = await this.unary<any>('CancelMigration', { migrationId });
    return r.phase;
  }

  /** Tells the source to activate the target (externally committed migrations). */
  async commitMigration(migrationId: string): Promise<void> {
    await this.unary('CommitMigration', { migrationId });
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }
}
