/**
 * The sim driver's device state: a 64-byte little-endian header, the vCPU register files, and
 * (for a VM with a disk) a versioned disk section (disk-device.ts) carrying the WAL state.
 *   0 u32 magic 'DRDS' | 4 u32 version | 8 u32 vcpus | 12 u32 profile code
 *   16 f64 memBytes | 24 f64 wssBytes | 32 f64 dirty rate | 40 f64 fillBytes
 *   48 u32 register bytes per vCPU | 52 u32 FNV-1a of the registers | 56..63 reserved
 */
import type { ProfileName, VmSpec } from '../types';
import { PROFILE_CODES, REG_BYTES, fnv1a } from './layout';
import type { ResolvedProfile } from './profiles';
import { DISK_SECTION_HEADER_BYTES, decodeDiskSection, encodeDiskSection, type DiskSection } from './disk-device';

/** Device state header magic: 'DRDS'. */
export const DEVICE_STATE_MAGIC = 0x44524453;
/** Device state format version. */
export const DEVICE_STATE_VERSION = 1;
/** Bytes of the device state header. */
export const DEVICE_STATE_HEADER_BYTES = 64;

const CODE_TO_PROFILE = new Map<number, ProfileName>(
  (Object.entries(PROFILE_CODES) as [ProfileName, number][]).map(([n, c]) => [c, n]),
);

/** Encodes the header, the register files of every vCPU and the disk section (when given). */
export function encodeDeviceState(spec: VmSpec, workload: ResolvedProfile, registers: Uint8Array[], disk?: DiskSection): Uint8Array {
  const n = registers.length;
  const out = new Uint8Array(DEVICE_STATE_HEADER_BYTES + n * REG_BYTES);
  for (let i = 0; i < n; i++) out.set(registers[i], DEVICE_STATE_HEADER_BYTES + i * REG_BYTES);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, DEVICE_STATE_MAGIC, true);
  dv.setUint32(4, DEVICE_STATE_VERSION, true);
  dv.setUint32(8, n, true);
  dv.setUint32(12, PROFILE_CODES[spec.profile], true);
  dv.setFloat64(16, spec.memBytes, true);
  dv.setFloat64(24, workload.wssBytes, true);
  dv.setFloat64(32, workload.dirtyRateBytesPerSec, true);
  dv.setFloat64(40, workload.fillBytes, true);
  dv.setUint32(48, REG_BYTES, true);
  dv.setUint32(52, fnv1a(out.subarray(DEVICE_STATE_HEADER_BYTES)), true);
  if (disk) return Buffer.concat([out, encodeDiskSection(disk)]);
  return out;
}

/** Checks the header against the domain (`who` names it in errors). */
function checkHeader(dv: DataView, spec: VmSpec, workload: ResolvedProfile, who: string): void {
  const magic = dv.getUint32(0, true);
  if (magic !== DEVICE_STATE_MAGIC) {
    throw new Error(`${who}: not a sim device state (magic 0x${magic.toString(16)}, expected 0x${DEVICE_STATE_MAGIC.toString(16)})`);
  }
  const version = dv.getUint32(4, true);
  if (version !== DEVICE_STATE_VERSION) {
    throw new Error(`${who}: device state version ${version} not supported (this driver reads version ${DEVICE_STATE_VERSION})`);
  }
  const vcpus = dv.getUint32(8, true);
  if (vcpus !== spec.vcpus) {
    throw new Error(`${who}: device state has ${vcpus} vCPUs, domain has ${spec.vcpus}`);
  }
  const code = dv.getUint32(12, true);
  if (code !== PROFILE_CODES[spec.profile]) {
    throw new Error(`${who}: device state is for profile '${CODE_TO_PROFILE.get(code) ?? `#${code}`}', domain runs '${spec.profile}'`);
  }
  const mem = dv.getFloat64(16, true);
  if (mem !== spec.memBytes) {
    throw new Error(`${who}: device state is for ${mem} bytes of RAM, domain has ${spec.memBytes}`);
  }
  const fields: [string, number, number][] = [
    ['wssBytes', dv.getFloat64(24, true), workload.wssBytes],
    ['dirtyRateBytesPerSec', dv.getFloat64(32, true), workload.dirtyRateBytesPerSec],
    ['fillBytes', dv.getFloat64(40, true), workload.fillBytes],
  ];
  for (const [k, got, want] of fields) {
    if (got !== want) throw new Error(`${who}: device state has ${k} ${got}, domain has ${want}`);
  }
  const regBytes = dv.getUint32(48, true);
  if (regBytes !== REG_BYTES) {
    throw new Error(`${who}: device state has ${regBytes}-byte register files, expected ${REG_BYTES}`);
  }
}

/**
 * Checks a device state against the domain (header, disk section presence, size, checksum) and
 * returns the register file of each vCPU and the disk section, if any. Throws naming `who`.
 */
export function decodeDeviceState(state: Uint8Array, spec: VmSpec, workload: ResolvedProfile, hasDisk: boolean, who: string): { registers: Uint8Array[]; section: DiskSection | undefined } {
  if (!(state instanceof Uint8Array) || state.length < DEVICE_STATE_HEADER_BYTES) {
    throw new Error(`${who}: device state of ${state?.length ?? 0} bytes is shorter than its ${DEVICE_STATE_HEADER_BYTES}-byte header`);
  }
  const dv = new DataView(state.buffer, state.byteOffset, state.byteLength);
  checkHeader(dv, spec, workload, who);
  const vcpus = spec.vcpus;
  const want = DEVICE_STATE_HEADER_BYTES + vcpus * REG_BYTES;
  const hasSection = state.length >= want + DISK_SECTION_HEADER_BYTES;
  if (hasSection !== hasDisk) {
    throw new Error(hasDisk
      ? `${who}: device state carries no disk section, but the domain has disk ${spec.disk}`
      : `${who}: device state carries a disk section, but the domain has no disk`);
  }
  const section = hasSection ? decodeDiskSection(state.subarray(want), who) : undefined;
  if (section) state = state.subarray(0, want);
  if (state.length !== want) {
    throw new Error(`${who}: device state is ${state.length} bytes, expected ${want}`);
  }
  const body = state.subarray(DEVICE_STATE_HEADER_BYTES);
  if (fnv1a(body) !== dv.getUint32(52, true)) {
    throw new Error(`${who}: device state checksum mismatch (corrupted in transit?)`);
  }
  const registers: Uint8Array[] = [];
  for (let i = 0; i < vcpus; i++) registers.push(body.subarray(i * REG_BYTES, (i + 1) * REG_BYTES));
  return { registers, section };
}
