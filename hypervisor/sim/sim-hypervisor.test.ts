import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { PAGE_SIZE, VmSpec } from '../types';
import { SLOT_PAGES, fillPage, guestLayout, seedPrng, xoshiro128ss, zipfRank } from './layout';
import { PROFILES, resolveProfile } from './profiles';
import { DEVICE_STATE_HEADER_BYTES, SimDomain, SimHypervisor } from './sim-hypervisor';
import { setTimeout as sleep } from 'node:timers/promises';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const hv = new SimHypervisor();
after(() => hv.close());

function spec(name: string, over: Partial<VmSpec> = {}): VmSpec {
  return { name, memBytes: 64 * MiB, vcpus: 1, profile: 'web', seed: 42, ...over };
}

function bits(bm: Uint32Array): number[] {
  const out: number[] = [];
  for (let w = 0; w < bm.length; w++) {
    let x = bm[w];
    while (x !== 0) {
      const b = 31 - Math.clz32(x & -x);
      out.push(w * 32 + b);
      x &= x - 1;
    }
  }
  return out;
}

/** Copies pages (all when `bm` is undefined) from src to dst, the way a migration would. */
function copyPages(src: SimDomain, dst: SimDomain, bm?: Uint32Array): number {
  let sent = 0;
  const pfns = bm ? bits(bm) : Array.from({ length: src.pageCount }, (_, i) => i);
  for (const pfn of pfns) {
    if (src.isZeroPage(pfn)) {
      if (!dst.isZeroPage(pfn)) dst.pageView(pfn, 1).fill(0);
      continue;
    }
    dst.pageView(pfn, 1).set(src.pageView(pfn, 1));
    sent++;
  }
  return sent;
}

describe('profiles', () => {
  it('resolves documented defaults and spec overrides', () => {
    const web = resolveProfile({ memBytes: 1 * GiB, profile: 'web' });
    assert.equal(web.wssBytes, 16 * MiB);
    assert.equal(web.dirtyRateBytesPerSec, 100 * MiB);
    assert.equal(web.fillBytes, 192 * MiB);
    const db = resolveProfile({ memBytes: 512 * MiB, profile: 'db' });
    assert.equal(db.wssBytes, 128 * MiB);
    assert.equal(db.pattern, 'zipf');
    assert.equal(resolveProfile({ memBytes: 8 * GiB, profile: 'db' }).wssBytes, 256 * MiB);
    assert.equal(resolveProfile({ memBytes: 1 * GiB, profile: 'mmuncher' }).dirtyRateBytesPerSec, Infinity);
    assert.equal(resolveProfile({ memBytes: 8 * GiB, profile: 'idle' }).fillBytes, PROFILES.idle.fillCapBytes);
    const o = resolveProfile({ memBytes: 1 * GiB, profile: 'idle', wssBytes: 3 * MiB, dirtyRateBytesPerSec: 5 * MiB, fillBytes: 0 });
    assert.deepEqual([o.wssBytes, o.dirtyRateBytesPerSec, o.fillBytes], [3 * MiB, 5 * MiB, 0]);
    // Clamped to the data area of a small guest.
    const small = resolveProfile({ memBytes: 16 * MiB, profile: 'mmuncher' });
    assert.equal(small.wssPages, guestLayout(16 * MiB).dataPages);
    assert.throws(() => resolveProfile({ memBytes: GiB, profile: 'nope' as never }), /unknown profile 'nope'/);
  });
});

