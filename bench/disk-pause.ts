/**
 * What a VM disk adds to a migration's downtime, measured directly: the sim domain's pause with
 * and without a disk on the same NBD export (the disk's part is the drain of in-flight WAL writes
 * plus the flush, `SimDiskDevice.quiesce`), and the time a target takes to open the export and
 * restore the log (done at PrepareIncoming / device-state load, before and during the blackout).
 * In-process, same code as the agents run; far less noisy than differencing end-to-end downtimes
 * on a shared machine.
 */
import { SimHypervisor } from '../hypervisor/sim/sim-hypervisor';
import { SimDiskDevice } from '../hypervisor/sim/disk-device';
import type { VmSpec } from '../hypervisor/types';
import { setTimeout as sleep } from 'node:timers/promises';

/** Result of `measureDiskPause`. */
export interface DiskPauseCost {
  cycles: number;
  /** Pause (vCPUs stop) without a disk: median / p90 ms. */
  pauseNoDiskMs: { median: number; p90: number };
  /** Pause with the disk (vCPUs stop + drain + flush): median / p90 ms. */
  pauseDiskMs: { median: number; p90: number };
  /** Of which drain + flush: median / p90 ms. */
  quiesceMs: { median: number; p90: number };
  /** Open of the export by a target (connect + NBD handshake), median ms: before the pause. */
  openMs: number;
  /** WAL records acknowledged during the measurement (the log was really writing). */
  records: number;
}


function stats(xs: number[]): { median: number; p90: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor((s.length - 1) / 2)], p90: s[Math.min(s.length - 1, Math.floor(s.length * 0.9))] };
}

/** Pauses/resumes a `db` VM `cycles` times with and without a disk on `uri`. */
export async function measureDiskPause(uri: string, cycles = 30): Promise<DiskPauseCost> {
  const hv = new SimHypervisor();
  const base: VmSpec = { name: 'disk-pause-probe', memBytes: 64 * 2 ** 20, vcpus: 1, profile: 'db', dirtyRateBytesPerSec: 16 * 2 ** 20 };
  try {
    const run = async (disk?: string) => {
      const d = await hv.createDomain({ ...base, disk });
      const pause: number[] = [];
      const quiesce: number[] = [];
      try {
        await sleep(200);
        for (let i = 0; i < cycles; i++) {
          await sleep(40 + Math.random() * 20); // land at a random point of the write pacing
          const t = performance.now();
          await d.pause();
          pause.push(performance.now() - t);
          quiesce.push(d.disk?.lastQuiesceMs ?? 0);
          await d.resume();
        }
        return { pause, quiesce, records: d.disk?.ackedSeq ?? 0 };
      } finally {
        await d.destroy();
      }
    };
    const plain = await run();
    const withDisk = await run(uri);
    const opens: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const dev = await SimDiskDevice.open(uri, base.name, {}, 'incoming');
      opens.push(performance.now() - t);
      await dev.close();
    }
    return {
      cycles, pauseNoDiskMs: stats(plain.pause), pauseDiskMs: stats(withDisk.pause), quiesceMs: stats(withDisk.quiesce),
      openMs: stats(opens).median, records: withDisk.records,
    };
  } finally {
    await hv.close();
  }
}
