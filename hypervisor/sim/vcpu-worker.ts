/**
 * One vCPU of a sim guest: a worker thread running the workload program.
 *
 * Every page write is one "instruction": before each one the vCPU reads the control word; on
 * PAUSE it acknowledges (PARKED += 1, notify) and parks in Atomics.wait until RUN or EXIT.
 * All program state lives in the register SAB (write-through), so the driver can save it while
 * the vCPU is parked and another process can continue the same program from it.
 */

import { parentPort, workerData } from 'node:worker_threads';
import {
  CMD_EXIT,
  CMD_PAUSE,
  CMD_RUN,
  CTL,
  H64,
  PAGE_MAGIC,
  PAGE_WORDS,
  REG,
  SLOT_MASK,
  SLOT_SHIFT,
  mix,
  uniformIndex,
  xoshiro128ss,
  zipfRank,
} from './layout';
import type { WritePattern } from './profiles';

/** What the driver hands a vCPU thread. */
export interface VcpuInit {
  id: number;
  vcpus: number;
  slots: SharedArrayBuffer[];
  ctl: SharedArrayBuffer;
  dirty: SharedArrayBuffer;
  populated: SharedArrayBuffer;
  regs: SharedArrayBuffer;
  pageCount: number;
  indexStart: number;
  dataStart: number;
  wssPages: number;
  fillPages: number;
  /** This vCPU's share of the dirty rate, bytes/s (Infinity = unlimited). */
  rateBytesPerSec: number;
  pattern: WritePattern;
  /** Heartbeat period in ms (vCPU 0 only). */
  heartbeatMs: number;
}

const PAGE_BYTES = PAGE_WORDS * 4;
/** Longest sleep of a vCPU without a heartbeat duty (ms); pause/exit wake it at once anyway. */
const MAX_SLEEP_MS = 20;
/**
 * A throttled vCPU runs for this long, then sleeps THROTTLE × slice / (1 − THROTTLE): short
 * slices keep the guest's stalls (and its heartbeat gaps) at ~10 ms even at 99%.
 */
const THROTTLE_SLICE_MS = 0.1;

