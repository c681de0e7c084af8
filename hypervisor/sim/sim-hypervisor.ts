/**
 * The `sim` hypervisor driver: userspace VMs whose vCPUs are worker threads (sim-domain.ts).
 * The sim driver migrates page by page: each domain offers page access to the engine.
 */
import type { Hypervisor, VmSpec } from '../types';
import { hashString } from './layout';
import { SimDiskDevice } from './disk-device';
import { SimDomain, type SimHypervisorOptions } from './sim-domain';

export { SimDomain, MAX_THROTTLE, type SimHypervisorOptions } from './sim-domain';
export { DEVICE_STATE_MAGIC, DEVICE_STATE_VERSION, DEVICE_STATE_HEADER_BYTES } from './device-state';
/** Checks a VmSpec; throws INVALID_ARGUMENT naming the bad field (shared with every driver). */
export { validateSpec } from '../spec';

/** The sim driver. */
export class SimHypervisor implements Hypervisor {
  readonly kind = 'sim' as const;
  private readonly domains = new Set<SimDomain>();
  private readonly opts: Required<SimHypervisorOptions>;

  constructor(opts: SimHypervisorOptions = {}) {
    this.opts = {
      heartbeatMs: opts.heartbeatMs ?? 0.1,
      pauseTimeoutMs: opts.pauseTimeoutMs ?? 10_000,
      disk: opts.disk ?? {},
    };
  }

  /** Creates a domain, boots the guest (boot fill) and resolves once it runs. */
  async createDomain(spec: VmSpec): Promise<SimDomain> {
    const d = new SimDomain(spec, false, this.opts, (x) => this.domains.delete(x));
    if (spec.disk) {
      d.disk = await SimDiskDevice.open(spec.disk, spec.name, this.opts.disk);
      try { await d.disk.format(spec.seed ?? hashString(spec.name)); } catch (e) { await d.disk.close(); throw e; }
    }
    this.domains.add(d);
    await d.start(true);
    d.disk?.start();
    return d;
  }

  /** Creates a zeroed, paused domain whose vCPU threads are already started (and parked). */
  async createIncoming(spec: VmSpec): Promise<SimDomain> {
    const d = new SimDomain(spec, true, this.opts, (x) => this.domains.delete(x));
    // The target checks it can reach the VM's disk before saying yes (FAILED_PRECONDITION).
    if (spec.disk) d.disk = await SimDiskDevice.open(spec.disk, spec.name, this.opts.disk, 'incoming');
    this.domains.add(d);
    await d.start(false);
    return d;
  }

  /** Domains alive on this driver. */
  list(): SimDomain[] {
    return [...this.domains];
  }

  async close(): Promise<void> {
    await Promise.all([...this.domains].map((d) => d.destroy()));
  }
}
