import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { QemuHypervisor, guestCmdline } from './qemu-hypervisor';
import { GuestConsole, QemuProcess } from './qemu-process';
import { ensureGuest } from './guest-image';
import { detectAccel } from './accel';
import { setTimeout as sleep } from 'node:timers/promises';

const MiB = 1024 * 1024;

test('guest console: dots are beats, # lines are parsed, dots inside lines are not beats', () => {
  const c = new GuestConsole();
  c.feed('#boot build/drover-guest.elf fill=1\n..', 1000);
  c.feed('.\n#ready 1024 512 0\n...', 1010);
  c.feed('\n#s 1000 4000\n', 1020);
  c.feed('..\n#s 2000 6000\n', 1100);
  assert.equal(c.beats, 8);
  assert.deepEqual(c.ready, { fillKiB: 1024, wssKiB: 512, rateKiBps: 0 });
  assert.equal(c.pagesPerSec, 2000);
  assert.equal(c.maxGapMs, 90);
  assert.equal(c.firstBeatMs, 1000);
});

test('guest command line carries profile defaults and overrides', () => {
  const s = guestCmdline({ name: 'a', memBytes: 128 * MiB, vcpus: 1, profile: 'web', wssBytes: 4 * MiB });
  assert.equal(s, 'profile=web fill=65536 wss=4096 rate=16384 seed=1');
});

test('accel detection runs a guest and caches the answer', async () => {
  const a = await detectAccel();
  assert.ok(a.accel === 'kvm' || a.accel === 'tcg', a.reason);
  assert.equal(await detectAccel(), a);
});

test('boot: heartbeat arrives; pause stops it, resume restarts it', async () => {
  const hv = new QemuHypervisor();
  try {
    const d = await hv.createDomain({ name: 'life', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' });
    assert.equal(d.state(), 'running');
    assert.equal(await d.status(), 'running');
    await d.waitBeats(d.heartbeat().beats + 50, 5000);
    await d.pause();
    assert.equal(await d.status(), 'paused');
    await sleep(50); // bytes already in flight
    const frozen = d.heartbeat().beats;
    await sleep(400);
    assert.equal(d.heartbeat().beats, frozen, 'no beats while paused');
    await d.resume();
    await d.waitBeats(frozen + 50, 5000);
    assert.ok(d.stats().touchedBytes >= 8 * MiB);
    // No page access: the domain migrates through QEMU's own stream (was: page calls threw UNIMPLEMENTED).
    assert.equal(d.migration.kind, 'stream');
    assert.ok(!('getAndClearDirtyLog' in d));
    await d.destroy();
    await d.destroy();
    assert.equal(d.state(), 'destroyed');
  } finally {
    await hv.close();
  }
});

test('QEMU binary missing: the error names the command line', async () => {
  const hv = new QemuHypervisor({ binary: '/nonexistent/qemu-bogus', accel: 'tcg' });
  await assert.rejects(hv.createDomain({ name: 'nobin', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' }), (e: DroverError) => {
    assert.equal(e.code, 'FAILED_PRECONDITION');
    assert.match(e.message, /binary not found: \/nonexistent\/qemu-bogus/);
    assert.match(e.message, /\/nonexistent\/qemu-bogus -name nobin -machine pc -accel tcg -m 64/);
    return true;
  });
});

test('QEMU failing to start: the error carries its stderr', async () => {
  const kernel = await ensureGuest();
  await assert.rejects(QemuProcess.start({ accel: 'tcg', memMiB: 64, vcpus: 1, kernel, append: '', name: 'bad', extraArgs: ['-device', 'no-such-device'] }), (e: DroverError) => {
    assert.match(e.message, /QEMU failed to start \(exited with status 1\): qemu-system-x86_64 -name bad .*-device no-such-device/);
    assert.match(e.message, /QEMU stderr: .*no-such-device/);
    return true;
  });
});
