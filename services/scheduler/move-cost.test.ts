import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirtyingOf, linkRate, outboundRate, vmMoveCost, DEFAULT_SETUP_MS } from './move-cost';
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
  const s = dirtyingOf({ ...web, profile: 'mmuncher' });
  assert.equal(s.from, 'spec');
  assert.ok(Number.isFinite(s.dirtyRateBytesPerSec) && s.dirtyRateBytesPerSec > 0);
});

test('links: the given rate, else the measured one with its set-up, else the default; a node\'s outbound mean', () => {
  const rec: LinkRecord = { bytesPerSec: 300 * MiB, setupMs: 40, samples: 3, at: 1 };
  assert.deepEqual(linkRate(rec, 50 * MiB), { bytesPerSec: 50 * MiB, link: 'given', setupMs: 40 });
  assert.deepEqual(linkRate(rec), { bytesPerSec: 300 * MiB, link: 'measured', setupMs: 40 });
  assert.deepEqual(linkRate(undefined), { bytesPerSec: DEFAULT_LINK_BYTES_PER_SEC, link: 'default', setupMs: DEFAULT_SETUP_MS });
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
