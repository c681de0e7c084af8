import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirtyingOf, foldLink, linkRate, outboundRate, predictMove, vmMoveCost, DEFAULT_ROUND_MS, DEFAULT_SETUP_MS, LINK_EWMA_ALPHA } from './move-cost';
import { DEFAULT_LINK_BYTES_PER_SEC } from '../../migration/policy/cost-model';
import type { HeartbeatVm, LinkRecord } from '../../cluster/keyspace';
import type { VmSpec } from '../../hypervisor/types';

const MiB = 2 ** 20;
const web: VmSpec = { name: 'w', memBytes: 256 * MiB, vcpus: 1, profile: 'web' };
const hb = (over: Partial<HeartbeatVm> = {}): HeartbeatVm => ({ name: 'w', memBytes: 256 * MiB, vcpus: 1, state: 'running', dirtyRateBytesPerSec: 100 * MiB, cpu: 0.1, touchedBytes: 64 * MiB, ...over });

test('dirtying: an observation in the heartbeat wins; else the heartbeat rate bounded by the spec working set; else the spec', () => {
  const observed = { dirtyRateBytesPerSec: 80 * MiB, nonzeroBytes: 70 * MiB, wss: [{ windowMs: 10, bytes: MiB }, { windowMs: 1000, bytes: 16 * MiB }], at: Date.now() };
  const o = dirtyingOf(web, hb({ observed }));
  assert.equal(o.from, 'observed');
  assert.deepEqual([o.dirtyRateBytesPerSec, o.nonzeroBytes, o.wss], [80 * MiB, 70 * MiB, observed.wss]);
  const h = dirtyingOf(web, hb());
  assert.equal(h.from, 'heartbeat');
  assert.equal(h.nonzeroBytes, 64 * MiB, 'round 1 sends the touched RAM');
  assert.equal(Math.max(...h.wss.map((p) => p.bytes)), 16 * MiB, "web's 16 MiB working set bounds the curve");
  // 100 MiB/s on a tenth of its vCPU: a throttle slows it only past 90%.
  assert.equal(h.maxWriteBytesPerSec, 1000 * MiB);
  assert.equal(o.maxWriteBytesPerSec, 800 * MiB);
  const s = dirtyingOf({ ...web, profile: 'mmuncher' });
  assert.equal(s.from, 'spec');
  assert.ok(Number.isFinite(s.dirtyRateBytesPerSec) && s.dirtyRateBytesPerSec > 0);
});

test('links: the given rate, else the measured one with its set-up, else the default; a node\'s outbound mean', () => {
  const rec: LinkRecord = { bytesPerSec: 300 * MiB, setupMs: 40, samples: 3, at: 1 };
  // A record from before round costs were measured: none; a pair with no record: the default.
  assert.deepEqual(linkRate(rec, 50 * MiB), { bytesPerSec: 50 * MiB, link: 'given', setupMs: 40, roundMs: 0, postcopySwitchMs: 1 });
  assert.deepEqual(linkRate({ ...rec, roundMs: 30 }), { bytesPerSec: 300 * MiB, link: 'measured', setupMs: 40, roundMs: 30, postcopySwitchMs: 1 });
  assert.deepEqual(linkRate({ ...rec, roundMs: 30 }, 50 * MiB).roundMs, 30, 'the path\'s round cost whatever rate is given');
  assert.deepEqual(linkRate(undefined), { bytesPerSec: DEFAULT_LINK_BYTES_PER_SEC, link: 'default', setupMs: DEFAULT_SETUP_MS, roundMs: DEFAULT_ROUND_MS, postcopySwitchMs: 1 });
  const links = new Map<string, LinkRecord>([['a/b', rec], ['a/c', { bytesPerSec: 100 * MiB, setupMs: 20, samples: 1, at: 2 }], ['b/a', { bytesPerSec: 1, samples: 1, at: 3 }]]);
  const out = outboundRate(links, 'a')!;
  assert.deepEqual([out.bytesPerSec, out.setupMs, out.samples, out.at], [200 * MiB, 30, 4, 2]);
  assert.equal(outboundRate(links, 'z'), undefined);
});