describe('sim domain', () => {
  it('rejects bad specs with a clear error', async () => {
    await assert.rejects(hv.createDomain(spec('Bad_Name')), /VM name "Bad_Name" is invalid/);
    await assert.rejects(hv.createDomain(spec('a', { memBytes: 1000 })), /memory 1000 bytes/);
    await assert.rejects(hv.createDomain(spec('a', { vcpus: 0 })), /vcpus 0/);
  });

  it('dirty log: writes set bits, getAndClear clears, markDirty folds back, pause keeps it clean', async () => {
    const d = await hv.createDomain(spec('dlog'));
    const L = d.layout;
    assert.equal(d.state(), 'running');
    d.startDirtyLog();
    await sleep(60);
    const bm = d.getAndClearDirtyLog();
    const set = bits(bm);
    const wssEnd = L.dataStart + d.workload.wssPages;
    const data = set.filter((p) => p >= L.dataStart);
    assert.ok(data.length > 20, `expected dirty data pages, got ${data.length}`);
    assert.ok(data.every((p) => p < wssEnd), 'dirty data pages lie in the WWS');
    assert.ok(set.includes(0), 'heartbeat page is dirty');
    assert.ok(set.some((p) => p >= L.indexStart && p < L.dataStart), 'index pages are dirty');

    await d.pause();
    assert.equal(d.state(), 'paused');
    d.getAndClearDirtyLog();
    const written = d.bytesWritten();
    const beats = d.heartbeat().beats;
    await sleep(80);
    assert.equal(bits(d.peekDirtyLog()).length, 0, 'no page dirtied while paused');
    assert.equal(bits(d.getAndClearDirtyLog()).length, 0);
    assert.equal(d.bytesWritten(), written);
    assert.equal(d.heartbeat().beats, beats);

    d.markDirty(bm);
    assert.deepEqual(bits(d.peekDirtyLog()), set, 'markDirty restores the bits');
    assert.deepEqual(bits(d.peekDirtyLog()), set, 'peek does not clear');
    assert.deepEqual(bits(d.getAndClearDirtyLog()), set);
    assert.equal(bits(d.peekDirtyLog()).length, 0);

    await d.resume();
    await sleep(30);
    assert.ok(d.heartbeat().beats > beats, 'guest runs again after resume');
    assert.ok((await d.guestCheck()).ok);
    assert.equal(d.state(), 'running', 'guestCheck resumes a running guest');
    await d.destroy();
    await d.destroy(); // idempotent
    assert.equal(d.state(), 'destroyed');
    assert.throws(() => d.stats(), /destroyed/);
  });

  it('migrates: pre-copy rounds + device state into an incoming domain; the copy checks out and keeps running', async () => {
    const s = spec('mig', { vcpus: 2, profile: 'db' });
    const src = await hv.createDomain(s);
    const dst = await hv.createIncoming(s);
    assert.equal(dst.state(), 'incoming');
    assert.equal(dst.heartbeat().beats, 0, 'incoming memory is zero');
    await assert.rejects(dst.resume(), /no device state/);

    src.startDirtyLog();
    copyPages(src, dst); // round 1: everything non-zero
    for (let round = 0; round < 3; round++) {
      await sleep(20);
      copyPages(src, dst, src.getAndClearDirtyLog());
    }
    await src.pause();
    const pausedAt = performance.timeOrigin + performance.now();
    copyPages(src, dst, src.getAndClearDirtyLog());
    const state = src.saveDeviceState();
    const srcBytes = src.bytesWritten();
    const srcBeats = src.heartbeat().beats;
    const srcLastBeat = src.heartbeat().lastBeatMs;
    const srcCheck = await src.guestCheck();
    assert.ok(srcCheck.ok, srcCheck.detail);
    await src.destroy();

    dst.loadDeviceState(state);
    assert.equal(dst.state(), 'paused');
    const pre = await dst.guestCheck();
    assert.ok(pre.ok, pre.detail);
    assert.equal(dst.bytesWritten(), srcBytes, 'dirty counter continues');
    assert.equal(dst.heartbeat().beats, srcBeats);
    await sleep(15);
    const resumeCalledAt = performance.timeOrigin + performance.now();
    await dst.resume();
    await sleep(100);
    const hb = dst.heartbeat();
    assert.ok(hb.beats > srcBeats + 10, `target beats (${hb.beats} vs ${srcBeats})`);
    assert.ok(hb.maxGapMs >= 15, `guest saw the blackout (maxGap ${hb.maxGapMs} ms)`);
    // The resume gap is the blackout itself: the source's last beat to the target's first, which came after the resume.
    const gap = hb.resumeGapMs ?? NaN;
    assert.ok(srcLastBeat + gap >= resumeCalledAt, `resume gap ${gap} ms ends after the resume (${resumeCalledAt - srcLastBeat} ms after the source's last beat)`);
    assert.ok(gap <= hb.maxGapMs, `resume gap ${gap} ms within the largest gap ${hb.maxGapMs} ms`);
    assert.ok(hb.lastBeatMs > pausedAt);
    assert.ok(dst.bytesWritten() > srcBytes, 'target guest writes');
    const post = await dst.guestCheck();
    assert.ok(post.ok, post.detail);
    assert.equal(dst.state(), 'running');
    await dst.pause();
    dst.resetHeartbeatGap();
    assert.equal(dst.heartbeat().maxGapMs, 0, 'gap reset');
    assert.equal(bits(dst.peekDirtyLog())[0], 0, 'the reset dirties the header page');
    await dst.resume();
    await dst.destroy();
  });

  it('guestCheck catches a corrupted page, a stale version and a lost write', async () => {
    const d = await hv.createDomain(spec('corrupt', { profile: 'idle', fillBytes: 2 * MiB }));
    await d.pause();
    const L = d.layout;
    assert.ok((await d.guestCheck()).ok);
    const versionOf = (pfn: number): number => new Uint32Array(d.pageView(L.indexStart, L.indexPages).buffer, L.indexStart * PAGE_SIZE)[pfn];

    // 1. a flipped byte
    const p1 = L.dataStart + 10;
    assert.ok(versionOf(p1) >= 1);
    const v1 = d.pageView(p1, 1);
    v1[1000] ^= 0xff;
    let r = await d.guestCheck();
    assert.equal(r.ok, false);
    assert.equal(r.badPages, 1);
    assert.match(r.detail, new RegExp(`pfn ${p1}`));
    v1[1000] ^= 0xff;
    assert.ok((await d.guestCheck()).ok);

    // 2. a stale page: content of version v-1 while the index says v
    const p2 = L.dataStart + 20;
    const w = new Uint32Array(d.pageView(p2, 1).buffer, d.pageView(p2, 1).byteOffset, 1024);
    const saved = w.slice();
    const idx = new Uint32Array(d.pageView(L.indexStart, 1).buffer, L.indexStart * PAGE_SIZE, 1024);
    idx[p2] += 1; // the guest "wrote" once more but the page did not arrive
    r = await d.guestCheck();
    assert.equal(r.ok, false);
    assert.match(r.detail, new RegExp(`pfn ${p2}: index says version ${saved[2] + 1}, page holds version ${saved[2]}`));
    idx[p2] -= 1;

    // 3. a page the index says was never written holds data
    const p3 = d.pageCount - 1;
    assert.equal(versionOf(p3), 0);
    assert.ok(d.isZeroPage(p3));
    const v3 = new Uint32Array(d.pageView(p3, 1).buffer, d.pageView(p3, 1).byteOffset, 1024);
    fillPage(v3, 0, p3, 1);
    assert.equal(d.isZeroPage(p3), false);
    r = await d.guestCheck();
    assert.equal(r.badPages, 1);
    assert.match(r.detail, /version 0/);
    v3.fill(0);
    assert.ok(d.isZeroPage(p3));
    assert.ok((await d.guestCheck()).ok);
    await d.destroy();
  });

  it('each profile boots and dirties roughly its rate', async () => {
    const want: Record<string, [number, number]> = {
      idle: [0.3 * MiB, 3 * MiB],
      web: [40 * MiB, 160 * MiB],
      db: [80 * MiB, 320 * MiB],
      mmuncher: [200 * MiB, Infinity], // ~1-8 GB/s on a quiet core; loose for a loaded machine
    };
    for (const profile of ['idle', 'web', 'db', 'mmuncher'] as const) {
      // mmuncher's 64 MiB WWS would not fit a 64 MiB guest: use 8 MiB, inside the boot fill, so
      // the measurement does not include first-touch page faults.
      const over = profile === 'mmuncher' ? { wssBytes: 8 * MiB } : {};
      const d = await hv.createDomain(spec(`rate-${profile}`, { profile, ...over }));
      await sleep(100);
      assert.ok(d.stats().touchedBytes >= d.workload.fillBytes, `${profile}: boot fill touched`);
      const b0 = d.bytesWritten();
      const t0 = performance.now();
      await sleep(500);
      const rate = ((d.bytesWritten() - b0) * 1000) / (performance.now() - t0);
      const [lo, hi] = want[profile];
      assert.ok(rate >= lo && rate <= hi, `${profile}: ${(rate / MiB).toFixed(1)} MiB/s not in [${lo / MiB}, ${hi / MiB}]`);
      const st = d.stats();
      assert.ok(st.dirtyRateBytesPerSec >= lo * 0.5 && st.dirtyRateBytesPerSec <= hi * 2, `${profile}: stats rate ${st.dirtyRateBytesPerSec}`);
      assert.ok(st.cpu >= 0 && st.cpu <= 1);
      const hb = d.heartbeat();
      assert.ok(hb.beats > 100, `${profile}: heartbeat every ~0.1-0.2 ms (${hb.beats} beats in ~0.6 s)`);
      const c = await d.guestCheck();
      assert.ok(c.ok, `${profile}: ${c.detail}`);
      await d.destroy();
    }
  });

  it('an 8 GiB idle VM boots without touching its memory, slots and views behave', async () => {
    const rss0 = process.memoryUsage().rss;
    const d = await hv.createDomain(spec('big', { memBytes: 8 * GiB, profile: 'idle' }));
    assert.equal(d.pageCount, 2 * 1024 * 1024);
    assert.equal(d.slotPages, SLOT_PAGES);
    const last = d.pageCount - 1;
    assert.equal(d.pageView(last, 1).length, PAGE_SIZE);
    assert.equal(d.pageView(SLOT_PAGES, SLOT_PAGES).length, GiB);
    assert.throws(() => d.pageView(SLOT_PAGES - 1, 2), /cross the memory slot boundary/);
    assert.throws(() => d.pageView(last, 2), /out of range/);
    assert.ok(d.isZeroPage(5 * SLOT_PAGES + 7));
    assert.ok(d.stats().touchedBytes <= 64 * MiB + 16 * PAGE_SIZE);
    const grew = process.memoryUsage().rss - rss0;
    assert.ok(grew < 1 * GiB, `RSS grew by ${(grew / MiB).toFixed(0)} MiB`);
    await d.destroy();
  });

  it('a last slot smaller than 1 GiB works', async () => {
    const d = await hv.createIncoming(spec('odd', { memBytes: GiB + 64 * MiB, profile: 'idle' }));
    assert.equal(d.pageView(SLOT_PAGES, 16384).length, 64 * MiB);
    assert.throws(() => d.pageView(SLOT_PAGES, 16385), /out of range/);
    await d.destroy();
  });

  it('rejects bad device state with clear errors', async () => {
    const s = spec('dev', { vcpus: 2, profile: 'idle', fillBytes: 0 });
    const d = await hv.createDomain(s);
    assert.throws(() => d.saveDeviceState(), /pause it first/);
    await d.pause();
    const good = d.saveDeviceState();
    assert.equal(good.length, DEVICE_STATE_HEADER_BYTES + 2 * 128);
    const t = await hv.createIncoming(s);
    const bad = (f: (b: Uint8Array, dv: DataView) => void): Uint8Array => {
      const b = good.slice();
      f(b, new DataView(b.buffer));
      return b;
    };
    assert.throws(() => t.loadDeviceState(good.subarray(0, 10)), /shorter than its 64-byte header/);
    assert.throws(() => t.loadDeviceState(bad((_, v) => v.setUint32(0, 1, true))), /not a sim device state/);
    assert.throws(() => t.loadDeviceState(bad((_, v) => v.setUint32(4, 9, true))), /version 9 not supported .*version 1/);
    assert.throws(() => t.loadDeviceState(bad((_, v) => v.setUint32(8, 3, true))), /3 vCPUs, domain has 2/);
    assert.throws(() => t.loadDeviceState(bad((_, v) => v.setUint32(12, 4, true))), /profile 'mmuncher', domain runs 'idle'/);
    assert.throws(() => t.loadDeviceState(bad((_, v) => v.setFloat64(16, 32 * MiB, true))), /bytes of RAM/);
    assert.throws(() => t.loadDeviceState(bad((b) => (b[DEVICE_STATE_HEADER_BYTES + 5] ^= 1))), /checksum/);
    assert.throws(() => t.loadDeviceState(good.subarray(0, good.length - 8)), /expected 320/);
    const other = await hv.createIncoming(spec('dev', { vcpus: 2, profile: 'web', fillBytes: 0 }));
    assert.throws(() => other.loadDeviceState(good), /profile 'idle', domain runs 'web'/);
    t.loadDeviceState(good);
    await Promise.all([d.destroy(), t.destroy(), other.destroy()]);
  });

  it('is repeatable given a seed: the index equals a replay of the seeded PRNG', async () => {
    const s = spec('seed', { profile: 'db', memBytes: 32 * MiB, fillBytes: 0, dirtyRateBytesPerSec: 40 * MiB, seed: 1234 });
    const d = await hv.createDomain(s);
    // Let the guest write a few hundred pages (however long a loaded host takes to start its vCPU).
    for (let waited = 0; d.bytesWritten() / PAGE_SIZE <= 100 && waited < 10_000; waited += 20) await sleep(20);
    await d.pause();
    const n = d.bytesWritten() / PAGE_SIZE;
    assert.ok(n > 100, `${n} writes`);
    const L = d.layout;
    const idx = new Uint32Array(d.pageView(L.indexStart, L.indexPages).buffer, L.indexStart * PAGE_SIZE, d.pageCount);
    const expect = new Uint32Array(d.pageCount);
    const prng = new Uint32Array(4);
    seedPrng(prng, 1234, 0);
    for (let i = 0; i < n; i++) expect[L.dataStart + zipfRank(xoshiro128ss(prng), d.workload.wssPages)]++;
    assert.deepEqual(idx.subarray(L.dataStart), expect.subarray(L.dataStart));
    await d.destroy();
  });
});
