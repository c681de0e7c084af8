/**
 * One sim VM (the `sim` driver, sim-hypervisor.ts): vCPUs are worker threads.
 *
 * - Guest RAM: SharedArrayBuffers of up to 1 GiB (one per slot of SLOT_PAGES pages), lazily zero.
 * - Dirty log: one bit per page in an Int32Array on a SAB; every guest write ORs its page's bit
 *   in after the write (the hypervisor's write barrier); read-and-clear word by word.
 * - Populated map: one bit per page set on a page's first guest write and on every `pageView`,
 *   so `isZeroPage` answers for never-touched pages without reading (and faulting in) them.
 * - vCPUs: worker threads (vcpu-worker.ts) stopping at a page-write boundary on pause.
 * - Device state: the vCPU register files plus a header (device-state.ts).
 * - Guest check: the guest's own memory check (guest-check.ts).
 */

import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  Domain,
  PagedDomain,
  DomainState,
  DomainStats,
  GuestCheckResult,
  HeartbeatReading,
  PAGE_SIZE,
  VmSpec,
} from '../types';
import {
  CMD_EXIT,
  CMD_PAUSE,
  CMD_RUN,
  CTL,
  GUEST_LAYOUT_VERSION,
  GUEST_MAGIC,
  GuestLayout,
  H32,
  H64,
  PAGE_WORDS,
  PROFILE_CODES,
  REG,
  REG_BYTES,
  REG_SLOTS,
  SLOT_MASK,
  SLOT_PAGES,
  SLOT_SHIFT,
  guestLayout,
  hashString,
  seedPrng,
} from './layout';
import { ResolvedProfile, resolveProfile } from './profiles';
import type { DiskDeviceOptions, SimDiskDevice } from './disk-device';
import { decodeDeviceState, encodeDeviceState } from './device-state';
import { checkGuestMemory } from './guest-check';
import type { VcpuInit } from './vcpu-worker';
import { PostcopyPages, type PageWaitMessage } from './postcopy-pages';

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);
/** Highest throttle: the guest still runs 1% of the time (its stalls stay ~10 ms, see vcpu-worker.ts). */
export const MAX_THROTTLE = 0.99;

/** Options of the sim driver. */
export interface SimHypervisorOptions {
  /** Heartbeat period of vCPU 0 in ms (default 0.1). */
  heartbeatMs?: number;
  /** How long pause() waits for the vCPUs to acknowledge before failing (default 10 s). */
  pauseTimeoutMs?: number;
  /** Disk device tunables for VMs with `spec.disk` (see disk-device.ts; default 200 records/s). */
  disk?: DiskDeviceOptions;
}

import { validateSpec } from '../spec';
import { setTimeout as sleep } from 'node:timers/promises';


interface RateSample {
  t: number;
  bytes: number;
  busyMs: number;
}

/** One sim VM. */
export class SimDomain implements Domain, PagedDomain {
  readonly spec: VmSpec;
  /** The sim driver migrates page by page: the engine reads and writes this domain's RAM itself. */
  readonly migration = { kind: 'pages', pages: this } as const;
  readonly pageCount: number;
  readonly slotPages = SLOT_PAGES;
  /** Guest layout (header, index, data area). */
  readonly layout: GuestLayout;
  /** Effective workload parameters. */
  readonly workload: ResolvedProfile;

  private st: DomainState;
  private slots: SharedArrayBuffer[];
  private slotBufs: Buffer[];
  private readonly ctlSab = new SharedArrayBuffer(CTL.SIZE * 4);
  private readonly ctl = new Int32Array(this.ctlSab);
  private readonly dirtySab: SharedArrayBuffer;
  private readonly dirty: Int32Array;
  private readonly populatedSab: SharedArrayBuffer;
  private readonly populated: Int32Array;
  private readonly regSabs: SharedArrayBuffer[] = [];
  private readonly regs: Float64Array[] = [];
  private readonly hdr32: Uint32Array;
  private readonly hdr64: Float64Array;
  private readonly index: Uint32Array;
  private workers: Worker[] = [];
  private crash: Error | undefined;
  private deviceStateLoaded = false;
  private logging = false;
  private samples: RateSample[] = [];
  private sampler: NodeJS.Timeout | undefined;
  private destroying: Promise<void> | undefined;
  private readonly opts: Required<SimHypervisorOptions>;
  private readonly onGone: (d: SimDomain) => void;
  /** Post-copy: which pages are on this node yet (postcopy-pages.ts); the hot pages are the header and index. */
  readonly postcopy: PostcopyPages;
  /** The guest's disk (spec.disk), driven from this thread; see disk-device.ts. */
  disk: SimDiskDevice | undefined;

