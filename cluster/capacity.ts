/**
 * Capacity checks of the whole control plane in one place: does a VM fit on a node, and if not,
 * what is short. Pure (no I/O); the agent (on create and on an incoming migration), job
 * creation, the operations module and the scheduler all word a shortfall the same way.
 */

/** Resources of a node or a VM. `vcpus: Infinity` leaves vCPUs unchecked. */
export interface Resources {
  memBytes: number;
  vcpus: number;
}

/** What a VM asks for: its name (named in the message) and its resources. */
export interface ResourceRequest extends Resources {
  name: string;
}

const MiB = 2 ** 20;

/** Bytes as MiB: whole when exact (`128 MiB`), else two decimals (`0.50 MiB`). */
export function formatMiB(bytes: number): string {
  return `${(bytes / MiB).toFixed(bytes % MiB === 0 ? 0 : 2)} MiB`;
}

/**
 * Why `vm` does not fit on `node` with `capacity` of which `used` is taken, or undefined when it
 * fits. Memory is checked first. Messages:
 *   `node N has 128 MiB free, VM "web-1" needs 256 MiB`
 *   `node N has 2 vCPU(s) free, VM "web-1" needs 4`
 */
export function capacityShortfall(node: string, capacity: Resources, used: Resources, vm: ResourceRequest): string | undefined {
  const freeMem = capacity.memBytes - used.memBytes;
  if (vm.memBytes > freeMem) return `node ${node} has ${formatMiB(freeMem)} free, VM "${vm.name}" needs ${formatMiB(vm.memBytes)}`;
  const freeCpu = capacity.vcpus - used.vcpus;
  if (vm.vcpus > freeCpu) return `node ${node} has ${freeCpu} vCPU(s) free, VM "${vm.name}" needs ${vm.vcpus}`;
  return undefined;
}
