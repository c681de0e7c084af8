/**
 * The `qemu` hypervisor driver: each domain is one QEMU process running the Drover test guest
 * (guest/), controlled over QMP (qemu-domain.ts). QEMU does the page work of a migration itself
 * (its own dirty tracking and stream, qemu-migration.ts); the migration core decides when pre-copy
 * does not converge (migration/policy/convergence.ts) and the driver carries it out:
 *
 *   target: createIncoming(spec) → startIncoming(domain) → { socketPath }   (migrate-incoming unix:…)
 *   source: migrateOut(domain, incoming, policy, onProgress)                 (migrate unix:…)
 *
 * The node agents carry the bytes between the two unix sockets (tests and the bench use a Node
 * pipe, see unix-bridge.ts). The target autostarts when the migration completes.
 */
import type { Hypervisor, VmSpec } from '../types';
import type {
  IncomingEndpoint, IncomingOptions, StreamMigrationPolicy, StreamMigrationProgress, StreamMigrationResult,
} from '../stream-migration';
import { detectAccel, type Accel } from './accel';
import { ensureGuest } from './guest-image';
import { diskArgs, guestCmdline, validateQemuSpec } from './guest-params';
import { QemuDomain } from './qemu-domain';
import { QemuProcess } from './qemu-process';
import type { QemuNativeConfig } from './migration-tls';

export { QemuDomain } from './qemu-domain';
export { guestParams, guestCmdline, diskArgs, type GuestParams } from './guest-params';
export { stopToResumeMs, type IncomingEndpoint } from '../stream-migration';
export { nativeConfig, type QemuNativeConfig } from './migration-tls';

const MiB = 1024 * 1024;
/** Default wait for boot (and fill), ms. */
const BOOT_TIMEOUT_MS = 120_000;
/** Wait for QMP to come up, ms. */
const START_TIMEOUT_MS = 15_000;

/** Options of the driver. */
export interface QemuHypervisorOptions {
  /** QEMU binary; default qemu-system-x86_64. */
  binary?: string;
  /** Accelerator; default 'auto' (probe KVM by running a guest, else TCG). */
  accel?: Accel | 'auto';
  /** Wait for the guest's fill to finish in createDomain (default true). */
  waitReady?: boolean;
  /** Milliseconds to wait for boot (and fill); default 120000. */
  bootTimeoutMs?: number;
  /** Native migration between the QEMUs (migration-tls.ts nativeConfig); absent = the agents' tunnel only. */
  migration?: QemuNativeConfig;
}

/** The qemu driver. */
export class QemuHypervisor implements Hypervisor {
  readonly kind = 'qemu' as const;
  private readonly domains = new Set<QemuDomain>();

  constructor(private readonly opts: QemuHypervisorOptions = {}) {}

  /** The accelerator domains will use. */
  async accel(): Promise<Accel> {
    const a = this.opts.accel ?? 'auto';
    return a === 'auto' ? (await detectAccel(this.opts.binary ?? 'qemu-system-x86_64')).accel : a;
  }

  private async spawn(spec: VmSpec, incoming: boolean): Promise<QemuDomain> {
    validateQemuSpec(spec);
    const kernel = await ensureGuest();
    const accel = await this.accel();
    const proc = await QemuProcess.start({
      binary: this.opts.binary,
      accel,
      memMiB: Math.ceil(spec.memBytes / MiB),
      vcpus: spec.vcpus,
      kernel,
      append: guestCmdline(spec),
      extraArgs: diskArgs(spec),
      incoming,
      name: spec.name,
      startTimeoutMs: START_TIMEOUT_MS,
    });
    const dom = new QemuDomain(spec, proc, incoming, accel, this.opts.migration);
    this.domains.add(dom);
    proc.exited.then(() => this.domains.delete(dom));
    return dom;
  }

  /** Boots a guest; resolves once it beats (and, unless waitReady=false, has finished its fill). */
  async createDomain(spec: VmSpec): Promise<QemuDomain> {
    const dom = await this.spawn(spec, false);
    try {
      await dom.resume();
      const t = this.opts.bootTimeoutMs ?? BOOT_TIMEOUT_MS;
      await dom.waitBeats(0, t);
      if (this.opts.waitReady ?? true) await dom.whenReady(t);
    } catch (err) {
      await dom.destroy();
      throw err;
    }
    return dom;
  }

  /** Starts an empty QEMU waiting for a migration (`-incoming defer`); call startIncoming next. */
  async createIncoming(spec: VmSpec): Promise<QemuDomain> {
    return this.spawn(spec, true);
  }

  /** Makes the target listen (QemuStreamMigration.startIncoming). */
  startIncoming(dom: QemuDomain, opts: IncomingOptions = {}): Promise<IncomingEndpoint> {
    return dom.stream.startIncoming(opts);
  }

  /** Migrates `dom` to `target` (QemuStreamMigration.migrateOut). */
  migrateOut(dom: QemuDomain, target: IncomingEndpoint, policy: StreamMigrationPolicy = {}, onProgress?: (p: StreamMigrationProgress) => void): Promise<StreamMigrationResult> {
    return dom.stream.migrateOut(target, policy, onProgress);
  }

  /** Destroys every domain this driver started. */
  async close(): Promise<void> {
    await Promise.all([...this.domains].map((d) => d.destroy().catch(() => undefined)));
    this.domains.clear();
  }
}