  /** Use SimHypervisor.createDomain / createIncoming. */
  constructor(spec: VmSpec, incoming: boolean, opts: Required<SimHypervisorOptions>, onGone: (d: SimDomain) => void) {
    validateSpec(spec);
    this.spec = { ...spec };
    this.opts = opts;
    this.onGone = onGone;
    this.layout = guestLayout(spec.memBytes);
    this.workload = resolveProfile(spec);
    this.pageCount = this.layout.pageCount;
    this.st = incoming ? 'incoming' : 'paused';

    this.slots = [];
    for (let s = 0; s < this.layout.slotCount; s++) {
      const pages = Math.min(SLOT_PAGES, this.pageCount - s * SLOT_PAGES);
      this.slots.push(new SharedArrayBuffer(pages * PAGE_SIZE));
    }
    this.slotBufs = this.slots.map((s) => Buffer.from(s));
    const words = Math.ceil(this.pageCount / 32);
    this.dirtySab = new SharedArrayBuffer(words * 4);
    this.dirty = new Int32Array(this.dirtySab);
    this.populatedSab = new SharedArrayBuffer(words * 4);
    this.populated = new Int32Array(this.populatedSab);
    this.hdr32 = new Uint32Array(this.slots[0], 0, PAGE_WORDS);
    this.hdr64 = new Float64Array(this.slots[0], 0, PAGE_WORDS / 2);
    this.index = new Uint32Array(this.slots[0], this.layout.indexStart * PAGE_SIZE, this.pageCount);
    this.postcopy = new PostcopyPages(this.pageCount, this.ctl, this.layout.dataStart);

    const seed = (spec.seed ?? hashString(spec.name)) >>> 0;
    for (let i = 0; i < spec.vcpus; i++) {
      const sab = new SharedArrayBuffer(REG_BYTES);
      this.regSabs.push(sab);
      this.regs.push(new Float64Array(sab));
      if (!incoming) seedPrng(new Uint32Array(sab, 0, 4), seed, i);
    }
    if (!incoming) this.writeFirmwareHeader(seed);
  }

  /** The "firmware" writes the guest header page before the vCPUs start. */
  private writeFirmwareHeader(seed: number): void {
    const h = this.hdr32;
    const L = this.layout;
    h[H32.MAGIC] = GUEST_MAGIC;
    h[H32.LAYOUT] = GUEST_LAYOUT_VERSION;
    h[H32.PAGE_COUNT] = L.pageCount;
    h[H32.INDEX_START] = L.indexStart;
    h[H32.INDEX_PAGES] = L.indexPages;
    h[H32.DATA_START] = L.dataStart;
    h[H32.PROFILE] = PROFILE_CODES[this.spec.profile];
    h[H32.VCPUS] = this.spec.vcpus;
    h[H32.SEED] = seed;
    h[H32.WSS_PAGES] = this.workload.wssPages;
    h[H32.FILL_PAGES] = this.workload.fillPages;
    this.hdr64[H64.RATE] = this.workload.dirtyRateBytesPerSec;
    this.setBits(this.populated, 0, 1);
    this.setBits(this.dirty, 0, 1);
  }

  /** Spawns the vCPU threads; with `run` false they park at once. */
  async start(run: boolean): Promise<void> {
    Atomics.store(this.ctl, CTL.CMD, run ? CMD_RUN : CMD_PAUSE);
    const file = path.join(__dirname, 'vcpu-worker.js');
    const n = this.spec.vcpus;
    for (let i = 0; i < n; i++) {
      const init: VcpuInit = {
        id: i,
        vcpus: n,
        slots: this.slots,
        ctl: this.ctlSab,
        dirty: this.dirtySab,
        populated: this.populatedSab,
        regs: this.regSabs[i],
        pages: this.postcopy.sab,
        pageCount: this.pageCount,
        indexStart: this.layout.indexStart,
        dataStart: this.layout.dataStart,
        wssPages: this.workload.wssPages,
        fillPages: this.workload.fillPages,
        rateBytesPerSec: this.workload.dirtyRateBytesPerSec / n,
        pattern: this.workload.pattern,
        heartbeatMs: this.opts.heartbeatMs,
      };
      const w = new Worker(file, { workerData: init, name: `vcpu${i}-${this.spec.name}` });
      w.on('message', (m: PageWaitMessage) => this.postcopy.handle(m));
      w.on('error', (e) => {
        if (!this.crash) this.crash = new Error(`vCPU ${i} of '${this.spec.name}' crashed: ${e.message}`);
      });
      w.on('exit', (code) => {
        if (code !== 0 && !this.crash && !this.destroying) {
          this.crash = new Error(`vCPU ${i} of '${this.spec.name}' exited with code ${code}`);
        }
      });
      this.workers.push(w);
    }
    try {
      if (run) {
        this.st = 'running';
        await this.waitCount(CTL.BOOTED, n, 120_000, 'boot');
      } else {
        await this.waitCount(CTL.PARKED, n, 60_000, 'start (parked)');
      }
    } catch (e) {
      await this.destroy();
      throw e;
    }
    this.sample();
    this.sampler = setInterval(() => this.sample(), 200);
    this.sampler.unref();
  }

