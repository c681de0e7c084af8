/** Validation of a VmSpec, shared by the CLI, the agents and the control plane. */
import { invalidArgument } from '../lib/errors';
import { PAGE_SIZE, PROFILE_NAMES, type VmSpec, type ProfileName } from './types';

/** Smallest guest: 16 MiB. */
export const MIN_MEM_BYTES = 16 * 2 ** 20;
/** Largest guest the sim driver hosts: 64 GiB. */
export const MAX_MEM_BYTES = 64 * 2 ** 30;
/** Most vCPUs per VM. */
export const MAX_VCPUS = 64;
const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Checks a profile name, naming the valid ones when it is unknown. */
export function checkProfile(name: string): ProfileName {
  if (!(PROFILE_NAMES as readonly string[]).includes(name)) {
    throw invalidArgument(`unknown profile "${name}" (expected one of: ${PROFILE_NAMES.join(', ')})`);
  }
  return name as ProfileName;
}

/** Throws INVALID_ARGUMENT naming the first bad field of `spec`. */
export function validateSpec(spec: VmSpec): VmSpec {
  if (!NAME.test(spec.name ?? '')) throw invalidArgument(`VM name "${spec.name}" is invalid (lower-case letters, digits and '-', at most 63, starting with a letter or digit)`);
  if (!Number.isSafeInteger(spec.memBytes) || spec.memBytes < MIN_MEM_BYTES || spec.memBytes > MAX_MEM_BYTES) {
    throw invalidArgument(`memory ${spec.memBytes} bytes for VM ${spec.name} is out of range (16 MiB to 64 GiB)`);
  }
  if (spec.memBytes % PAGE_SIZE !== 0) throw invalidArgument(`memory ${spec.memBytes} bytes for VM ${spec.name} is not a multiple of the ${PAGE_SIZE}-byte page`);
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > MAX_VCPUS) throw invalidArgument(`vcpus ${spec.vcpus} for VM ${spec.name} is out of range (1 to ${MAX_VCPUS})`);
  checkProfile(spec.profile);
  for (const k of ['wssBytes', 'dirtyRateBytesPerSec', 'fillBytes'] as const) {
    const v = spec[k];
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw invalidArgument(`${k} ${v} for VM ${spec.name} must be a non-negative number`);
  }
  if (spec.wssBytes !== undefined && spec.wssBytes > spec.memBytes) throw invalidArgument(`working set ${spec.wssBytes} bytes exceeds the VM's memory ${spec.memBytes}`);
  if (spec.fillBytes !== undefined && spec.fillBytes > spec.memBytes) throw invalidArgument(`fill ${spec.fillBytes} bytes exceeds the VM's memory ${spec.memBytes}`);
  if (spec.disk !== undefined && spec.disk !== '' && !/^nbd:\/\/[^/:]+:[0-9]+\/.+$/.test(spec.disk)) throw invalidArgument(`disk "${spec.disk}" is not nbd://HOST:PORT/EXPORT`);
  return spec;
}
