/**
 * A real grpc-js server and client: after poolReceiveBuffers a call's 1 MiB messages arrive intact,
 * a message given back carries a later one (its buffer is reused), one kept is never overwritten,
 * and the message size limit still refuses with RESOURCE_EXHAUSTED; an unknown call shape is left alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { poolReceiveBuffers } from './grpc-receive-pool';

const raw = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
const service: grpc.ServiceDefinition = { Pipe: { path: '/t.Pipe/Pipe', requestStream: true, responseStream: true, originalName: 'Pipe', ...raw } };

/** What the server saw: whether each message equals the one sent, its length, its backing store, and whether a kept one stayed intact. */
interface Seen { equal: boolean[]; lengths: number[]; stores: ArrayBufferLike[]; keptIntact: boolean; pooled: boolean }

/** Runs a server whose handler pools its call after the first message, gives every message back but the second, and sends `messages`. */
async function pipe(messages: Buffer[], maxReceive = 8 * 2 ** 20): Promise<{ seen: Seen; error?: grpc.ServiceError }> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': maxReceive });
  const seen: Seen = { equal: [], lengths: [], stores: [], keptIntact: true, pooled: false };
  let kept: { copy: Buffer; view: Buffer } | undefined;
  server.addService(service, {
    Pipe: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      let release: ((b: Buffer) => void) | undefined;
      call.on('data', (m: Buffer) => {
        seen.equal.push(m.equals(messages[seen.lengths.length]));
        seen.lengths.push(m.length);
        seen.stores.push(m.buffer);
        if (seen.lengths.length === 1) { release = poolReceiveBuffers(call); seen.pooled = !!release; return; }
        if (seen.lengths.length === 2) { kept = { copy: Buffer.from(m), view: m }; return; }
        release?.(m);
      });
      call.on('end', () => {
        if (kept) seen.keptIntact = kept.view.equals(kept.copy);
        call.end();
      });
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((r, j) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))));
  const Client = grpc.makeGenericClientConstructor(service, 'Pipe');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const call = (client as unknown as { Pipe(): grpc.ClientDuplexStream<Buffer, Buffer> }).Pipe();
    const done = new Promise<grpc.ServiceError | undefined>((r) => { call.on('error', (e: grpc.ServiceError) => r(e)); call.on('end', () => r(undefined)); call.on('data', () => undefined); });
    for (const m of messages) call.write(m);
    call.end();
    return { seen, error: await done };
  } finally {
    client.close();
    server.forceShutdown();
  }
}

test('pooled: 1 MiB messages arrive intact, a message given back carries a later one, a kept one is never overwritten', async () => {
  const messages = [Buffer.from('start'), ...Array.from({ length: 8 }, (_, i) => Buffer.alloc(2 ** 20 + 37 * i, i + 1))];
  const { seen, error } = await pipe(messages);
  assert.equal(error, undefined);
  assert.equal(seen.pooled, true, 'grpc-js has the shape this module knows');
  assert.deepEqual(seen.lengths, messages.map((m) => m.length));
  assert.deepEqual(seen.equal, messages.map(() => true), 'every message arrives as sent');
  assert.equal(seen.keptIntact, true, 'the message never given back was not reused');
  const released = seen.stores.slice(2);
  assert.ok(new Set(released).size < released.length, `buffers given back carry later messages (${new Set(released).size} stores for ${released.length} messages)`);
  assert.ok(!released.includes(seen.stores[1]), 'the kept message\'s buffer carried nothing else');
});

test('pooled: a message over the receive limit is refused with RESOURCE_EXHAUSTED, as grpc-js does', async () => {
  const { error } = await pipe([Buffer.from('start'), Buffer.alloc(2 ** 20, 1), Buffer.alloc(3 * 2 ** 20, 2)], 2 * 2 ** 20);
  assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED, String(error));
  assert.match(error?.details ?? '', /larger than max \(3145728 vs 2097152\)/);
});

test('a call of another shape is left alone', () => {
  assert.equal(poolReceiveBuffers({}), undefined);
  assert.equal(poolReceiveBuffers(undefined), undefined);
  assert.equal(poolReceiveBuffers({ call: { decoder: { write: () => [], maxReadMessageLength: 10, readState: 2 } } }), undefined, 'a decoder inside a message');
});