  /** Waits, polling asynchronously, until ctl[idx] >= n. */
  private async waitCount(idx: number, n: number, timeoutMs: number, what: string): Promise<void> {
    const t0 = performance.now();
    while (Atomics.load(this.ctl, idx) < n) {
      if (this.crash) throw this.crash;
      if (this.destroying) throw new Error(`domain '${this.spec.name}' destroyed during ${what}`);
      if (performance.now() - t0 > timeoutMs) {
        throw new Error(`domain '${this.spec.name}': vCPUs did not complete ${what} within ${timeoutMs} ms`);
      }
      await sleep(2);
    }
  }

  private alive(op: string): void {
    if (this.st === 'destroyed') throw new Error(`${op}: domain '${this.spec.name}' is destroyed`);
  }

  state(): DomainState {
    return this.st;
  }

  async pause(): Promise<void> {
    this.alive('pause');
    if (this.st !== 'running') return;
    const ctl = this.ctl;
    const n = this.spec.vcpus;
    Atomics.store(ctl, CTL.CMD, CMD_PAUSE);
    Atomics.notify(ctl, CTL.CMD);
    // Fast path: block the event loop briefly (acks take microseconds).
    const t0 = performance.now();
    let parked = Atomics.load(ctl, CTL.PARKED);
    while (parked < n && performance.now() - t0 < 20) {
      Atomics.wait(ctl, CTL.PARKED, parked, 1);
      parked = Atomics.load(ctl, CTL.PARKED);
    }
    if (parked < n) await this.waitCount(CTL.PARKED, n, this.opts.pauseTimeoutMs, 'pause');
    this.st = 'paused';
    // Stop-and-copy semantics: nothing in flight crosses the pause, acknowledged writes are flushed.
    if (this.disk) await this.disk.quiesce();
  }

  /** Auto-converge: the vCPUs sleep `fraction` of the time (0 = full speed, at most 0.99). */
  setThrottle(fraction: number): void {
    const f = Math.min(Math.max(fraction, 0), MAX_THROTTLE);
    Atomics.store(this.ctl, CTL.THROTTLE, Math.round(f * 1000));
  }

  /** The current throttle (0..0.99). */
  get throttle(): number {
    return Atomics.load(this.ctl, CTL.THROTTLE) / 1000;
  }

  async resume(): Promise<void> {
    this.alive('resume');
    if (this.crash) throw this.crash;
    if (this.st === 'running') return;
    if (this.st === 'incoming' && !this.deviceStateLoaded) {
      throw new Error(`resume: incoming domain '${this.spec.name}' has no device state yet (call loadDeviceState first)`);
    }
    Atomics.store(this.ctl, CTL.CMD, CMD_RUN);
    Atomics.notify(this.ctl, CTL.CMD);
    this.st = 'running';
    this.disk?.start();
  }

  /** Faults `ranges` in on a worker thread (see prefault-worker.ts); a hint, never a write. */
  prefault(ranges: ArrayLike<number>): void {
    this.alive('prefault');
    const w = new Worker(path.join(__dirname, 'prefault-worker.js'), { workerData: { slots: this.slots, ranges: Array.from(ranges) } });
    this.prefaulters.add(w);
    const done = () => { this.prefaulters.delete(w); };
    w.once('exit', done);
    w.once('error', done);
  }

  private readonly prefaulters = new Set<Worker>();

  destroy(): Promise<void> {
    if (!this.destroying) {
      this.destroying = (async () => {
        this.st = 'destroyed';
        for (const w of this.prefaulters) void w.terminate();
        if (this.sampler) clearInterval(this.sampler);
        Atomics.store(this.ctl, CTL.CMD, CMD_EXIT);
        Atomics.notify(this.ctl, CTL.CMD);
        await Promise.all(this.workers.map((w) => w.terminate().catch(() => 0)));
        this.workers = [];
        await this.disk?.close();
        this.slots = [];
        this.slotBufs = [];
        this.onGone(this);
      })();
    }
    return this.destroying;
  }

