/**
 * The VMs a node agent hosts and the migrations coming in: capacity accounting, lookups and
 * the VM/node snapshots the API returns. Owns both maps; the migration handlers change them
 * only through its methods.
 */
import { DroverError, notFound } from '../../lib/errors';
import type { Domain, VmSpec } from '../../hypervisor/types';
import type { MigrationPhase } from '../../migration/types';
import type { OutgoingEngine } from '../../migration/strategy/outgoing';
import type { IncomingSession } from '../../migration/strategy/incoming';
import type { SwitchoverOutcome } from '../../migration/precopy/precopy-source';
import { PROTOCOL_VERSION } from '../../migration/wire/protocol';
import type { NodeInfo, VmInfo } from './client/agent-codec';
import { StoragePolicy } from './storage-policy';

/** Capacity this agent offers. */
export interface AgentCapacity {
  memBytes: number;
  vcpus: number;
}

/** An outgoing migration of a hosted VM: reserving on the target, then running its engine. */
export type OutgoingState = {
  readonly id: string;
  /** Cancels the migration. */
  readonly abort: AbortController;
} & ({ readonly stage: 'reserving' } | { readonly stage: 'running'; readonly engine: OutgoingEngine });

/** The phase of an outgoing migration. */
export function outgoingPhase(o: OutgoingState): MigrationPhase {
  return o.stage === 'reserving' ? 'reserving' : o.engine.currentPhase;
}

/**
 * A VM left paused here because a migration's outcome after Complete could not be learned: the
 * guest may run on the target, so nothing resumes or migrates it until `resolve` (asking the
 * target or etcd again) or an operator's forced resume settles it (OutgoingMigrations.resume).
 */
export interface HeldSwitchover {
  readonly migrationId: string;
  /** The target's address (and node name when known), as the operator would look it up. */
  readonly target: string;
  /** When the VM was left paused (epoch ms). */
  readonly sinceMs: number;
  /** A cluster migration (etcd decides the owner; never forced) rather than a direct one. */
  readonly cluster: boolean;
  /** Asks again who owns the VM: 'owned' (it runs on the target), 'refused' (it never resumed there), or still 'unknown'/'lost'. */
  readonly resolve: () => Promise<SwitchoverOutcome>;
}

/** One VM this node runs. */
export interface HostedVm {
  domain: Domain;
  /** Set while the VM migrates out. */
  outgoing?: OutgoingState;
  /** Set while the VM stays paused after a migration whose outcome is unknown. */
  held?: HeldSwitchover;
}

/** How `vm list` and `vm show` name a held VM: which migration, which target, since when. */
export function heldReason(h: HeldSwitchover): string {
  return `paused since ${new Date(h.sinceMs).toISOString()}: migration ${h.migrationId} to ${h.target} ended with its outcome unknown (the guest may run there)`;
}

/**
 * Most incoming reservations (being prepared, prepared or receiving) one source node may hold on
 * this node. A source migrates a few VMs at once (the migrator runs at most 2 per node); more is
 * a runaway or hostile caller tying up this node's capacity with reservations it never uses.
 */
export const MAX_RESERVATIONS_PER_SOURCE = 4;

/** A reservation whose empty domain is still being created. */
interface PendingReservation {
  readonly spec: VmSpec;
  readonly source: string;
}

/** The node's VMs and incoming migrations. */
export class VmHost {
  private readonly vms = new Map<string, HostedVm>();
  private readonly incoming = new Map<string, IncomingSession>();
  private readonly pending = new Map<string, PendingReservation>();
  private readonly sourceOf = new Map<string, string>();
  private readonly creating = new Map<string, VmSpec>();

  constructor(private readonly nodeId: string, private readonly hypervisorKind: string, private readonly capacity: AgentCapacity,
    private readonly storage: StoragePolicy = StoragePolicy.fromEnv()) {}

  /** The hosted VM `name`, or NOT_FOUND. */
  get(name: string): HostedVm {
    const v = this.vms.get(name);
    if (!v) throw notFound(`VM ${name} is not on node ${this.nodeId}`);
    return v;
  }

  /** Every hosted VM by name. */
  entries(): IterableIterator<[string, HostedVm]> {
    return this.vms.entries();
  }

  /** True when `name` runs here or migrates in. */
  hasVm(name: string, includeIncoming: boolean): boolean {
    return this.vms.has(name) || (includeIncoming && ([...this.incoming.values()].some((m) => m.domain.spec.name === name) || [...this.pending.values()].some((p) => p.spec.name === name)));
  }

  /**
   * Reserves a VM being created (CreateVm) in one synchronous step, as reserveIncoming does:
   * ALREADY_EXISTS for a name hosted, migrating in or being created, then reserveCapacity.
   * `add` or `releaseCreating` ends it.
   */
  reserveVm(spec: VmSpec): void {
    if (this.hasVm(spec.name, true) || this.creating.has(spec.name)) throw new DroverError('ALREADY_EXISTS', `VM ${spec.name} already exists on node ${this.nodeId}`);
    this.reserveCapacity(spec);
    this.creating.set(spec.name, spec);
  }

  /** Gives up the reservation of a VM whose domain could not be created. */
  releaseCreating(name: string): void {
    this.creating.delete(name);
  }

  /** Hosts `domain` (a created VM or an activated incoming one). */
  add(domain: Domain): HostedVm {
    this.creating.delete(domain.spec.name);
    const v: HostedVm = { domain };
    this.vms.set(domain.spec.name, v);
    return v;
  }

  /** Stops hosting `name` (destroyed or migrated away). */
  remove(name: string): void {
    this.vms.delete(name);
  }

