import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { NbdClient } from './nbd/nbd-client';
import { WalDiskWriter, WalState, checkWalRegion, crc32, encodeWalRecord, parseWalState } from './wal-disk';
import { LocalNbdServer, startNbdServer, startQemuNbd } from './nbd/local-nbd-servers';

const MiB = 1024 * 1024;
const RS = 4096;
const REGION = { regionOffset: MiB, regionLength: 256 * RS, seed: 0xc0ffee };

test('crc32 matches the IEEE check value', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
});

test('records are deterministic and self-checking', () => {
  const l = { ...REGION, recordSize: RS };
  const a = encodeWalRecord(l, 42);
  assert.ok(a.equals(encodeWalRecord(l, 42)));
  assert.ok(!a.equals(encodeWalRecord(l, 43)));
  assert.equal(crc32(a, 0, RS - 4), a.readUInt32BE(RS - 4));
});

test('state parsing names the bad field', () => {
  assert.throws(() => parseWalState('{'), (e: any) => e.code === 'INVALID_ARGUMENT');
  assert.throws(() => parseWalState({ kind: 'drover.wal-disk', version: 2 } as any), (e: any) => e.code === 'INVALID_ARGUMENT' && /version/.test(e.message));
  assert.throws(() => parseWalState({ kind: 'drover.wal-disk', version: 1, ackedSeq: -1, ...REGION, recordSize: RS } as any), (e: any) => /ackedSeq/.test(e.message));
});

const kinds: Array<[string, () => Promise<LocalNbdServer>]> = [
  ['nbd-server', () => startNbdServer({ exports: [{ name: 'wal', size: 8 * MiB }] })],
  ['qemu-nbd', () => startQemuNbd({ export: { name: 'wal', size: 8 * MiB } })],
];

for (const [kind, start] of kinds) {
  describe(`WAL disk workload against ${kind}`, () => {
    let s: LocalNbdServer;
    before(async () => { s = await start(); });
    after(async () => { await s?.dispose(); });

    test('append, drain, check; corruption names the seq; state migrates to a new client', async () => {
      const c1 = await NbdClient.connectUri(s.uri());
      const w = WalDiskWriter.create(c1, REGION, { depth: 16 });
      assert.equal(w.capacity, 256);
      const empty = await checkWalRegion(c1, w.state);
      assert.ok(empty.ok, empty.detail);

      assert.equal(await w.append(200), 200);
      await w.drain();
      await w.flush();
      let r = await checkWalRegion(c1, w.state);
      assert.ok(r.ok, r.detail);
      assert.equal(r.records, 200);
      assert.equal(r.lastSeq, 200);

      // A checker that expects more than was written finds the gap.
      r = await checkWalRegion(c1, { ...w.state, ackedSeq: 201 });
      assert.equal(r.ok, false);
      assert.match(r.detail, /seq 201 .*missing/);

      // The state travels as JSON; a new client on a new connection continues (wrapping the ring).
      const json = w.serialize();
      await c1.close();
      const c2 = await NbdClient.connectUri(s.uri());
      const w2 = WalDiskWriter.restore(c2, json, { depth: 8 });
      assert.equal(w2.ackedSeq, 200);
      const ps = Array.from({ length: 100 }, () => w2.submit());
      const seqs = await Promise.all(ps);
      assert.deepEqual(seqs, Array.from({ length: 100 }, (_, i) => 201 + i));
      await w2.drain();
      assert.equal(w2.ackedSeq, 300);
      r = await checkWalRegion(c2, w2.state);
      assert.ok(r.ok, r.detail);
      assert.equal(r.records, 256);
      assert.equal(r.lastSeq, 300);

      // Corrupt one byte of seq 250's payload in the backing file.
      await c2.flush();
      const slot = (250 - 1) % 256;
      const at = REGION.regionOffset + slot * RS + 100;
      const fd = fs.openSync(s.file(), 'r+');
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, at);
      b[0] ^= 0x5a;
      fs.writeSync(fd, b, 0, 1, at);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      r = await checkWalRegion(c2, w2.state);
      assert.equal(r.ok, false);
      assert.match(r.detail, /record seq 250 \(slot 249/);
      assert.match(r.detail, /CRC-32 mismatch/);

      // Repair by rewriting seq 250, then tear seq 260 (second half zeroed, as a partial write).
      await c2.write(REGION.regionOffset + slot * RS, encodeWalRecord(w2.layout, 250), { fua: true });
      assert.ok((await checkWalRegion(c2, w2.state)).ok);
      const slot260 = (260 - 1) % 256;
      await c2.write(REGION.regionOffset + slot260 * RS + RS / 2, Buffer.alloc(RS / 2), { fua: true });
      r = await checkWalRegion(c2, w2.state);
      assert.equal(r.ok, false);
      assert.match(r.detail, /record seq 260 .*torn or corrupt/);

      // Out of order: swap the contents of seq 290 and 291.
      await c2.write(REGION.regionOffset + slot260 * RS, encodeWalRecord(w2.layout, 260), { fua: true });
      const a = await c2.read(REGION.regionOffset + ((290 - 1) % 256) * RS, RS);
      const bb = await c2.read(REGION.regionOffset + ((291 - 1) % 256) * RS, RS);
      await c2.write(REGION.regionOffset + ((290 - 1) % 256) * RS, bb);
      await c2.write(REGION.regionOffset + ((291 - 1) % 256) * RS, a);
      r = await checkWalRegion(c2, w2.state);
      assert.equal(r.ok, false);
      assert.match(r.detail, /seq 290 .*out of order/);
      await c2.close();
    });

    test('writer refuses a region outside the export; an untouched region checks clean', async () => {
      const c = await NbdClient.connectUri(s.uri());
      assert.throws(() => WalDiskWriter.create(c, { regionOffset: 8 * MiB - RS, regionLength: 2 * RS, seed: 1 }), (e: any) => e.code === 'INVALID_ARGUMENT' && /beyond the export size/.test(e.message));
      const st: WalState = { kind: 'drover.wal-disk', version: 1, ...REGION, regionOffset: 4 * MiB, recordSize: RS, ackedSeq: 0 };
      assert.ok((await checkWalRegion(c, st)).ok);
      await c.close();
    });
  });
}