  // ---- dirty log -------------------------------------------------------------------------

  startDirtyLog(): void {
    this.alive('startDirtyLog');
    this.dirty.fill(0);
    this.logging = true;
  }

  stopDirtyLog(): void {
    this.logging = false;
  }

  /** True between startDirtyLog and stopDirtyLog (bits are recorded all the time regardless). */
  get dirtyLogging(): boolean {
    return this.logging;
  }

  getAndClearDirtyLog(): Uint32Array {
    this.alive('getAndClearDirtyLog');
    const d = this.dirty;
    const out = new Uint32Array(d.length);
    for (let i = 0; i < d.length; i++) {
      // A word read as 0 here may gain a bit right after: that bit stays in the log.
      if (d[i] !== 0) out[i] = Atomics.exchange(d, i, 0);
    }
    return out;
  }

  peekDirtyLog(): Uint32Array {
    this.alive('peekDirtyLog');
    return new Uint32Array(this.dirtySab.slice(0));
  }

  markDirty(bitmap: Uint32Array): void {
    this.alive('markDirty');
    if (bitmap.length > this.dirty.length) {
      throw new Error(`markDirty: bitmap of ${bitmap.length} words exceeds the ${this.dirty.length} words of '${this.spec.name}'`);
    }
    for (let i = 0; i < bitmap.length; i++) {
      if (bitmap[i] !== 0) Atomics.or(this.dirty, i, bitmap[i] | 0);
    }
  }

  // ---- memory ----------------------------------------------------------------------------

  private checkRange(op: string, pfn: number, count: number): void {
    if (!Number.isInteger(pfn) || !Number.isInteger(count) || pfn < 0 || count < 0 || pfn + count > this.pageCount) {
      throw new Error(`${op}: pages [${pfn}, ${pfn}+${count}) out of range for '${this.spec.name}' (${this.pageCount} pages)`);
    }
  }

  pageView(pfn: number, count: number): Uint8Array {
    this.alive('pageView');
    this.checkRange('pageView', pfn, count);
    const s = Math.floor(pfn / SLOT_PAGES);
    if (count > 0 && Math.floor((pfn + count - 1) / SLOT_PAGES) !== s) {
      throw new Error(
        `pageView: pages [${pfn}, ${pfn + count}) cross the memory slot boundary at pfn ${(s + 1) * SLOT_PAGES} (slotPages ${SLOT_PAGES})`,
      );
    }
    // Whoever holds a view may write through it: the pages count as populated from now on.
    this.setBits(this.populated, pfn, count);
    return new Uint8Array(this.slots[s], (pfn - s * SLOT_PAGES) * PAGE_SIZE, count * PAGE_SIZE);
  }

  isZeroPage(pfn: number): boolean {
    this.alive('isZeroPage');
    this.checkRange('isZeroPage', pfn, 1);
    return this.isZero(pfn);
  }

  /**
   * Copy of the populated map (bit set = the page may be non-zero: the guest wrote it or a
   * pageView was handed out for it). Pages whose bit is clear are zero and were never faulted
   * in; a scan for non-zero pages can skip them word by word (pre-copy's first round).
   */
  populatedBitmap(): Uint32Array {
    this.alive('populatedBitmap');
    return new Uint32Array(this.populatedSab.slice(0));
  }

  private isZero(pfn: number): boolean {
    if ((this.populated[pfn >>> 5] & (1 << (pfn & 31))) === 0) return true; // never touched
    const off = (pfn & SLOT_MASK) * PAGE_SIZE;
    return this.slotBufs[pfn >>> SLOT_SHIFT].compare(ZERO_PAGE, 0, PAGE_SIZE, off, off + PAGE_SIZE) === 0;
  }

  /** Sets bits [first, first+count) of a bitmap atomically. */
  private setBits(map: Int32Array, first: number, count: number): void {
    let p = first;
    const end = first + count;
    while (p < end) {
      const w = p >>> 5;
      const b = p & 31;
      const n = Math.min(32 - b, end - p);
      const mask = n === 32 ? -1 : ((1 << n) - 1) << b;
      Atomics.or(map, w, mask);
      p += n;
    }
  }

  // ---- device state (format: device-state.ts) -------------------------------------------

