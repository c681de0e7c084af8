/**
 * QEMU's own dirty-rate measurement: `calc-dirty-rate` then `query-dirty-rate` until it reads
 * `measured` (QEMU 7.2: calc-time in whole seconds, the result in whole MiB/s).
 *
 * Method: under KVM `dirty-bitmap` (every page, from KVM's dirty log), falling back to
 * `page-sampling` when QEMU refuses it; under TCG `page-sampling` only (it hashes a sample of
 * pages at the start and the end of the window): QEMU 7.2 under TCG dies of a segmentation
 * fault on `dirty-bitmap` and `dirty-ring` instead of refusing them, so they are never tried.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DroverError } from '../../lib/errors';
import type { DirtyRateMeasurement } from '../types';
import type { Accel } from './accel';
import type { QmpClient } from './qmp-client';

/** QEMU's measurement modes this driver uses. */
export type QemuDirtyRateMode = 'dirty-bitmap' | 'page-sampling';

/** Sampled pages per GiB in page-sampling: QEMU's maximum (its default, 512, leaves a 256 MiB guest 128 samples). */
export const SAMPLE_PAGES_PER_GIB = 4096;
/** Poll period of query-dirty-rate once the window has passed, ms. */
const POLL_MS = 100;
/** How long past the window QEMU may take to report `measured` (hashing the sample on a loaded host), ms. */
const REPORT_GRACE_MS = 10_000;

const MiB = 1024 * 1024;

/** query-dirty-rate's reply (the fields used). */
interface DirtyRateInfo {
  status: 'unstarted' | 'measuring' | 'measured';
  'dirty-rate'?: number;
  'calc-time': number;
  mode?: string;
}

/** The window in QEMU's whole seconds: the nearest, at least 1. */
export function calcSeconds(windowMs: number): number {
  return Math.max(1, Math.round(windowMs / 1000));
}

/** Measures the guest's dirty rate with QEMU's calc-dirty-rate over about `windowMs` (see the file comment for the method). */
export async function measureQemuDirtyRate(qmp: QmpClient, accel: Accel, windowMs: number): Promise<DirtyRateMeasurement> {
  const seconds = calcSeconds(windowMs);
  if (accel === 'kvm') {
    try {
      return await measureWith(qmp, 'dirty-bitmap', seconds);
    } catch (err) {
      if (!(err instanceof DroverError) || err.code !== 'FAILED_PRECONDITION') throw err;
      const m = await measureWith(qmp, 'page-sampling', seconds);
      return { ...m, note: `${m.note}; dirty-bitmap refused: ${err.message}` };
    }
  }
  return measureWith(qmp, 'page-sampling', seconds);
}

/** One calc-dirty-rate in `mode` over `seconds`, polled until measured. */
async function measureWith(qmp: QmpClient, mode: QemuDirtyRateMode, seconds: number): Promise<DirtyRateMeasurement> {
  const args: Record<string, unknown> = { 'calc-time': seconds, mode };
  if (mode === 'page-sampling') args['sample-pages'] = SAMPLE_PAGES_PER_GIB;
  await qmp.execute('calc-dirty-rate', args);
  await sleep(seconds * 1000);
  const deadline = Date.now() + REPORT_GRACE_MS;
  for (;;) {
    const r = await qmp.execute<DirtyRateInfo>('query-dirty-rate');
    if (r.status === 'measured') {
      if (r.mode !== undefined && r.mode !== mode) throw new DroverError('ABORTED', `query-dirty-rate: measured in mode ${r.mode}, not the ${mode} asked for (another measurement ran)`);
      const note = mode === 'page-sampling' ? `${SAMPLE_PAGES_PER_GIB} sampled pages per GiB` : 'every page, from the dirty log';
      return { bytesPerSec: (r['dirty-rate'] ?? 0) * MiB, method: mode, windowMs: r['calc-time'] * 1000, note };
    }
    if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `query-dirty-rate: still ${r.status} ${REPORT_GRACE_MS} ms after the ${seconds} s window`);
    await sleep(POLL_MS);
  }
}
