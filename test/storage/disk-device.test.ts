/**
 * Unit tests of the sim guest's disk device against a real qemu-nbd: pause drains and flushes,
 * the device state carries the WAL state (round trip onto a new domain, mismatches rejected), an
 * unreachable export is FAILED_PRECONDITION naming the export.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEVICE_STATE_HEADER_BYTES, SimHypervisor, SimDomain } from '../../hypervisor/sim/sim-hypervisor';
import { REG_BYTES } from '../../hypervisor/sim/layout';
import { DISK_SECTION_HEADER_BYTES, SimDiskDevice, decodeDiskSection, encodeDiskSection } from '../../hypervisor/sim/disk-device';
import { LocalNbdServer, startQemuNbd } from '../../storage/nbd/local-nbd-servers';
import type { VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import { setTimeout as sleep } from 'node:timers/promises';

const MiB = 1024 * 1024;

describe('sim disk device (qemu-nbd)', () => {
  let s: LocalNbdServer;
  let hv: SimHypervisor;
  const spec = (name: string, disk?: string): VmSpec => ({ name, memBytes: 32 * MiB, vcpus: 1, profile: 'db', dirtyRateBytesPerSec: 8 * MiB, disk });

  before(async () => {
    s = await startQemuNbd({ export: { name: 'vmdisk', size: 16 * MiB } });
    hv = new SimHypervisor({ disk: { recordsPerSec: 400 } });
  });
  after(async () => {
    await hv?.close();
    await s?.dispose();
  });

  test('pause drains in-flight writes and flushes; resume restarts the log', async () => {
    const d = await hv.createDomain(spec('disk-pause', s.uri()));
    try {
      await sleep(400);
      const dev = d.disk!;
      assert.ok(dev.active);
      assert.ok(dev.ackedSeq > 20, `acked ${dev.ackedSeq} after 400 ms at 400 records/s`);
      const flushes = dev.flushes;
      await d.pause();
      assert.equal(dev.active, false);
      assert.equal(dev.ackedSeq, dev.submitted, 'nothing in flight once pause resolved: every submitted record is acknowledged');
      assert.equal(dev.flushes, flushes + 1, 'pause flushed the export');
      const frozen = dev.ackedSeq;
      await sleep(100);
      assert.equal(dev.ackedSeq, frozen, 'no I/O while paused');
      const c = await d.guestCheck();
      assert.ok(c.ok, c.detail);
      assert.equal(c.diskOk, true, c.diskDetail);
      assert.equal(c.diskAckedSeq, frozen);
      await d.resume();
      await sleep(200);
      assert.ok(dev.ackedSeq > frozen, 'the log continues after resume');
      const c2 = await d.guestCheck(); // pauses + resumes around the check
      assert.equal(c2.diskOk, true, c2.diskDetail);
      assert.equal(d.state(), 'running');
    } finally {
      await d.destroy();
    }
  });

  test('device state carries the WAL state to an incoming domain; mismatches are rejected', async () => {
    const a = await hv.createDomain(spec('disk-move', s.uri()));
    let b: SimDomain | undefined;
    try {
      await sleep(300);
      await a.pause();
      const acked = a.disk!.ackedSeq;
      const state = a.saveDeviceState();
      const section = decodeDiskSection(state.subarray(DEVICE_STATE_HEADER_BYTES + regBytes(a)), 't');
      assert.equal(section.wal.ackedSeq, acked);
      assert.equal(section.exportName, 'vmdisk');

      // A diskless incoming domain refuses a state with a disk section, and vice versa.
      const plain = await hv.createIncoming(spec('disk-move'));
      try {
        assert.throws(() => plain.loadDeviceState(state), /carries a disk section, but the domain has no disk/);
      } finally { await plain.destroy(); }

      b = await hv.createIncoming(spec('disk-move', s.uri()));
      const base = state.subarray(0, DEVICE_STATE_HEADER_BYTES + regBytes(a));
      assert.throws(() => b!.loadDeviceState(base), /carries no disk section, but the domain has disk nbd:\/\//);
      const v2 = Buffer.from(state);
      v2.writeUInt32LE(2, base.length + 4);
      assert.throws(() => b!.loadDeviceState(v2), /disk section version 2 not supported/);
      const bad = Buffer.from(state);
      bad[bad.length - 3] ^= 0xff;
      assert.throws(() => b!.loadDeviceState(bad), /disk section checksum mismatch/);
      const other = Buffer.concat([base, encodeDiskSection({ ...section, exportName: 'other' })]);
      assert.throws(() => b!.loadDeviceState(other), /disk is NBD export "other"/);
      assert.equal(b.state(), 'incoming');

      // Memory travels as the engine would carry it (here: a plain copy of every page).
      for (let pfn = 0; pfn < a.pageCount; pfn += 1024) {
        const n = Math.min(1024, a.pageCount - pfn);
        b.pageView(pfn, n).set(a.pageView(pfn, n));
      }
      b.loadDeviceState(state);
      await a.destroy(); // the source lets go (quiesced: it writes nothing more)
      await b.resume();
      await sleep(300);
      const c = await b.guestCheck();
      assert.ok(c.ok, c.detail);
      assert.equal(c.diskOk, true, c.diskDetail);
      assert.ok(c.diskAckedSeq! > acked, `the log continues on the new domain (${c.diskAckedSeq} > ${acked})`);
    } finally {
      await a.destroy();
      await b?.destroy();
    }
  });

  test('an unreachable export is FAILED_PRECONDITION naming the export', async () => {
    const down = await startQemuNbd({ export: { name: 'gone-disk', size: 4 * MiB } });
    const uri = down.uri();
    await down.dispose();
    for (const f of [() => hv.createIncoming(spec('disk-gone', uri)), () => hv.createDomain(spec('disk-gone', uri))]) {
      await assert.rejects(f(), (e: unknown) => e instanceof DroverError && e.code === 'FAILED_PRECONDITION' && /NBD export "gone-disk"/.test(e.message));
    }
    assert.equal(hv.list().filter((d) => d.spec.name === 'disk-gone').length, 0);
    // Unknown export name on a live server: also refused, naming it.
    const wrong = s.uri().replace(/vmdisk$/, 'no-such-export');
    await assert.rejects(SimDiskDevice.open(wrong, 'x'), (e: unknown) => e instanceof DroverError && e.code === 'FAILED_PRECONDITION' && /"no-such-export"/.test(e.message));
  });

  test('section codec round trip', () => {
    const sec = { exportName: 'e', wal: { kind: 'drover.wal-disk' as const, version: 1 as const, regionOffset: 0, regionLength: 8192, recordSize: 4096, seed: 7, ackedSeq: 5 } };
    const b = encodeDiskSection(sec);
    assert.equal(b.length > DISK_SECTION_HEADER_BYTES, true);
    assert.deepEqual(decodeDiskSection(b, 't'), sec);
  });
});

/** Bytes of the register files in a sim device state (the disk section follows them). */
function regBytes(d: SimDomain): number {
  return d.spec.vcpus * REG_BYTES;
}