function run(init: VcpuInit): void {
  const { id, vcpus, dataStart, indexStart } = init;
  const ctl = new Int32Array(init.ctl);
  const dirty = new Int32Array(init.dirty);
  const populated = new Int32Array(init.populated);
  const R = new Float64Array(init.regs);
  const S = new Uint32Array(init.regs, 0, 4);
  const mem = init.slots.map((s) => new Uint32Array(s));
  const hdr = new Float64Array(init.slots[0], 0, PAGE_WORDS / 2);
  const index = new Uint32Array(init.slots[0], indexStart * PAGE_BYTES, init.pageCount);
  const heartbeat = id === 0;
  const hbMs = init.heartbeatMs;

  // Interleaved ownership: local page k of this vCPU is data page dataStart + k*vcpus + id.
  const share = (pages: number): number => (pages > id ? Math.ceil((pages - id) / vcpus) : 0);
  const localFill = share(init.fillPages);
  const localWss = share(init.wssPages);
  const pattern = init.pattern;
  const paced = Number.isFinite(init.rateBytesPerSec);
  const ratePerMs = init.rateBytesPerSec / 1000;
  // Token bucket depth: 2 ms of rate, at least 4 pages.
  const creditCap = Math.max(4 * PAGE_BYTES, ratePerMs * 2);

  const origin = performance.timeOrigin;
  const clock = (): number => origin + performance.now();

  function setBit(map: Int32Array, pfn: number): void {
    Atomics.or(map, pfn >>> 5, 1 << (pfn & 31));
  }

  /** One guest page write: version bump, content (pfn, v), index update, dirty bits. */
  function writePage(pfn: number): void {
    const old = index[pfn];
    let v = (old + 1) >>> 0;
    if (v === 0) v = 1;
    const m = mem[pfn >>> SLOT_SHIFT];
    const base = (pfn & SLOT_MASK) * PAGE_WORDS;
    m.fill(mix(pfn, v), base + 3, base + PAGE_WORDS);
    m[base] = PAGE_MAGIC;
    m[base + 1] = pfn;
    m[base + 2] = v;
    const ip = indexStart + (pfn >>> 10);
    if (old === 0) {
      setBit(populated, pfn);
      setBit(populated, ip);
      R[REG.TOUCHED]++;
    }
    setBit(dirty, pfn);
    index[pfn] = v;
    setBit(dirty, ip);
    R[REG.PAGES]++;
  }

  function beat(t: number): void {
    if (hdr[H64.HB_BEATS] > 0) {
      const gap = t - hdr[H64.HB_LAST];
      if (gap > hdr[H64.HB_MAX_GAP]) hdr[H64.HB_MAX_GAP] = gap;
    }
    hdr[H64.HB_LAST] = t;
    hdr[H64.HB_BEATS] += 1;
    setBit(dirty, 0);
  }

  function nextLocal(): number {
    switch (pattern) {
      case 'sequential': {
        let c = R[REG.CURSOR];
        if (c >= localWss) c = 0;
        R[REG.CURSOR] = c + 1;
        return c;
      }
      case 'zipf':
        return zipfRank(xoshiro128ss(S), localWss);
      default:
        return uniformIndex(xoshiro128ss(S), localWss);
    }
  }

  /** Park until RUN or EXIT; returns the command that woke us. */
  function park(): number {
    Atomics.add(ctl, CTL.PARKED, 1);
    Atomics.notify(ctl, CTL.PARKED);
    let cmd = Atomics.load(ctl, CTL.CMD);
    while (cmd === CMD_PAUSE) {
      Atomics.wait(ctl, CTL.CMD, CMD_PAUSE);
      cmd = Atomics.load(ctl, CTL.CMD);
    }
    Atomics.sub(ctl, CTL.PARKED, 1);
    if (cmd === CMD_RUN) R[REG.RESUMES]++;
    return cmd;
  }

  let seg = clock(); // start of the current busy segment
  let lastPace = seg;
  let booted = false;
  let bootReported = false;
  const checkBooted = (): void => {
    booted = R[REG.BOOT_NEXT] >= localFill;
    if (booted && !bootReported) {
      bootReported = true;
      Atomics.add(ctl, CTL.BOOTED, 1);
      Atomics.notify(ctl, CTL.BOOTED);
    }
  };
  let mustCheckBoot = true; // registers may have been loaded while parked
  let sliceStart = clock();
  for (;;) {
    const cmd = Atomics.load(ctl, CTL.CMD);
    if (cmd !== CMD_RUN) {
      const t = clock();
      R[REG.BUSY_MS] += t - seg;
      if (cmd === CMD_EXIT || park() === CMD_EXIT) break;
      seg = lastPace = sliceStart = clock(); // no credit accrues while parked
      mustCheckBoot = true;
      continue;
    }
    if (mustCheckBoot) {
      mustCheckBoot = false;
      checkBooted();
    }
    const t = clock();
    R[REG.BUSY_MS] += t - seg;
    seg = t;
    if (heartbeat && t - hdr[H64.HB_LAST] >= hbMs) beat(t);

    // Auto-converge: the migration engine slows a guest that dirties memory faster than it moves.
    const throttle = booted ? Atomics.load(ctl, CTL.THROTTLE) : 0;
    if (throttle > 0 && t - sliceStart >= THROTTLE_SLICE_MS) {
      const p = throttle / 1000; // per mille, at most MAX_THROTTLE (the driver clamps)
      Atomics.wait(ctl, CTL.CMD, CMD_RUN, (THROTTLE_SLICE_MS * p) / (1 - p));
      seg = sliceStart = clock();
      continue;
    }

    if (!booted) {
      const k = R[REG.BOOT_NEXT];
      writePage(dataStart + k * vcpus + id);
      R[REG.BOOT_NEXT] = k + 1;
      if (k + 1 >= localFill) checkBooted();
      lastPace = t;
      continue;
    }

    if (localWss > 0 && paced) {
      let credit = R[REG.CREDIT] + (t - lastPace) * ratePerMs;
      lastPace = t;
      if (credit > creditCap) credit = creditCap;
      if (credit < PAGE_BYTES) {
        R[REG.CREDIT] = credit;
        let sleep = (PAGE_BYTES - credit) / ratePerMs;
        if (heartbeat) sleep = Math.min(sleep, hbMs - (t - hdr[H64.HB_LAST]));
        sleep = Math.min(Math.max(sleep, 0.02), MAX_SLEEP_MS);
        Atomics.wait(ctl, CTL.CMD, CMD_RUN, sleep);
        seg = clock();
        continue;
      }
      R[REG.CREDIT] = credit - PAGE_BYTES;
    } else if (localWss === 0) {
      const sleep = heartbeat ? Math.max(0.02, hbMs - (t - hdr[H64.HB_LAST])) : MAX_SLEEP_MS;
      Atomics.wait(ctl, CTL.CMD, CMD_RUN, sleep);
      seg = clock();
      continue;
    }
    writePage(dataStart + nextLocal() * vcpus + id);
    R[REG.BYTES] += PAGE_BYTES;
  }
  Atomics.add(ctl, CTL.EXITED, 1);
  Atomics.notify(ctl, CTL.PARKED);
}

if (parentPort && workerData) {
  run(workerData as VcpuInit);
}
