import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { GENERATED_FILE, generateProtoTypes } from './gen-types';
import { decodeMessage, encodeMessage, messageType } from './load';
import type { MigrationFrame, Vm } from './generated/drover-v1';

test('proto/generated/drover-v1.ts is up to date with the .proto files (npm run gen:proto)', () => {
  assert.equal(fs.readFileSync(GENERATED_FILE, 'utf8'), generateProtoTypes(), 'stale: run `npm run gen:proto` and commit the result');
});

test('decoded messages have the generated form: numbers, null for unset messages, the oneof name', () => {
  const T = messageType('Vm');
  const vm = decodeMessage<Vm>(T, encodeMessage(T, { state: 'running', touchedBytes: 2 ** 40 }));
  assert.equal(vm.spec, null);
  assert.equal(vm.touchedBytes, 2 ** 40);
  assert.equal(vm.nodeId, '');
  const F = messageType('MigrationFrame');
  const f = decodeMessage<MigrationFrame>(F, encodeMessage(F, { abort: { reason: 'x' } }));
  assert.equal(f.kind, 'abort');
  assert.deepEqual(f.abort, { reason: 'x' });
  assert.equal(f.start, undefined);
});

test('typed handlers and clients talk over a real server (addService, clientConstructor)', async () => {
  const grpc = await import('@grpc/grpc-js');
  const { addService, clientConstructor } = await import('./load');
  const server = new grpc.Server();
  const seen: string[] = [];
  addService(server, 'NodeAgent', {
    CreateVm: (_c, cb) => cb(null, {}), ListVms: (_c, cb) => cb(null, { vms: [] }),
    GetVm: (call, cb) => { seen.push(call.request.name); cb(null, { state: 'running', nodeId: 'a', spec: { name: call.request.name, memBytes: 2 ** 33 } }); },
    DestroyVm: (_c, cb) => cb(null, {}), VerifyVm: (_c, cb) => cb(null, {}), GetNodeInfo: (_c, cb) => cb(null, {}),
    MigrateVm: (call) => { call.write({ migrationId: 'm', phase: 'done' }); call.end(); },
    CancelMigration: (_c, cb) => cb(null, { phase: 'precopy' }), CommitMigration: (_c, cb) => cb(null, {}),
    AnalyzeVm: (_c, cb) => cb(null, {}), ResumeVm: (_c, cb) => cb(null, {}),
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  const Client = clientConstructor('NodeAgent');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const vm = await new Promise<Vm>((res, rej) => client.GetVm({ name: 'web1' }, {}, (e, r) => (e ? rej(e) : res(r))));
    assert.deepEqual(seen, ['web1']);
    assert.equal(vm.spec?.memBytes, 2 ** 33);
    assert.equal(vm.spec?.vcpus, 0);
    const events: string[] = [];
    await new Promise<void>((res, rej) => {
      const s = client.MigrateVm({ vm: 'web1' });
      s.on('data', (e) => events.push(e.phase));
      s.on('error', rej);
      s.on('end', () => res());
    });
    assert.deepEqual(events, ['done']);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
