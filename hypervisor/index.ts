/** Driver selection: `--hypervisor sim|qemu` to a Hypervisor. */
import { invalidArgument } from '../lib/errors';
import type { Hypervisor } from './types';
import { SimHypervisor } from './sim/sim-hypervisor';
import type { QemuNativeConfig } from './qemu/migration-tls';

/** Names accepted by `--hypervisor`. */
export const HYPERVISOR_KINDS = ['sim', 'qemu'] as const;

/** Creates the driver named `kind`. */
export function createHypervisor(kind: string, opts: { qemuBinary?: string; qemuMigration?: QemuNativeConfig } = {}): Hypervisor {
  switch (kind) {
    case 'sim':
      return new SimHypervisor();
    case 'qemu': {
      // Loaded lazily: the QEMU driver is only needed on nodes that run it.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy load keeps QEMU's modules off sim-only nodes, in a synchronous factory
      const mod = require('./qemu/qemu-hypervisor');
      return new mod.QemuHypervisor({ binary: opts.qemuBinary || process.env.DROVER_QEMU_BINARY || undefined, migration: opts.qemuMigration });
    }
    default:
      throw invalidArgument(`unknown hypervisor "${kind}" (expected one of: ${HYPERVISOR_KINDS.join(', ')})`);
  }
}