test('a move over a slow measured link costs more time than over the default; a muncher does not converge', () => {
  const fast = vmMoveCost(web, 'a', hb(), new Map());
  const slow = vmMoveCost(web, 'a', hb(), new Map([['a/b', { bytesPerSec: 40 * MiB, setupMs: 100, samples: 1, at: 1 }]]));
  assert.equal(fast.prediction.link, 'default');
  assert.equal(slow.prediction.link, 'measured');
  assert.ok(slow.ms > fast.ms + 100, `${slow.ms} vs ${fast.ms}`);
  assert.equal(fast.converges, true);
  const munch = vmMoveCost({ ...web, profile: 'mmuncher' }, 'a', hb({ dirtyRateBytesPerSec: 3000 * MiB }), new Map());
  assert.equal(munch.converges, false);
  assert.equal(munch.prediction.policy, 'throttle');
});

test('links learn from large moves: a small first move\'s start-up-bound rate gives way to the first large one; later small moves barely move it', () => {
  const sample = (mib: number, mibPerSec: number, setupMs = 40) => ({ bytesSent: mib * MiB, throughputBytesPerSec: mibPerSec * MiB, totalMs: setupMs + (mib / mibPerSec) * 1000 + 3, downtimeMs: 3 });
  assert.equal(foldLink(undefined, sample(4, 40), 1), undefined, 'a 4 MiB move is no sample');
  // A new pair starts from the default link (half a full sample): an 8 MiB first move at 16 MiB/s takes a fifth of the way.
  const tiny = foldLink(undefined, sample(8, 16), 1)!;
  const def = DEFAULT_LINK_BYTES_PER_SEC;
  assert.ok(Math.abs(tiny.bytesPerSec - (def + (16 * MiB - def) / 5)) < 1, `${tiny.bytesPerSec / MiB} MiB/s`);
  assert.equal(tiny.samples, 1);
  // A large first move on a slow link takes two thirds; a second one most of the rest.
  const slow = foldLink(undefined, sample(128, 20), 1)!;
  assert.ok(Math.abs(slow.bytesPerSec - (def + (2 / 3) * (20 * MiB - def))) < 1);
  assert.ok(foldLink(slow, sample(128, 20), 2)!.bytesPerSec < 45 * MiB);
  const first = foldLink(undefined, sample(16, 40), 1)!;
  const second = foldLink(first, sample(128, 130), 2)!;
  assert.ok(second.bytesPerSec > 110 * MiB, `after a 128 MiB move at 130 MiB/s: ${second.bytesPerSec / MiB} MiB/s`);
  assert.ok(Math.abs(second.setupMs! - 40) < 15, `set-up ${second.setupMs}`);
  // Settled (weights up to 1 / alpha): a small move takes a share in proportion to its size.
  let settled = second;
  for (let i = 0; i < 4; i++) settled = foldLink(settled, sample(128, 130), 3 + i)!;
  const small = foldLink(settled, sample(16, 40), 10)!;
  assert.ok(settled.bytesPerSec - small.bytesPerSec < 0.1 * (settled.bytesPerSec - 40 * MiB), `${small.bytesPerSec / MiB} vs ${settled.bytesPerSec / MiB}`);
  assert.equal(small.samples, 7);
  // A large move after a settled link: the moving average's share.
  const big = foldLink(settled, sample(256, 60), 11)!;
  assert.ok(Math.abs(big.bytesPerSec - (settled.bytesPerSec + LINK_EWMA_ALPHA * (60 * MiB - settled.bytesPerSec))) < 1);
  // A record written before weights: its samples count as full ones.
  // LZ4's ratio on the sampled batches is learned beside the rate.
  assert.equal(big.lz4Ratio, undefined);
  const sampled = foldLink(big, { ...sample(64, 100), compressedPageBytes: 8 * MiB, compressedBytes: 4 * MiB }, 13)!;
  assert.equal(sampled.lz4Ratio, 0.5);
  assert.equal(foldLink(sampled, sample(64, 100), 14)!.lz4Ratio, 0.5);
  const old = foldLink({ bytesPerSec: 100 * MiB, setupMs: 50, samples: 5, at: 1 }, sample(16, 40), 12)!;
  assert.ok(Math.abs(old.bytesPerSec - (100 - LINK_EWMA_ALPHA * 0.25 * 60) * MiB) < 1, `${old.bytesPerSec / MiB}`);
});

