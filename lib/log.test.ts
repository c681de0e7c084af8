import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeLogger, serviceOf, silent } from './log';

test('makeLogger writes one JSON line per event with the shared keys', () => {
  const lines: string[] = [];
  const log = makeLogger('migrator-7', (l) => lines.push(l));
  log('job claimed', { migration: 'j-1', vm: 'web1', node: 'a', attempt: 2 });
  log('scan');
  assert.equal(lines.length, 2);
  const first = JSON.parse(lines[0]);
  assert.equal(first.msg, 'job claimed');
  assert.equal(first.level, 'info');
  assert.equal(first.service, 'migrator');
  assert.equal(first.component, 'migrator-7');
  assert.deepEqual([first.migration, first.vm, first.node, first.attempt], ['j-1', 'web1', 'a', 2]);
  assert.match(first.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(JSON.parse(lines[1]).msg, 'scan');
  silent('dropped');
});

test('DROVER_QUIET=1 silences makeLogger', () => {
  const lines: string[] = [];
  const log = makeLogger('scheduler-1', (l) => lines.push(l));
  const before = process.env.DROVER_QUIET;
  process.env.DROVER_QUIET = '1';
  try { log('hidden'); } finally { if (before === undefined) delete process.env.DROVER_QUIET; else process.env.DROVER_QUIET = before; }
  log('shown');
  assert.deepEqual(lines.map((l) => JSON.parse(l).msg), ['shown']);
});

test('serviceOf names the service of a component', () => {
  assert.equal(serviceOf('migrator-123'), 'migrator');
  assert.equal(serviceOf('scheduler-1'), 'scheduler');
  assert.equal(serviceOf('registration node-1'), 'agent');
});
