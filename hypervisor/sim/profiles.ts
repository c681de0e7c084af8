/**
 * Workload profiles of the sim guest and their defaults.
 *
 * | profile    | writable working set (WWS)         | dirty rate            | pattern in the WWS            | boot fill (default)          |
 * |------------|------------------------------------|-----------------------|-------------------------------|------------------------------|
 * | `idle`     | 1 MiB                              | 1 MiB/s               | uniform random                | 12.5% of RAM, at most 64 MiB |
 * | `web`      | 16 MiB                             | 100 MiB/s             | uniform random (small hot set)| 25% of RAM, at most 192 MiB  |
 * | `db`       | 25% of RAM, at most 256 MiB        | 200 MiB/s             | zipfian (~1/rank, hot head)   | 25% of RAM, at most 192 MiB  |
 * | `mmuncher` | 64 MiB                             | unlimited (as fast as the vCPU can: several GB/s) | sequential sweep | 25% of RAM, at most 192 MiB |
 *
 * - `VmSpec.wssBytes`, `dirtyRateBytesPerSec` (0/absent = default) and `fillBytes` (absent =
 *   default; 0 = no fill) override the table.
 * - Everything is clamped to the data area (RAM minus the header page and the version index) and
 *   rounded up to whole pages.
 * - The WWS and the fill both start at the first data page, so the WWS lies inside the filled
 *   (touched) RAM unless it is larger than the fill. Pages are interleaved between vCPUs (page k
 *   of the area belongs to vCPU k mod vcpus), so no two vCPUs ever write the same page.
 * - The rate is shared equally between vCPUs and paced by a token bucket read from the clock.
 * - The boot fill is capped (not proportional beyond the cap) so that large VMs boot fast and an
 *   8 GiB idle VM touches only 64 MiB: first-touch page faults cost ~10-20 us/page on this
 *   machine class (Firecracker guest), so 192 MiB already takes ~0.5-0.9 s to boot on one vCPU.
 */

import { PAGE_SIZE, PROFILE_NAMES, ProfileName, VmSpec } from '../types';
import { guestLayout } from './layout';

/** How a profile picks the next page in its WWS. */
export type WritePattern = 'uniform' | 'zipf' | 'sequential';

/** One profile's defaults. */
export interface ProfileDefaults {
  name: ProfileName;
  description: string;
  /** Fixed WWS in bytes (used when wssFraction is 0). */
  wssBytes: number;
  /** WWS as a fraction of RAM (0 = use wssBytes), capped at wssCapBytes. */
  wssFraction: number;
  wssCapBytes: number;
  /** Bytes dirtied per second; Infinity = as fast as the vCPU can. */
  dirtyRateBytesPerSec: number;
  /** Boot fill as a fraction of RAM, capped at fillCapBytes. */
  fillFraction: number;
  fillCapBytes: number;
  pattern: WritePattern;
}

const MiB = 1024 * 1024;

/** The profile table (see the file comment for the same in prose). */
export const PROFILES: Readonly<Record<ProfileName, ProfileDefaults>> = {
  idle: {
    name: 'idle',
    description: 'an idle guest: a 1 MiB working set touched at 1 MiB/s',
    wssBytes: 1 * MiB,
    wssFraction: 0,
    wssCapBytes: 0,
    dirtyRateBytesPerSec: 1 * MiB,
    fillFraction: 0.125,
    fillCapBytes: 64 * MiB,
    pattern: 'uniform',
  },
  web: {
    name: 'web',
    description: 'a web server: small hot working set (16 MiB) rewritten at 100 MiB/s',
    wssBytes: 16 * MiB,
    wssFraction: 0,
    wssCapBytes: 0,
    dirtyRateBytesPerSec: 100 * MiB,
    fillFraction: 0.25,
    fillCapBytes: 192 * MiB,
    pattern: 'uniform',
  },
  db: {
    name: 'db',
    description: 'a database: zipfian writes over 25% of RAM (max 256 MiB) at 200 MiB/s',
    wssBytes: 0,
    wssFraction: 0.25,
    wssCapBytes: 256 * MiB,
    dirtyRateBytesPerSec: 200 * MiB,
    fillFraction: 0.25,
    fillCapBytes: 192 * MiB,
    pattern: 'zipf',
  },
  mmuncher: {
    name: 'mmuncher',
    description: 'a memory muncher: sweeps a 64 MiB working set as fast as it can (faster than any link)',
    wssBytes: 64 * MiB,
    wssFraction: 0,
    wssCapBytes: 0,
    dirtyRateBytesPerSec: Number.POSITIVE_INFINITY,
    fillFraction: 0.25,
    fillCapBytes: 192 * MiB,
    pattern: 'sequential',
  },
};

/** The effective workload parameters of a spec. */
export interface ResolvedProfile {
  profile: ProfileName;
  pattern: WritePattern;
  /** Effective WWS in bytes (whole pages, within the data area). */
  wssBytes: number;
  wssPages: number;
  /** Effective dirty rate in bytes/s; Infinity = unlimited. */
  dirtyRateBytesPerSec: number;
  /** Effective boot fill in bytes (whole pages, within the data area). */
  fillBytes: number;
  fillPages: number;
}

function pagesOf(bytes: number, maxPages: number): number {
  if (!Number.isFinite(bytes) || bytes <= 0) return 0;
  return Math.min(maxPages, Math.ceil(bytes / PAGE_SIZE));
}

/** Effective WWS, dirty rate and fill of a spec: the profile defaults overridden by the spec. */
export function resolveProfile(
  spec: Pick<VmSpec, 'memBytes' | 'profile' | 'wssBytes' | 'dirtyRateBytesPerSec' | 'fillBytes'>,
): ResolvedProfile {
  const p = PROFILES[spec.profile];
  if (!p) {
    throw new Error(`unknown profile '${String(spec.profile)}' (known: ${PROFILE_NAMES.join(', ')})`);
  }
  const { dataPages } = guestLayout(spec.memBytes);
  const defaultWss = p.wssFraction > 0 ? Math.min(p.wssFraction * spec.memBytes, p.wssCapBytes) : p.wssBytes;
  const wssPages = Math.max(1, pagesOf(spec.wssBytes ? spec.wssBytes : defaultWss, dataPages));
  const rate = spec.dirtyRateBytesPerSec ? spec.dirtyRateBytesPerSec : p.dirtyRateBytesPerSec;
  const defaultFill = Math.min(p.fillFraction * spec.memBytes, p.fillCapBytes);
  const fillPages = pagesOf(spec.fillBytes === undefined ? defaultFill : spec.fillBytes, dataPages);
  return {
    profile: p.name,
    pattern: p.pattern,
    wssBytes: wssPages * PAGE_SIZE,
    wssPages,
    dirtyRateBytesPerSec: rate,
    fillBytes: fillPages * PAGE_SIZE,
    fillPages,
  };
}