test('links learn the per-round cost of the migrations that measured one; the rate is the stream\'s without it', () => {
  // 96 MiB in 8 rounds at a stream of 150 MiB/s plus 30 ms a pre-copy round (7 of them): the result's throughput is the mix.
  const sendingMs = (96 / 150) * 1000 + 7 * 30;
  const r = { bytesSent: 96 * MiB, throughputBytesPerSec: (96 * MiB * 1000) / sendingMs, totalMs: 40 + sendingMs + 3, downtimeMs: 3, rounds: 8, roundOverheadMs: 30 };
  const first = foldLink(undefined, r, 1)!;
  assert.equal(first.roundMs, 30, 'the first measurement is taken whole');
  // The stream's rate (150 MiB/s) is what moves toward, not the mixed one (~113 MiB/s).
  const def = DEFAULT_LINK_BYTES_PER_SEC;
  assert.ok(Math.abs(first.bytesPerSec - (def + (2 / 3) * (150 * MiB - def))) < 1, `${first.bytesPerSec / MiB} MiB/s`);
  // A later measurement moves it by the moving average's share; a migration without one leaves it.
  const second = foldLink(first, { ...r, roundOverheadMs: 10 }, 2)!;
  assert.ok(Math.abs(second.roundMs! - (30 + LINK_EWMA_ALPHA * (10 - 30))) < 1e-9);
  const { roundOverheadMs: _none, ...unmeasured } = r;
  assert.equal(foldLink(second, unmeasured, 3)!.roundMs, second.roundMs);
  // A post-copy switch's blackout beyond its hot pages: 0.5 MiB at the 113 MiB/s measured take ~4.4 ms of a 24 ms downtime; a pre-copy downtime says nothing of it.
  const breakdown = { pauseMs: 0.1, finalRoundMs: 5, finalPages: 128, deviceMs: 0.1, verifyMs: 18, commitMs: 0, activateMs: 1 };
  const sw = foldLink(undefined, { ...r, mode: 'postcopy', downtimeMs: 24, downtimeBreakdown: breakdown }, 4)!;
  assert.ok(Math.abs(sw.postcopySwitchMs! - (24 - (0.5 * MiB / r.throughputBytesPerSec) * 1000)) < 1e-9, `${sw.postcopySwitchMs}`);
  assert.equal(foldLink(undefined, { ...r, mode: 'precopy', downtimeMs: 24, downtimeBreakdown: breakdown }, 4)!.postcopySwitchMs, undefined);
  assert.equal(linkRate(sw).postcopySwitchMs, sw.postcopySwitchMs);
  assert.equal(linkRate(first).postcopySwitchMs, 1, 'not measured: the engine\'s overhead');
  // The model adds it to every round: a web VM that converges on the quiet pair does not on the loaded one.
  const d = dirtyingOf(web, hb({ observed: { dirtyRateBytesPerSec: 100 * MiB, nonzeroBytes: 64 * MiB, wss: [{ windowMs: 10, bytes: MiB }, { windowMs: 100, bytes: 7 * MiB }, { windowMs: 500, bytes: 15 * MiB }, { windowMs: 2000, bytes: 16 * MiB }], at: 1 } }));
  assert.equal(predictMove(d, { ...linkRate(first), roundMs: 1 }).converges, true);
  assert.equal(predictMove(d, linkRate(first)).converges, false);
});
