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