  /** Saves the vCPU register files (and the disk's WAL state) behind a header; only while paused. */
  saveDeviceState(): Uint8Array {
    this.alive('saveDeviceState');
    if (this.st !== 'paused') {
      throw new Error(`saveDeviceState: domain '${this.spec.name}' is ${this.st}; pause it first`);
    }
    return encodeDeviceState(this.spec, this.workload, this.regSabs.map((r) => new Uint8Array(r)), this.disk?.section());
  }

  /** Checks and loads a device state saved by saveDeviceState on another node; only while paused/incoming. */
  loadDeviceState(state: Uint8Array): void {
    this.alive('loadDeviceState');
    const who = `loadDeviceState('${this.spec.name}')`;
    if (this.st !== 'paused' && this.st !== 'incoming') {
      throw new Error(`${who}: domain is ${this.st}; only a paused or incoming domain can load device state`);
    }
    const { registers, section } = decodeDeviceState(state, this.spec, this.workload, this.disk !== undefined, who);
    if (section) this.disk!.restore(section);
    for (let i = 0; i < registers.length; i++) new Uint8Array(this.regSabs[i]).set(registers[i]);
    this.deviceStateLoaded = true;
    if (this.st === 'incoming') this.st = 'paused';
    this.samples = [];
    this.sample();
  }

  // ---- guest -----------------------------------------------------------------------------

  async guestCheck(): Promise<GuestCheckResult> {
    this.alive('guestCheck');
    const wasRunning = this.st === 'running';
    if (wasRunning) await this.pause();
    try {
      const r = this.checkNow();
      if (this.disk) {
        const d = await this.disk.check();
        r.diskOk = d.ok;
        r.diskDetail = d.detail;
        r.diskAckedSeq = d.ackedSeq;
      }
      return r;
    } finally {
      if (wasRunning && this.st === 'paused') await this.resume();
    }
  }

  private checkNow(): GuestCheckResult {
    return checkGuestMemory({
      hdr32: this.hdr32, index: this.index, slots: this.slots, slotBufs: this.slotBufs,
      pageCount: this.pageCount, dataStart: this.layout.dataStart, isZero: (pfn) => this.isZero(pfn),
    });
  }

  heartbeat(): HeartbeatReading {
    this.alive('heartbeat');
    return {
      lastBeatMs: this.hdr64[H64.HB_LAST],
      maxGapMs: this.hdr64[H64.HB_MAX_GAP],
      beats: this.hdr64[H64.HB_BEATS],
      resumeGapMs: this.hdr64[H64.HB_RESUME_GAP],
    };
  }

  resetHeartbeatGap(): void {
    this.alive('resetHeartbeatGap');
    this.hdr64[H64.HB_MAX_GAP] = 0;
    this.setBits(this.populated, 0, 1);
    this.setBits(this.dirty, 0, 1);
  }

  private totals(): RateSample {
    let bytes = 0;
    let busyMs = 0;
    for (const r of this.regs) {
      bytes += r[REG.BYTES];
      busyMs += r[REG.BUSY_MS];
    }
    return { t: performance.now(), bytes, busyMs };
  }

  private sample(): void {
    if (this.st === 'destroyed') return;
    this.samples.push(this.totals());
    if (this.samples.length > 12) this.samples.shift();
  }

  stats(): DomainStats {
    this.alive('stats');
    const now = this.totals();
    let touched = 0;
    for (const r of this.regs) touched += r[REG.TOUCHED];
    // Reference: the newest sample at least ~1 s old, else the oldest we have.
    let ref: RateSample | undefined;
    for (const s of this.samples) {
      if (now.t - s.t >= 1000) ref = s;
    }
    ref ??= this.samples[0];
    const dt = ref ? now.t - ref.t : 0;
    const running = this.st === 'running';
    return {
      dirtyRateBytesPerSec: ref && dt > 50 ? Math.max(0, ((now.bytes - ref.bytes) * 1000) / dt) : 0,
      touchedBytes: touched * PAGE_SIZE,
      cpu: ref && dt > 50 && running ? Math.min(this.spec.vcpus, Math.max(0, (now.busyMs - ref.busyMs) / dt)) : 0,
    };
  }

  /** Guest bytes written by the workload since boot (all vCPUs; the dirty-rate counter). */
  bytesWritten(): number {
    return this.totals().bytes;
  }

  /** Heap-independent view of register slot `slot` of vCPU `vcpu` (for tests and debugging). */
  register(vcpu: number, slot: number): number {
    if (slot < 0 || slot >= REG_SLOTS) throw new Error(`register slot ${slot} out of range`);
    return this.regs[vcpu][slot];
  }
}
