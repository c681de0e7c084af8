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
  PAGE_WORDS,
  REG,
  SLOT_MASK,
  SLOT_SHIFT,
  fillPage,
  pageBytesOf,
  uniformIndex,
  xoshiro128ss,
  zipfRank,
} from './layout';
import type { WritePattern } from './profiles';
import { waitForPage, type PageWaitMessage } from './postcopy-pages';
import { nameThisThread, VCPU_THREAD_PREFIX } from './thread-name';

/** What the driver hands a vCPU thread. */
export interface VcpuInit {
  id: number;
  vcpus: number;
  slots: SharedArrayBuffer[];
  ctl: SharedArrayBuffer;
  dirty: SharedArrayBuffer;
  populated: SharedArrayBuffer;
  regs: SharedArrayBuffer;
  /** Post-copy page words (postcopy-pages.ts): a page not here yet is waited for before a write. */
  pages: SharedArrayBuffer;
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

/** Shortest sleep of a waiting vCPU, ms. */
const MIN_SLEEP_MS = 0.02;
/** Token bucket depth of a paced vCPU: this many ms of its rate ... */
const CREDIT_DEPTH_MS = 2;
/** ... and at least this many pages. */
const CREDIT_MIN_PAGES = 4;

const origin = performance.timeOrigin;
/** Wall-clock ms (the heartbeat's time base). */
const clock = (): number => origin + performance.now();

function setBit(map: Int32Array, pfn: number): void {
  Atomics.or(map, pfn >>> 5, 1 << (pfn & 31));
}

/** One vCPU's program: the run loop and its steps. All program state is in the registers (R, S). */
class Vcpu {
  private readonly id: number;
  private readonly vcpus: number;
  private readonly dataStart: number;
  private readonly indexStart: number;
  private readonly ctl: Int32Array;
  private readonly dirty: Int32Array;
  private readonly populated: Int32Array;
  private readonly pages: Int32Array;
  private readonly R: Float64Array;
  private readonly S: Uint32Array;
  private readonly mem: Uint32Array[];
  /** One byte view per memory slot (fillPage's memcpy target), made once instead of looked up per write. */
  private readonly memBytes: Buffer[];
  private readonly hdr: Float64Array;
  private readonly index: Uint32Array;
  private readonly heartbeat: boolean;
  private readonly hbMs: number;
  /** True from a resume until the next beat records its gap (HB_RESUME_GAP). */
  private resumed = false;
  private readonly localFill: number;
  private readonly localWss: number;
  private readonly pattern: WritePattern;
  private readonly paced: boolean;
  private readonly ratePerMs: number;
  private readonly creditCap: number;
  /** Start of the current busy segment. */
  private seg = 0;
  private lastPace = 0;
  private sliceStart = 0;
  private booted = false;
  private bootReported = false;
  /** Registers may have been loaded while parked: check the boot fill before the next write. */
  private mustCheckBoot = true;

  constructor(init: VcpuInit) {
    this.id = init.id;
    this.vcpus = init.vcpus;
    this.dataStart = init.dataStart;
    this.indexStart = init.indexStart;
    this.ctl = new Int32Array(init.ctl);
    this.dirty = new Int32Array(init.dirty);
    this.populated = new Int32Array(init.populated);
    this.pages = new Int32Array(init.pages);
    this.R = new Float64Array(init.regs);
    this.S = new Uint32Array(init.regs, 0, 4);
    this.mem = init.slots.map((s) => new Uint32Array(s));
    this.memBytes = this.mem.map((m) => pageBytesOf(m));
    this.hdr = new Float64Array(init.slots[0], 0, PAGE_WORDS / 2);
    this.index = new Uint32Array(init.slots[0], init.indexStart * PAGE_BYTES, init.pageCount);
    this.heartbeat = init.id === 0;
    this.hbMs = init.heartbeatMs;
    // Interleaved ownership: local page k of this vCPU is data page dataStart + k*vcpus + id.
    const share = (pages: number): number => (pages > init.id ? Math.ceil((pages - init.id) / init.vcpus) : 0);
    this.localFill = share(init.fillPages);
    this.localWss = share(init.wssPages);
    this.pattern = init.pattern;
    this.paced = Number.isFinite(init.rateBytesPerSec);
    this.ratePerMs = init.rateBytesPerSec / 1000;
    this.creditCap = Math.max(CREDIT_MIN_PAGES * PAGE_BYTES, this.ratePerMs * CREDIT_DEPTH_MS);
  }

