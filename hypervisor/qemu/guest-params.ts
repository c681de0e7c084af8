/** The QEMU guest's parameters: its command line from a VmSpec (profile defaults), disk and spec limits. */
import { validateSpec as validateSharedSpec } from '../spec';
import { invalidArgument } from '../../lib/errors';
import type { ProfileName, VmSpec } from '../types';

const MiB = 1024 * 1024;

/** Guest workload parameters as the guest's command line takes them. */
export interface GuestParams {
  profile: ProfileName;
  fillBytes: number;
  wssBytes: number;
  /** Bytes per second of working-set writes; 0 = flat out. */
  rateBytesPerSec: number;
  seed: number;
}

/** Profile defaults (fractions of RAM where sizes scale with the VM), like the sim driver's. */
export function guestParams(spec: VmSpec): GuestParams {
  const mem = spec.memBytes;
  const d: Record<ProfileName, { fill: number; wss: number; rate: number }> = {
    idle: { fill: mem / 8, wss: 1 * MiB, rate: 64 * 1024 },
    web: { fill: mem / 2, wss: 16 * MiB, rate: 16 * MiB },
    db: { fill: (mem * 3) / 4, wss: Math.min(mem / 4, 256 * MiB), rate: 64 * MiB },
    mmuncher: { fill: mem / 2, wss: Math.min(64 * MiB, mem / 4), rate: 0 },
  };
  const p = d[spec.profile];
  if (!p) throw invalidArgument(`spec.profile: unknown profile ${JSON.stringify(spec.profile)}`);
  return {
    profile: spec.profile,
    fillBytes: spec.fillBytes ?? p.fill,
    wssBytes: spec.wssBytes || p.wss,
    // mmuncher is flat out unless a rate is given; others use their default rate when 0/absent
    rateBytesPerSec: spec.dirtyRateBytesPerSec || p.rate,
    seed: spec.seed ?? 1,
  };
}

/** The guest's -append string for a spec. */
export function guestCmdline(spec: VmSpec): string {
  const g = guestParams(spec);
  const kib = (b: number) => Math.floor(b / 1024);
  return `profile=${g.profile} fill=${kib(g.fillBytes)} wss=${kib(g.wssBytes)} rate=${kib(g.rateBytesPerSec)} seed=${g.seed >>> 0}`;
}

/**
 * The VM's disk on shared storage: QEMU's own NBD client opens the export (both QEMUs of a
 * migration do; the target's copy stays inactive until the switchover, so only memory and
 * device state move). Empty when the VM has no disk.
 */
export function diskArgs(spec: VmSpec): string[] {
  if (!spec.disk) return [];
  return ['-drive', `file=${spec.disk},format=raw,if=virtio,cache=none,id=disk0`];
}

/** The shared spec rules, plus the QEMU guest's own limit (a 32-bit guest: RAM below 4 GiB). */
export function validateQemuSpec(spec: VmSpec): void {
  validateSharedSpec(spec);
  if (spec.memBytes > 3 * 1024 * MiB) throw invalidArgument(`spec.memBytes: ${spec.memBytes} > 3 GiB (the 32-bit qemu guest addresses RAM below 4 GiB only)`);
}

