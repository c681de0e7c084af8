/**
 * The target's side of post-copy (protocol.ts "Post-copy"): after the switch the VM runs here
 * while some of its pages are still on the source. Each page arrives once, in a PageBatch the
 * receiver applies as in pre-copy; this module checks a batch names only missing pages (a page
 * the guest already owns is never overwritten), marks its pages present (waking the vCPUs that
 * wait for them), turns vCPU page faults into PageRequest acks and sums up the guest's waits.
 */
import type { PostcopyPageAccess } from '../../hypervisor/types';
import { failedPrecondition, invalidArgument } from '../../lib/errors';
import { acks, type Ack, type Frame } from '../wire/protocol';

/** The guest's page waits during one post-copy, for PostcopyDone and the result. */
export interface PageWaitFigures {
  pageWaits: number;
  pageWaitP50Ms: number;
  pageWaitP99Ms: number;
  /** The target's resume until every page was present, ms. */
  allPresentMs: number;
  /** How long the post-copy stream was down in total (the VM waited for its source to reconnect), ms. */
  stalledMs: number;
  /** How many times the source reconnected. */
  recoveries: number;
}

/** The `q` quantile (0..1) of `values` (nearest rank), 0 for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Rounds to 0.001 ms (figures for people, not nanoseconds). */
const round3 = (v: number): number => Math.round(v * 1000) / 1000;

/** One post-copy on the target, from the switch to the last page. */
export class PostcopyTarget {
  private readonly resumedAt = performance.now();
  private allPresentAt: number | undefined;
  /** Pages a vCPU asked for and that have not come yet (re-requested after a reconnection). */
  private readonly requested = new Set<number>();
  /** Post-copy recovery: when the stream dropped (undefined while attached), the time it was down, the reconnections. */
  private detachedAt: number | undefined;
  private stalledMs = 0;
  private recoveries = 0;

  /** `request`: sends an ack to the source on stream 0 (the PageRequest of a vCPU's fault). */
  constructor(private readonly pages: PostcopyPageAccess, private readonly migrationId: string, request: (a: Ack) => void) {
    pages.onFault = (pfn) => {
      this.requested.add(pfn);
      request(acks.pageRequest([pfn, 1]));
    };
    if (pages.missingPages === 0) this.allPresentAt = this.resumedAt;
  }

  /**
   * The stream dropped: the VM keeps running and its vCPUs keep waiting for missing pages; the
   * stall clock starts at `since` (performance.now(); a silent link: its last byte).
   */
  detached(since = performance.now()): void {
    this.detachedAt ??= since;
  }

  /** Pages a vCPU asked for that have not come yet (a vCPU waits while this is above 0). */
  get pagesWaitedFor(): number {
    return this.requested.size;
  }

  /**
   * The source reconnected: ends the stall (returns its length, ms) and returns the bitmap of
   * the pages still missing of the VM's `pageCount` and the range table of those a vCPU waits for.
   */
  reattached(pageCount: number): { stalledMs: number; missing: Uint32Array; requested: number[] } {
    const stalled = this.detachedAt === undefined ? 0 : performance.now() - this.detachedAt;
    this.detachedAt = undefined;
    this.stalledMs += stalled;
    this.recoveries++;
    const missing = new Uint32Array(Math.ceil(pageCount / 32));
    if (this.pages.missingPages > 0) {
      for (let p = 0; p < pageCount; p++) if (this.pages.isMissing(p)) missing[p >>> 5] |= 1 << (p & 31);
    }
    const requested: number[] = [];
    for (const p of [...this.requested].sort((a, b) => a - b)) {
      if (this.pages.isMissing(p)) requested.push(p, 1);
      else this.requested.delete(p);
    }
    return { stalledMs: stalled, missing, requested };
  }

  /** Pages still missing. */
  get missingPages(): number {
    return this.pages.missingPages;
  }

  /** Refuses a post-copy batch naming a page that is present (it would overwrite the running guest's memory). */
  checkBatch(f: Extract<Frame, { kind: 'batch' }>): void {
    for (const table of [f.ranges, f.zeroRanges]) {
      for (let i = 0; i < table.length; i += 2) {
        for (let p = table[i]; p < table[i] + table[i + 1]; p++) {
          if (!this.pages.isMissing(p)) throw invalidArgument(`post-copy batch ${f.seq}: page ${p} is already present on the target (each page is sent once)`);
        }
      }
    }
  }

  /** The batch's pages are applied: marks them present. */
  applied(f: Extract<Frame, { kind: 'batch' }>): void {
    for (const table of [f.ranges, f.zeroRanges]) {
      for (let i = 0; i < table.length; i += 2) this.pages.markPresent(table[i], table[i + 1]);
    }
    if (this.requested.size > 0) for (const p of this.requested) if (!this.pages.isMissing(p)) this.requested.delete(p);
    if (this.pages.missingPages === 0 && this.allPresentAt === undefined) this.allPresentAt = performance.now();
  }

  /** The final Complete may come only once every page is here. */
  checkComplete(): void {
    const n = this.pages.missingPages;
    if (n > 0) throw failedPrecondition(`migration ${this.migrationId}: post-copy Complete with ${n} page(s) still missing on the target`);
  }

  /** The guest's waits so far. */
  figures(): PageWaitFigures {
    const w = this.pages.waitsMs;
    return {
      pageWaits: w.length, pageWaitP50Ms: round3(quantile(w, 0.5)), pageWaitP99Ms: round3(quantile(w, 0.99)),
      allPresentMs: round3((this.allPresentAt ?? performance.now()) - this.resumedAt),
      stalledMs: round3(this.stalledMs + (this.detachedAt === undefined ? 0 : performance.now() - this.detachedAt)), recoveries: this.recoveries,
    };
  }

  /** Stops listening to faults (the migration ended, or was lost). */
  close(): void {
    this.pages.onFault = undefined;
  }
}
