/**
 * VmSpec on the wire (drover.v1.VmSpec): the one codec both the control API and the data
 * plane's PrepareIncoming use. Protobuf objects stop here; the domain speaks VmSpec.
 */
import type { VmSpec, ProfileName } from '../../hypervisor/types';
import type * as wire from '../../proto/generated/drover-v1';

/** VmSpec → wire. */
export function specToWire(s: VmSpec): wire.VmSpec {
  return {
    name: s.name, memBytes: s.memBytes, vcpus: s.vcpus, profile: s.profile,
    wssBytes: s.wssBytes ?? 0, dirtyRateBytesPerSec: s.dirtyRateBytesPerSec ?? 0,
    fillBytes: s.fillBytes ?? 0, fillSet: s.fillBytes !== undefined,
    disk: s.disk ?? '', seed: s.seed ?? 0, hypervisor: '',
  };
}

/** Wire → VmSpec (profile validated later by the agent); a missing spec yields one that validation refuses. */
export function specFromWire(spec: Partial<wire.VmSpec> | null | undefined): VmSpec {
  const w = spec ?? {};
  const s: VmSpec = { name: w.name ?? '', memBytes: Number(w.memBytes ?? 0), vcpus: w.vcpus ?? 0, profile: (w.profile ?? '') as ProfileName };
  if (w.wssBytes) s.wssBytes = Number(w.wssBytes);
  if (w.dirtyRateBytesPerSec) s.dirtyRateBytesPerSec = Number(w.dirtyRateBytesPerSec);
  if (w.fillSet) s.fillBytes = Number(w.fillBytes);
  if (w.disk) s.disk = w.disk;
  if (w.seed) s.seed = w.seed;
  return s;
}
