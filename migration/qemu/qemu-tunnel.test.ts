/**
 * The QEMU tunnel's flow control over real unix sockets (qemu-tunnel.ts): the source stops reading
 * its QEMU beyond the window, drainTo narrows the window before a switchover and resolves as
 * credits arrive, and the target credits small deliveries once its queue to QEMU is empty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SocketTunnel, type MessageStream } from './qemu-tunnel';
import { setTimeout as sleep } from 'node:timers/promises';

/** A message stream that records what it is given and always takes more. */
class RecordingStream extends EventEmitter implements MessageStream {
  readonly messages: Buffer[] = [];
  write(b: Buffer): boolean { this.messages.push(b); return true; }
  pause(): this { return this; }
  resume(): this { return this; }
}

/** A connected unix socket pair: [accepted side, connecting side]. */
async function socketPair(): Promise<{ a: net.Socket; b: net.Socket; close: () => void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-tunnel-test-'));
  const p = path.join(dir, 's.sock');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(p, () => r()));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const b = net.createConnection(p);
  const a = await accepted;
  return { a, b, close: () => { a.destroy(); b.destroy(); server.close(); fs.rmSync(dir, { recursive: true, force: true }); } };
}


test('source: reading stops at the window; drainTo narrows it and resolves once credits bring in-flight under it', async () => {
  const { a, b, close } = await socketPair();
  try {
    const stream = new RecordingStream();
    const tunnel = new SocketTunnel(a, stream, false, () => undefined);
    tunnel.setWindow(1024 * 1024);
    // "QEMU" writes 8 MiB; without credits the tunnel takes about one window and stops reading
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let i = 0; i < 128; i++) b.write(chunk);
    await sleep(300);
    const taken = tunnel.stats.outBytes;
    assert.ok(taken >= 1024 * 1024 && taken < 3 * 1024 * 1024, `took ${taken} B with a 1 MiB window and no credit`);
    assert.equal(tunnel.inFlight, taken);
    // narrowing to 256 KiB: drainTo waits while more than that is unacknowledged
    const drained = tunnel.drainTo(256 * 1024, 5000);
    let done = false;
    void drained.then(() => { done = true; });
    await sleep(100);
    assert.equal(done, false, `drainTo waits with ${tunnel.inFlight} B unacknowledged`);
    // the target acknowledges all but 100 KiB: drained; reading resumes only up to the narrow window
    tunnel.credit(tunnel.stats.outBytes - 100 * 1024);
    await drained;
    await sleep(200);
    assert.ok(tunnel.inFlight >= 256 * 1024 && tunnel.inFlight < 512 * 1024, `in flight ${tunnel.inFlight} B after drain: the window is 256 KiB now`);
  } finally {
    close();
  }
});

test('target: a delivery smaller than the credit step is credited once it is handed to the socket', async () => {
  const { a, b, close } = await socketPair();
  try {
    const credits: number[] = [];
    const tunnel = new SocketTunnel(b, new RecordingStream(), true, () => undefined);
    tunnel.onCredit = (bytes) => credits.push(bytes);
    let got = 0;
    a.on('data', (d: Buffer) => { got += d.length; });
    tunnel.deliver(Buffer.alloc(5000, 1), false);
    await sleep(100);
    assert.equal(got, 5000);
    assert.deepEqual(credits, [5000], 'the source learns at once that the pipe is empty');
  } finally {
    close();
  }
});
