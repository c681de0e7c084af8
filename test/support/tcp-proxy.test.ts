/**
 * The test proxy's controls on a real socket pair (an echo server behind it): bytes pass; a
 * silence holds them in both directions without closing anything and forwards them after; a
 * cut resets the connection; the n-th connection is closed after so many bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { startTcpProxy, type TcpProxy } from './tcp-proxy';

/** An echo server on a free port. */
async function echoServer(): Promise<{ address: string; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => { sockets.add(s); s.on('error', () => undefined); s.pipe(s); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, close: () => { for (const s of sockets) s.destroy(); server.close(); } };
}

/** A client connected to `address` that collects what it reads and records how it ended. */
async function client(address: string): Promise<{ s: net.Socket; got: () => string; ended: () => string }> {
  const [host, port] = address.split(':');
  const s = net.connect(Number(port), host);
  await new Promise<void>((r, j) => { s.once('connect', r); s.once('error', j); });
  let got = '';
  let ended = '';
  s.on('data', (d) => { got += d.toString(); });
  s.on('error', (e: NodeJS.ErrnoException) => { ended ||= e.code ?? 'error'; });
  s.on('close', () => { ended ||= 'closed'; });
  return { s, got: () => got, ended: () => ended };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond` holds (at most 2 s). */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(10);
  assert.ok(cond(), what);
}

/** Runs `body` with a proxy (options `o`) in front of a fresh echo server; closes both after. */
async function withProxy(o: Parameters<typeof startTcpProxy>[1], body: (proxy: TcpProxy) => Promise<void>): Promise<void> {
  const echo = await echoServer();
  const proxy = await startTcpProxy(echo.address, o);
  try {
    await body(proxy);
  } finally {
    await proxy.close();
    echo.close();
  }
}

test('a silence holds bytes both ways without closing the connection, then forwards them; new connections wait too', async () => {
  await withProxy(undefined, async (proxy) => {
    const c = await client(proxy.address);
    c.s.write('a');
    await until('bytes pass before the silence', () => c.got() === 'a');
    const quiet = proxy.silence(300);
    c.s.write('b');
    const late = await client(proxy.address); // opened during the silence
    late.s.write('x');
    await sleep(200);
    assert.equal(c.got(), 'a', 'nothing passes while silent');
    assert.equal(late.got(), '', 'a connection opened during the silence is held too');
    assert.equal(c.ended(), '', 'the silence closes nothing');
    await quiet;
    await until('the held bytes pass once the link speaks again', () => c.got() === 'ab' && late.got() === 'x');
    assert.equal(c.ended(), '');
    assert.equal(proxy.stats.silences, 1);
    assert.ok(proxy.stats.heldBytes >= 2);
    c.s.destroy();
    late.s.destroy();
  });
});

test('a silence of the existing connections only lets new ones pass', async () => {
  await withProxy(undefined, async (proxy) => {
    const old = await client(proxy.address);
    const quiet = proxy.silence(60_000, { existingOnly: true });
    old.s.write('o');
    const fresh = await client(proxy.address);
    fresh.s.write('n');
    await until('a new connection passes', () => fresh.got() === 'n');
    assert.equal(old.got(), '', 'the old connection stays silent');
    proxy.speak(); // ends the silence before its time
    await quiet;
    await until('the old connection speaks again', () => old.got() === 'o');
    old.s.destroy();
    fresh.s.destroy();
  });
});

test('a cut resets the connections and refuses new ones for its length; cutAfter closes the n-th connection after its bytes', async () => {
  await withProxy({ cutAfter: { connection: 2, bytes: 3 } }, async (proxy) => {
    const c = await client(proxy.address);
    const cut = proxy.cut(300);
    await until('the cut resets the connection', () => c.ended() !== '');
    assert.equal(c.ended(), 'ECONNRESET');
    const refused = await client(proxy.address);
    await until('a connection during the cut is closed at once', () => refused.ended() !== '');
    await cut;
    assert.ok(proxy.stats.dropped >= 2 && proxy.stats.refused === 1, JSON.stringify(proxy.stats));
    const third = await client(proxy.address);
    third.s.write('12');
    await until('bytes pass again after the cut', () => third.got() === '12');
    assert.equal(proxy.stats.cutAfterDone, false, 'the cutAfter connection was the refused one (2nd), which carried nothing');
    third.s.destroy();
  });
  await withProxy({ cutAfter: { connection: 1, bytes: 3 } }, async (p2) => {
    const c = await client(p2.address);
    c.s.write('123');
    await until('bytes up to the limit pass', () => c.got() === '123');
    c.s.write('4');
    await until('the connection is closed past the limit', () => c.ended() !== '');
    assert.equal(p2.stats.cutAfterDone, true);
    assert.equal(c.got(), '123', 'the byte past the limit is not forwarded');
  });
});
