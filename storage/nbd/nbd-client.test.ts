import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { NbdClient } from './nbd-client';
import { LocalNbdServer, startNbdServer, startQemuNbd } from './local-nbd-servers';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

interface Fixture { rw: LocalNbdServer; ro: LocalNbdServer; roName: string; all: LocalNbdServer[] }

const kinds: Array<[string, () => Promise<Fixture>]> = [
  ['nbd-server', async () => {
    const s = await startNbdServer({ exports: [{ name: 'alpha', size: SIZE }, { name: 'ro', size: MiB, readOnly: true }] });
    return { rw: s, ro: s, roName: 'ro', all: [s] };
  }],
  ['qemu-nbd', async () => {
    const rw = await startQemuNbd({ export: { name: 'alpha', size: SIZE } });
    const ro = await startQemuNbd({ export: { name: 'ro', size: MiB, readOnly: true } });
    return { rw, ro, roName: 'ro', all: [rw, ro] };
  }],
];

const code = (c: string, ...words: string[]) => (e: any) => {
  assert.equal(e.code, c, e.message);
  for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
  return true;
};

for (const [kind, start] of kinds) {
  describe(`NbdClient against ${kind}`, () => {
    let fx: Fixture;
    let c: NbdClient;
    before(async () => {
      fx = await start();
      c = await NbdClient.connectUri(fx.rw.uri('alpha'));
    });
    after(async () => {
      await c?.close();
      for (const s of fx?.all ?? []) await s.dispose();
    });

    test('handshake with NBD_OPT_GO reports size and flags', async () => {
      assert.equal(c.size, SIZE);
      assert.equal(c.info.negotiatedWith, 'go');
      assert.equal(c.info.readOnly, false);
      assert.ok(c.info.canFlush && c.info.canFua && c.info.canTrim);
      assert.ok(c.info.minBlockSize >= 1 && c.info.maxPayload >= MiB);
    });

    test('NBD_OPT_EXPORT_NAME path negotiates the same export', async () => {
      const c2 = await NbdClient.connect({ host: fx.rw.host, port: fx.rw.port, exportName: 'alpha', method: 'export-name' });
      assert.equal(c2.info.negotiatedWith, 'export-name');
      assert.equal(c2.size, SIZE);
      await c2.write(100, Buffer.from('via export-name'));
      assert.equal((await c.read(100, 15)).toString(), 'via export-name');
      await c2.close();
    });

    test('NBD_OPT_LIST lists the exports', async () => {
      const names = (await NbdClient.list(fx.rw.host, fx.rw.port)).map((e) => e.name);
      assert.ok(names.includes('alpha'), names.join(','));
      if (kind === 'nbd-server') assert.deepEqual(names.sort(), ['alpha', 'ro']);
    });

    test('aligned, unaligned and large reads and writes round-trip', async () => {
      const cases: Array<[number, number]> = [[0, 4096], [4097, 1000], [MiB - 3, 7], [SIZE - 513, 513], [5 * MiB + 11, 3 * MiB + 17]];
      for (const [off, len] of cases) {
        const data = crypto.randomBytes(len);
        await c.write(off, data);
        assert.ok((await c.read(off, len)).equals(data), `${off}+${len}`);
      }
      // Larger than the server's maximum payload: split into several requests.
      const big = crypto.randomBytes(c.info.maxPayload + 4096 + 3);
      await c.write(0, big);
      const back = Buffer.alloc(big.length);
      await c.readInto(0, back);
      assert.ok(back.equals(big));
      await c.flush();
      const fd = fs.openSync(fx.rw.file('alpha'), 'r');
      const onDisk = Buffer.alloc(4096);
      fs.readSync(fd, onDisk, 0, 4096, 1234);
      fs.closeSync(fd);
      assert.ok(onDisk.equals(big.subarray(1234, 1234 + 4096)), 'backing file holds the data after FLUSH');
    });

    test('FLUSH and FUA writes complete and are durable in the backing file', async () => {
      await c.flush();
      const data = crypto.randomBytes(8192);
      await c.write(12 * MiB, data, { fua: true });
      const fd = fs.openSync(fx.rw.file('alpha'), 'r');
      const onDisk = Buffer.alloc(8192);
      fs.readSync(fd, onDisk, 0, 8192, 12 * MiB);
      fs.closeSync(fd);
      assert.ok(onDisk.equals(data));
    });

    test('TRIM: data outside the range is untouched and the range is writable again', async () => {
      // proto.md: after TRIM the client MUST NOT assume anything about the trimmed contents until
      // it rewrites them, so only the neighbours and a rewrite are asserted.
      const base = 16 * MiB;
      const data = crypto.randomBytes(MiB);
      await c.write(base, data);
      await c.trim(base + 256 * 1024, 256 * 1024);
      const back = await c.read(base, MiB);
      assert.ok(back.subarray(0, 256 * 1024).equals(data.subarray(0, 256 * 1024)));
      assert.ok(back.subarray(512 * 1024).equals(data.subarray(512 * 1024)));
      const fresh = crypto.randomBytes(256 * 1024);
      await c.write(base + 256 * 1024, fresh);
      assert.ok((await c.read(base + 256 * 1024, 256 * 1024)).equals(fresh));
    });

    test('64 concurrent requests are matched by handle', async () => {
      const base = 20 * MiB;
      const blocks = Array.from({ length: 64 }, () => crypto.randomBytes(4096));
      await Promise.all(blocks.map((b, i) => c.write(base + i * 4096, b)));
      assert.equal(c.inFlight, 0);
      const reads = blocks.map((_, i) => c.read(base + i * 4096, 4096));
      assert.equal(c.inFlight, 64);
      const got = await Promise.all(reads);
      got.forEach((g, i) => assert.ok(g.equals(blocks[i]), `block ${i}`));
      // Mixed reads and writes of disjoint blocks with varied sizes, all in flight together.
      const ops: Promise<unknown>[] = [];
      const expect: Array<[number, Buffer]> = [];
      for (let i = 0; i < 64; i++) {
        const off = base + MiB + i * 16384 + (i % 7);
        const d = crypto.randomBytes(512 + i * 97);
        expect.push([off, d]);
        ops.push(c.write(off, d));
        ops.push(c.read(base + (i % 64) * 4096, 4096).then((b) => assert.ok(b.equals(blocks[i % 64]))));
      }
      await Promise.all(ops);
      for (const [off, d] of expect) assert.ok((await c.read(off, d.length)).equals(d));
    });

    test('unknown export is NOT_FOUND naming it (both handshake methods)', async () => {
      await assert.rejects(NbdClient.connect({ host: fx.rw.host, port: fx.rw.port, exportName: 'no-such-disk' }), code('NOT_FOUND', 'no-such-disk'));
      await assert.rejects(NbdClient.connect({ host: fx.rw.host, port: fx.rw.port, exportName: 'no-such-disk', method: 'export-name' }), code('NOT_FOUND', 'no-such-disk'));
    });

    test('out-of-range and malformed requests are INVALID_ARGUMENT before sending', async () => {
      await assert.rejects(c.read(SIZE - 10, 20), code('INVALID_ARGUMENT', 'alpha', `${SIZE - 10}`, 'beyond the export size'));
      await assert.rejects(c.write(SIZE, Buffer.alloc(1)), code('INVALID_ARGUMENT', 'alpha'));
      await assert.rejects(c.trim(SIZE - 1, 2), code('INVALID_ARGUMENT', 'alpha'));
      await assert.rejects(c.read(-1, 1), code('INVALID_ARGUMENT', '-1'));
      await assert.rejects(c.read(1.5, 1), code('INVALID_ARGUMENT'));
      assert.equal(c.inFlight, 0);
      assert.equal((await c.read(SIZE - 1, 1)).length, 1);
    });

    test('read-only export refuses writes and trims clearly; reads work', async () => {
      const r = await NbdClient.connectUri(fx.ro.uri(fx.roName));
      assert.equal(r.info.readOnly, true);
      await assert.rejects(r.write(0, Buffer.alloc(512)), code('FAILED_PRECONDITION', 'read-only', fx.roName));
      await assert.rejects(r.trim(0, 512), code('FAILED_PRECONDITION', 'read-only'));
      assert.equal((await r.read(0, 4096)).length, 4096);
      await r.close();
    });

    test('server killed mid-request: UNAVAILABLE, then reconnect when it returns on the same port', async () => {
      const s = kind === 'nbd-server'
        ? await startNbdServer({ exports: [{ name: 'victim', size: 4 * MiB }] })
        : await startQemuNbd({ export: { name: 'victim', size: 4 * MiB } });
      try {
        const k = await NbdClient.connectUri(s.uri(), { reconnect: { attempts: 3, baseDelayMs: 20, maxDelayMs: 50 } });
        await k.write(0, Buffer.from('before'));
        await k.flush();
        s.pause();
        const pending = k.read(0, 4096);
        const pendingWrite = k.write(8192, Buffer.alloc(4096, 7));
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(k.inFlight, 2, 'requests are in flight while the server is stopped');
        await s.kill();
        await assert.rejects(pending, code('UNAVAILABLE', 'victim', 'READ', 'offset 0', 'reconnect attempts'));
        await assert.rejects(pendingWrite, code('UNAVAILABLE', 'victim', 'WRITE', 'offset 8192'));
        await s.restart();
        assert.equal((await k.read(0, 6)).toString(), 'before', 'a new request reconnects');
        assert.ok(k.reconnects >= 1);

        // Transparent case: the server comes back within the backoff window and in-flight
        // requests are replayed.
        const k2 = await NbdClient.connectUri(s.uri(), { reconnect: { attempts: 10, baseDelayMs: 50, maxDelayMs: 300 } });
        s.pause();
        const w = k2.write(65536, Buffer.alloc(4096, 9), { fua: true });
        const rd = k2.read(0, 6);
        await new Promise((r) => setTimeout(r, 30));
        await s.kill();
        await s.restart();
        await w;
        assert.equal((await rd).toString(), 'before');
        assert.ok((await k2.read(65536, 4096)).equals(Buffer.alloc(4096, 9)));
        assert.ok(k2.reconnects >= 1);
        await k.close();
        await k2.close();
      } finally {
        await s.dispose();
      }
    });
  });
}
