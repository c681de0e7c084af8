import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSize, parseRate, parseDuration, formatBytes, formatMs } from './units';
import { DroverError } from './errors';

test('sizes parse strictly in binary and decimal units', () => {
  assert.equal(parseSize('512MiB'), 512 * 2 ** 20);
  assert.equal(parseSize('1GiB'), 2 ** 30);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
  assert.equal(parseSize('2GB'), 2e9);
  for (const bad of ['', 'GiB', '1 2MiB', '12XB', '-1GiB', '1e9', '0.3B']) {
    assert.throws(() => parseSize(bad, '--mem'), (e: unknown) => e instanceof DroverError && e.code === 'INVALID_ARGUMENT' && e.message.includes('--mem'), bad);
  }
});

test('rates: bits and bytes per second, 0 = unlimited', () => {
  assert.equal(parseRate('1Gbit'), 1e9 / 8);
  assert.equal(parseRate('800Mbit'), 100e6);
  assert.equal(parseRate('100MB/s'), 100e6);
  assert.equal(parseRate('0'), 0);
  assert.throws(() => parseRate('1Gbps'), /unknown unit "Gbps"/);
});

test('durations need a unit', () => {
  assert.equal(parseDuration('5ms'), 5);
  assert.equal(parseDuration('2s'), 2000);
  assert.equal(parseDuration('250us'), 0.25);
  assert.throws(() => parseDuration('5'), /needs a unit/);
});

test('formatting', () => {
  assert.equal(formatBytes(1536 * 2 ** 20), '1.50 GiB');
  assert.equal(formatBytes(12), '12 B');
  assert.equal(formatMs(0.5), '500 us');
  assert.equal(formatMs(12.34), '12.3 ms');
});
