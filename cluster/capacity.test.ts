import { test } from 'node:test';
import assert from 'node:assert/strict';
import { capacityShortfall, formatMiB } from './capacity';

const MiB = 2 ** 20;
const cap = { memBytes: 512 * MiB, vcpus: 4 };

test('capacity: a VM that fits has no shortfall (exactly full fits)', () => {
  assert.equal(capacityShortfall('node-1', cap, { memBytes: 384 * MiB, vcpus: 3 }, { name: 'a', memBytes: 128 * MiB, vcpus: 1 }), undefined);
});

test('capacity: short of memory names the node, what is free and what the VM needs', () => {
  assert.equal(capacityShortfall('node-1', cap, { memBytes: 384 * MiB, vcpus: 0 }, { name: 'x1', memBytes: 256 * MiB, vcpus: 1 }),
    'node node-1 has 128 MiB free, VM "x1" needs 256 MiB');
});

test('capacity: memory is checked before vCPUs', () => {
  assert.match(capacityShortfall('n', cap, { memBytes: 512 * MiB, vcpus: 4 }, { name: 'v', memBytes: MiB, vcpus: 1 })!, /MiB free/);
});

test('capacity: short of vCPUs', () => {
  assert.equal(capacityShortfall('node-2', cap, { memBytes: 0, vcpus: 3 }, { name: 'v', memBytes: MiB, vcpus: 2 }), 'node node-2 has 1 vCPU(s) free, VM "v" needs 2');
});

test('capacity: vcpus Infinity leaves vCPUs unchecked', () => {
  assert.equal(capacityShortfall('n', { memBytes: cap.memBytes, vcpus: Infinity }, { memBytes: 0, vcpus: 99 }, { name: 'v', memBytes: MiB, vcpus: 64 }), undefined);
});

test('capacity: MiB formatting is whole when exact, two decimals otherwise', () => {
  assert.equal(formatMiB(128 * MiB), '128 MiB');
  assert.equal(formatMiB(MiB / 2), '0.50 MiB');
  assert.equal(formatMiB(0), '0 MiB');
});