  /** Runs until EXIT: one page write per iteration, parking on PAUSE. */
  run(): void {
    const { ctl, R } = this;
    this.seg = this.lastPace = this.sliceStart = clock();
    for (;;) {
      const cmd = Atomics.load(ctl, CTL.CMD);
      if (cmd !== CMD_RUN) {
        R[REG.BUSY_MS] += clock() - this.seg;
        if (cmd === CMD_EXIT || this.park() === CMD_EXIT) break;
        this.resumed = true;
        this.seg = this.lastPace = this.sliceStart = clock(); // no credit accrues while parked
        this.mustCheckBoot = true;
        continue;
      }
      if (this.mustCheckBoot) {
        this.mustCheckBoot = false;
        this.checkBooted();
      }
      const t = clock();
      R[REG.BUSY_MS] += t - this.seg;
      this.seg = t;
      if (this.heartbeat && t - this.hdr[H64.HB_LAST] >= this.hbMs) this.beat(t);
      if (this.throttled(t)) continue;
      if (!this.booted) {
        this.bootWrite(t);
        continue;
      }
      if (!this.mayWrite(t)) continue;
      const pfn = this.dataStart + this.nextLocal() * this.vcpus + this.id;
      if (!this.present(pfn)) continue;
      this.writePage(pfn);
      R[REG.BYTES] += PAGE_BYTES;
    }
    Atomics.add(ctl, CTL.EXITED, 1);
    Atomics.notify(ctl, CTL.PARKED);
  }

  /**
   * Post-copy: true once page `pfn` and its index page are on this node (it may wait for them);
   * false when a pause or exit came first. The header page is always here (a switch sends it).
   */
  private present(pfn: number): boolean {
    if (Atomics.load(this.ctl, CTL.MISSING) === 0) return true;
    const post = (m: PageWaitMessage) => parentPort?.postMessage(m);
    return waitForPage(this.pages, this.ctl, this.indexStart + (pfn >>> 10), post) && waitForPage(this.pages, this.ctl, pfn, post);
  }

  /** One guest page write: version bump, content (pfn, v), index update, dirty bits. */
  private writePage(pfn: number): void {
    const { index, R } = this;
    const old = index[pfn];
    let v = (old + 1) >>> 0;
    if (v === 0) v = 1;
    const slot = pfn >>> SLOT_SHIFT;
    fillPage(this.mem[slot], (pfn & SLOT_MASK) * PAGE_WORDS, pfn, v, this.memBytes[slot]);
    const ip = this.indexStart + (pfn >>> 10);
    if (old === 0) {
      setBit(this.populated, pfn);
      setBit(this.populated, ip);
      R[REG.TOUCHED]++;
    }
    setBit(this.dirty, pfn);
    index[pfn] = v;
    setBit(this.dirty, ip);
    R[REG.PAGES]++;
  }

  private beat(t: number): void {
    const hdr = this.hdr;
    if (hdr[H64.HB_BEATS] > 0) {
      const gap = t - hdr[H64.HB_LAST];
      if (gap > hdr[H64.HB_MAX_GAP]) hdr[H64.HB_MAX_GAP] = gap;
      if (this.resumed) hdr[H64.HB_RESUME_GAP] = gap;
    }
    this.resumed = false;
    hdr[H64.HB_LAST] = t;
    hdr[H64.HB_BEATS] += 1;
    setBit(this.dirty, 0);
  }