  /** The hosted VM whose outgoing migration is `id`. */
  findOutgoing(id: string): HostedVm | undefined {
    for (const v of this.vms.values()) if (v.outgoing?.id === id) return v;
    return undefined;
  }

  /** The incoming migration `id`. */
  incomingById(id: string): IncomingSession | undefined {
    return this.incoming.get(id);
  }

  /**
   * Reserves capacity for incoming migration `id` from node `source`, in one synchronous step
   * (no await between the checks and the reservation, so concurrent calls cannot overcommit).
   * ALREADY_EXISTS when `id` is reserved or being reserved; RESOURCE_EXHAUSTED beyond
   * MAX_RESERVATIONS_PER_SOURCE or the free capacity. `addIncoming` or `releasePending` ends it.
   */
  reserveIncoming(id: string, spec: VmSpec, source: string): void {
    if (this.incoming.has(id) || this.pending.has(id)) throw new DroverError('ALREADY_EXISTS', `migration ${id} is already prepared on node ${this.nodeId}`);
    let held = 0;
    for (const p of this.pending.values()) if (p.source === source) held++;
    for (const s of this.sourceOf.values()) if (s === source) held++;
    if (held >= MAX_RESERVATIONS_PER_SOURCE) {
      throw new DroverError('RESOURCE_EXHAUSTED', `source node ${source} already holds ${held} incoming reservations on node ${this.nodeId} (limit ${MAX_RESERVATIONS_PER_SOURCE} per source)`);
    }
    this.reserveCapacity(spec);
    this.pending.set(id, { spec, source });
  }

  /** Gives up a reservation whose domain could not be created. */
  releasePending(id: string): void {
    this.pending.delete(id);
  }

  /** Records a prepared incoming migration (ends its pending reservation). */
  addIncoming(m: IncomingSession, source = ''): void {
    const p = this.pending.get(m.migrationId);
    this.pending.delete(m.migrationId);
    this.incoming.set(m.migrationId, m);
    this.sourceOf.set(m.migrationId, p?.source ?? source);
  }

  /** Forgets the incoming migration `id`; false when it was not there. */
  removeIncoming(id: string): boolean {
    this.sourceOf.delete(id);
    return this.incoming.delete(id);
  }

  /** Every incoming migration. */
  incomingSessions(): IterableIterator<IncomingSession> {
    return this.incoming.values();
  }

  /** Number of incoming reservations/migrations. */
  get incomingCount(): number {
    return this.incoming.size;
  }

  /** The VM a migration concerns (incoming or outgoing), for log lines. */
  vmOfMigration(id: string): string | undefined {
    return this.incoming.get(id)?.domain.spec.name ?? [...this.vms].find(([, v]) => v.outgoing?.id === id)?.[0];
  }

  private used(): { mem: number; vcpus: number } {
    let mem = 0, vcpus = 0;
    for (const v of this.vms.values()) { mem += v.domain.spec.memBytes; vcpus += v.domain.spec.vcpus; }
    for (const m of this.incoming.values()) { mem += m.domain.spec.memBytes; vcpus += m.domain.spec.vcpus; }
    for (const p of this.pending.values()) { mem += p.spec.memBytes; vcpus += p.spec.vcpus; }
    for (const c of this.creating.values()) { mem += c.memBytes; vcpus += c.vcpus; }
    return { mem, vcpus };
  }

  /**
   * Admits `spec` (CreateVm, PrepareIncoming): FAILED_PRECONDITION unless its disk is on an
   * allowed storage endpoint (storage-policy.ts); RESOURCE_EXHAUSTED unless it fits in what is free.
   */
  reserveCapacity(spec: VmSpec): void {
    this.storage.check(spec.disk, spec.name);
    const used = this.used();
    const freeMem = this.capacity.memBytes - used.mem;
    if (spec.memBytes > freeMem) {
      throw new DroverError('RESOURCE_EXHAUSTED', `node ${this.nodeId} has ${freeMem} bytes of memory free, VM ${spec.name} needs ${spec.memBytes}`);
    }
    const freeCpu = this.capacity.vcpus - used.vcpus;
    if (spec.vcpus > freeCpu) throw new DroverError('RESOURCE_EXHAUSTED', `node ${this.nodeId} has ${freeCpu} vCPUs free, VM ${spec.name} needs ${spec.vcpus}`);
  }

  /** A snapshot of one hosted VM. */
  vmInfo(name: string, v: HostedVm): VmInfo {
    const st = v.domain.stats();
    const hb = v.domain.heartbeat();
    return {
      spec: v.domain.spec, state: v.outgoing ? 'migrating' : v.domain.state(), nodeId: this.nodeId,
      dirtyRateBytesPerSec: st.dirtyRateBytesPerSec, touchedBytes: st.touchedBytes, cpu: st.cpu,
      heartbeatBeats: hb.beats, heartbeatLastMs: hb.lastBeatMs, heartbeatMaxGapMs: hb.maxGapMs,
      heartbeatResumeGapMs: hb.resumeGapMs ?? -1, held: v.held ? heldReason(v.held) : '',
    };
  }

  /** A snapshot of this node's capacity, load and VMs. */
  nodeInfo(): NodeInfo {
    const used = this.used();
    return {
      nodeId: this.nodeId, hypervisor: this.hypervisorKind, memTotalBytes: this.capacity.memBytes, memUsedBytes: used.mem,
      vcpusTotal: this.capacity.vcpus, vcpusUsed: used.vcpus, protocolVersion: PROTOCOL_VERSION,
      vms: [...this.vms.entries()].map(([n, v]) => this.vmInfo(n, v)),
    };
  }
}
