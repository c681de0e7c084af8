import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { BulkSocket, MessageReader, LENGTH_PREFIX_BYTES, hostOf } from './bulk-socket';

/** Length-prefixed encoding of `messages`, as BulkSocket writes them. */
function framed(messages: Buffer[]): Buffer {
  return Buffer.concat(messages.flatMap((m) => {
    const h = Buffer.alloc(LENGTH_PREFIX_BYTES);
    h.writeUInt32BE(m.length, 0);
    return [h, m];
  }));
}

test('messages come out whole whatever the chunking (1-byte pieces, prefixes split, several per chunk)', () => {
  const messages = [Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(70_000, 7), Buffer.from('last'), Buffer.alloc(0)];
  const wire = framed(messages);
  for (const size of [1, 3, 4, 5, 1000, 65_536, wire.length]) {
    const got: Buffer[] = [];
    const r = new MessageReader((m) => got.push(Buffer.from(m)));
    for (let i = 0; i < wire.length; i += size) r.push(wire.subarray(i, i + size));
    assert.deepEqual(got, messages, `chunks of ${size}`);
    assert.equal(r.idle, true);
  }
});

test('a message spanning chunks is assembled in a pooled buffer: released, it carries the next message; kept, it stays intact', () => {
  const wire = framed([Buffer.alloc(200_000, 1), Buffer.alloc(200_000, 2), Buffer.alloc(200_000, 3)]);
  const got: Buffer[] = [];
  const r = new MessageReader((m) => got.push(m));
  for (let i = 0; i < wire.length; i += 16_384) r.push(wire.subarray(i, i + 16_384));
  assert.equal(got.length, 3);
  assert.ok(got.every((m, i) => m.length === 200_000 && m.every((b) => b === i + 1)), 'unreleased messages are never overwritten');
  assert.equal(new Set(got.map((m) => m.buffer)).size, 3, 'each unreleased message has its own buffer');
  const next: Buffer[] = [];
  const r2 = new MessageReader((m) => { next.push(m); r2.release(m); });
  for (let i = 0; i < wire.length; i += 16_384) r2.push(wire.subarray(i, i + 16_384));
  assert.equal(new Set(next.map((m) => m.buffer)).size, 1, 'a message released as soon as it came: one buffer carries them all');
  assert.ok(next[2].every((b) => b === 3), 'holding the last message');
});

test('a length over the limit is refused before anything is allocated', () => {
  const r = new MessageReader(() => assert.fail('no message'), 1024);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(1025, 0);
  assert.throws(() => r.push(h), /bulk message of 1025 bytes exceeds the limit of 1024/);
});

test('a socket pair carries frames both ways and reports the peer ending inside a message as an error', async () => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = new BulkSocket(net.connect(port, '127.0.0.1'), 'client');
  const raw = await accepted;
  const peer = new BulkSocket(raw, 'peer');
  const big = Buffer.alloc(2 * 2 ** 20, 9);
  const got = new Promise<Buffer>((r) => peer.once('data', (m: Buffer) => r(Buffer.from(m))));
  client.write(big);
  assert.deepEqual(await got, big);
  const ack = new Promise<Buffer>((r) => client.once('data', (m: Buffer) => r(Buffer.from(m))));
  peer.write(Buffer.from('ack'));
  assert.equal((await ack).toString(), 'ack');
  const failed = new Promise<Error>((r) => peer.once('error', r));
  client.socket.end(Buffer.from([0, 0, 0, 9, 1])); // a prefix announcing 9 bytes, then only one
  assert.match((await failed).message, /ended inside a message/);
  server.close();
});

test('hostOf takes the host of a gRPC target address', () => {
  assert.equal(hostOf('127.0.0.1:7000'), '127.0.0.1');
  assert.equal(hostOf('[::1]:7000'), '::1');
  assert.equal(hostOf('dns:///node-a.example:7000'), 'node-a.example');
});
