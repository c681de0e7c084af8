/**
 * The sim guest's own memory check: every data page the guest wrote holds the version its index
 * records (magic, pfn, version, then a fill derived from both); a page never written is zero.
 */
import { PAGE_SIZE, type GuestCheckResult } from '../types';
import { GUEST_MAGIC, H32, PAGE_MAGIC, PAGE_WORDS, SLOT_MASK, SLOT_SHIFT, fillPage } from './layout';

/** Failures listed in the detail (the count covers all). */
const MAX_LISTED = 5;

/** What the check reads of a paused sim guest. */
export interface GuestMemory {
  /** The guest header page as words. */
  hdr32: Uint32Array;
  /** The guest's version index, one word per page. */
  index: Uint32Array;
  /** Guest RAM slots and Buffer views of them. */
  slots: SharedArrayBuffer[];
  slotBufs: Buffer[];
  pageCount: number;
  /** First data page (header and index come before). */
  dataStart: number;
  /** True when the page holds only zeros (never touched, or compared). */
  isZero(pfn: number): boolean;
}

/** Checks every data page against the guest's index (the guest must not run meanwhile). */
export function checkGuestMemory(g: GuestMemory): GuestCheckResult {
  const bad: string[] = [];
  let badPages = 0;
  const note = (s: string): void => {
    badPages++;
    if (bad.length < MAX_LISTED) bad.push(s);
  };
  if (g.hdr32[H32.MAGIC] !== GUEST_MAGIC) {
    note(`pfn 0: guest header magic 0x${g.hdr32[H32.MAGIC].toString(16)} != 0x${GUEST_MAGIC.toString(16)}`);
  }
  const expect = new Uint32Array(PAGE_WORDS);
  const expectBuf = Buffer.from(expect.buffer);
  for (let pfn = g.dataStart; pfn < g.pageCount; pfn++) {
    const v = g.index[pfn];
    if (v === 0) {
      if (!g.isZero(pfn)) note(`pfn ${pfn}: index says never written (version 0) but page is not zero`);
      continue;
    }
    fillPage(expect, 0, pfn, v);
    const off = (pfn & SLOT_MASK) * PAGE_SIZE;
    const buf = g.slotBufs[pfn >>> SLOT_SHIFT];
    if (buf.compare(expectBuf, 0, PAGE_SIZE, off, off + PAGE_SIZE) !== 0) {
      const w = new Uint32Array(g.slots[pfn >>> SLOT_SHIFT], off, 3);
      const seen = w[0] === PAGE_MAGIC && w[1] === pfn ? `version ${w[2]}` : 'foreign content';
      note(`pfn ${pfn}: index says version ${v}, page holds ${seen}`);
    }
  }
  const pagesChecked = g.pageCount - g.dataStart;
  return {
    ok: badPages === 0,
    pagesChecked,
    badPages,
    detail: badPages === 0 ? '' : `${badPages} bad page(s): ${bad.join('; ')}${badPages > bad.length ? '; ...' : ''}`,
  };
}
