/**
 * Post-copy pages of one sim VM: a word per guest page in shared memory saying whether the page
 * is on this node yet. The target marks the pages the source still holds missing before it
 * resumes; a vCPU about to touch a missing page asks for it once (a message to the driver's
 * thread) and waits with `Atomics.wait` on the page's word until the receiver stores the page
 * and wakes it. `ctl[CTL.MISSING]` counts the missing pages, so a vCPU of a VM with none pays one
 * load per write.
 */
import { CMD_RUN, CTL } from './layout';

/** A page word: the page is here. */
export const PAGE_PRESENT = 0;
/** A page word: the page is still on the source, nobody asked for it yet. */
export const PAGE_MISSING = 1;
/** A page word: a vCPU asked for the page and waits. */
export const PAGE_REQUESTED = 2;
/** A waiting vCPU re-checks its command word this often, ms (pause and destroy reach it within this). */
export const PAGE_WAIT_SLICE_MS = 5;

/** What a vCPU thread posts to the driver's thread. */
export type PageWaitMessage = { fault: number } | { waitedMs: number };

/**
 * In a vCPU thread: returns once page `pfn` is present (true), or false when the vCPU must stop
 * (a pause or exit came while it waited; the caller retries after it runs again). `post` sends
 * the driver the page fault (once per page) and the wait's length.
 */
export function waitForPage(pages: Int32Array, ctl: Int32Array, pfn: number, post: (m: PageWaitMessage) => void): boolean {
  if (Atomics.load(pages, pfn) === PAGE_PRESENT) return true;
  const t0 = performance.now();
  if (Atomics.compareExchange(pages, pfn, PAGE_MISSING, PAGE_REQUESTED) === PAGE_MISSING) post({ fault: pfn });
  for (;;) {
    const s = Atomics.load(pages, pfn);
    if (s === PAGE_PRESENT) {
      post({ waitedMs: performance.now() - t0 });
      return true;
    }
    if (Atomics.load(ctl, CTL.CMD) !== CMD_RUN) return false;
    Atomics.wait(pages, pfn, s, PAGE_WAIT_SLICE_MS);
  }
}

/** The driver's side: marks pages missing and present, hears faults, keeps the waits. */
export class PostcopyPages {
  /** One Int32 word per page (PAGE_PRESENT, PAGE_MISSING, PAGE_REQUESTED), shared with the vCPUs. */
  readonly sab: SharedArrayBuffer;
  private readonly words: Int32Array;
  /** Called with each page a vCPU waits for (once per page); the receiver asks the source for it. */
  onFault: ((pfn: number) => void) | undefined;
  /** How long each page wait of a vCPU lasted, ms. */
  readonly waitsMs: number[] = [];

  /** `hotPages`: leading pages a switch always sends while paused (the guest header and index, which every write touches). */
  constructor(pageCount: number, private readonly ctl: Int32Array, readonly hotPages: number) {
    this.sab = new SharedArrayBuffer(pageCount * 4);
    this.words = new Int32Array(this.sab);
  }

  /** Pages still missing. */
  get missingPages(): number {
    return Atomics.load(this.ctl, CTL.MISSING);
  }

  /**
   * Marks the pages of range table `ranges` (first, count pairs, disjoint) missing; once, before
   * the vCPUs run (a native fill per range: this is in the switch's blackout).
   */
  markMissing(ranges: ArrayLike<number>): void {
    if (this.missingPages > 0) throw new Error('post-copy pages: markMissing while pages are still missing');
    let n = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      this.words.fill(PAGE_MISSING, ranges[i], ranges[i] + ranges[i + 1]);
      n += ranges[i + 1];
    }
    Atomics.add(this.ctl, CTL.MISSING, n);
  }

  /** Pages [first, first + count) arrived: wakes the vCPUs waiting for any of them. */
  markPresent(first: number, count: number): void {
    let n = 0;
    for (let p = first; p < first + count; p++) {
      const was = Atomics.exchange(this.words, p, PAGE_PRESENT);
      if (was === PAGE_PRESENT) continue;
      n++;
      if (was === PAGE_REQUESTED) Atomics.notify(this.words, p);
    }
    if (n > 0) Atomics.sub(this.ctl, CTL.MISSING, n);
  }

  /** True when page `pfn` is missing. */
  isMissing(pfn: number): boolean {
    return Atomics.load(this.words, pfn) !== PAGE_PRESENT;
  }

  /** A vCPU thread's message (sim-domain.ts passes them on). */
  handle(m: PageWaitMessage): void {
    if ('fault' in m) this.onFault?.(m.fault);
    else this.waitsMs.push(m.waitedMs);
  }
}