  /** The next local working-set page, by the profile's pattern. */
  private nextLocal(): number {
    switch (this.pattern) {
      case 'sequential': {
        let c = this.R[REG.CURSOR];
        if (c >= this.localWss) c = 0;
        this.R[REG.CURSOR] = c + 1;
        return c;
      }
      case 'zipf':
        return zipfRank(xoshiro128ss(this.S), this.localWss);
      default:
        return uniformIndex(xoshiro128ss(this.S), this.localWss);
    }
  }

  /** Park until RUN or EXIT; returns the command that woke us. */
  private park(): number {
    const ctl = this.ctl;
    Atomics.add(ctl, CTL.PARKED, 1);
    Atomics.notify(ctl, CTL.PARKED);
    let cmd = Atomics.load(ctl, CTL.CMD);
    while (cmd === CMD_PAUSE) {
      Atomics.wait(ctl, CTL.CMD, CMD_PAUSE);
      cmd = Atomics.load(ctl, CTL.CMD);
    }
    Atomics.sub(ctl, CTL.PARKED, 1);
    if (cmd === CMD_RUN) this.R[REG.RESUMES]++;
    return cmd;
  }

  private checkBooted(): void {
    this.booted = this.R[REG.BOOT_NEXT] >= this.localFill;
    if (this.booted && !this.bootReported) {
      this.bootReported = true;
      Atomics.add(this.ctl, CTL.BOOTED, 1);
      Atomics.notify(this.ctl, CTL.BOOTED);
    }
  }

  /** Auto-converge: the migration engine slows a guest that dirties memory faster than it moves. True when it slept. */
  private throttled(t: number): boolean {
    const throttle = this.booted ? Atomics.load(this.ctl, CTL.THROTTLE) : 0;
    if (throttle <= 0 || t - this.sliceStart < THROTTLE_SLICE_MS) return false;
    const p = throttle / 1000; // per mille, at most MAX_THROTTLE (the driver clamps)
    Atomics.wait(this.ctl, CTL.CMD, CMD_RUN, (THROTTLE_SLICE_MS * p) / (1 - p));
    this.seg = this.sliceStart = clock();
    return true;
  }

  /** One page of the boot fill. */
  private bootWrite(t: number): void {
    const k = this.R[REG.BOOT_NEXT];
    if (!this.present(this.dataStart + k * this.vcpus + this.id)) return;
    this.writePage(this.dataStart + k * this.vcpus + this.id);
    this.R[REG.BOOT_NEXT] = k + 1;
    if (k + 1 >= this.localFill) this.checkBooted();
    this.lastPace = t;
  }

  /** Pacing: true when a working-set page may be written now, else it slept (token bucket, or no working set). */
  private mayWrite(t: number): boolean {
    const { R, hdr } = this;
    if (this.localWss === 0) {
      const sleep = this.heartbeat ? Math.max(MIN_SLEEP_MS, this.hbMs - (t - hdr[H64.HB_LAST])) : MAX_SLEEP_MS;
      Atomics.wait(this.ctl, CTL.CMD, CMD_RUN, sleep);
      this.seg = clock();
      return false;
    }
    if (!this.paced) return true;
    let credit = R[REG.CREDIT] + (t - this.lastPace) * this.ratePerMs;
    this.lastPace = t;
    if (credit > this.creditCap) credit = this.creditCap;
    if (credit < PAGE_BYTES) {
      R[REG.CREDIT] = credit;
      let sleep = (PAGE_BYTES - credit) / this.ratePerMs;
      if (this.heartbeat) sleep = Math.min(sleep, this.hbMs - (t - hdr[H64.HB_LAST]));
      sleep = Math.min(Math.max(sleep, MIN_SLEEP_MS), MAX_SLEEP_MS);
      Atomics.wait(this.ctl, CTL.CMD, CMD_RUN, sleep);
      this.seg = clock();
      return false;
    }
    R[REG.CREDIT] = credit - PAGE_BYTES;
    return true;
  }
}

if (parentPort && workerData) {
  nameThisThread(`${VCPU_THREAD_PREFIX}${(workerData as VcpuInit).id}`);
  new Vcpu(workerData as VcpuInit).run();
}
