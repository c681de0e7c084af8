import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatNbdUri, parseNbdUri } from './nbd-uri';

test('parses host, port and export', () => {
  assert.deepEqual(parseNbdUri('nbd://127.0.0.1:10810/disk0'), { host: '127.0.0.1', port: 10810, exportName: 'disk0' });
  assert.deepEqual(parseNbdUri('nbd://storage-1.example/vm%2Fdisk'), { host: 'storage-1.example', port: 10809, exportName: 'vm/disk' });
  assert.deepEqual(parseNbdUri('nbd://[::1]:9000/a'), { host: '::1', port: 9000, exportName: 'a' });
  assert.deepEqual(parseNbdUri('nbd://host'), { host: 'host', port: 10809, exportName: '' });
});

test('rejects malformed URIs with INVALID_ARGUMENT naming the URI', () => {
  for (const bad of ['http://h/x', 'nbd:/h/x', 'nbd:///x', 'nbd://h:0/x', 'nbd://h:65536/x', 'nbd://h:12a/x',
    'nbd://u@h/x', 'nbd://h/x?y=1', 'nbd://h/x#f', 'nbd://[::1/x', 'nbd://h_h/x', 'nbd://h/%zz', 'nbd://999.1.1.1/x', 'nbds://h/x']) {
    assert.throws(() => parseNbdUri(bad), (e: any) => e.code === 'INVALID_ARGUMENT' && e.message.includes(bad), bad);
  }
});

test('format round-trips', () => {
  for (const a of [{ host: '10.0.0.1', port: 10809, exportName: 'a b/c' }, { host: '::1', port: 1, exportName: '' }]) {
    assert.deepEqual(parseNbdUri(formatNbdUri(a)), a);
  }
});
