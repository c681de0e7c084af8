/** The storage allow-list: configured endpoints only; none configured, loopback only. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError } from '../../lib/errors';
import { StoragePolicy, isLoopbackHost } from './storage-policy';

const refused = (f: () => void, re: RegExp) => assert.throws(f, (e: unknown) => e instanceof DroverError && e.code === 'FAILED_PRECONDITION' && re.test(e.message));

test('without configured endpoints only loopback disks pass, and the message says so', () => {
  const p = StoragePolicy.fromEnv({});
  p.check(undefined, 'v');
  p.check('nbd://127.0.0.1:10809/d', 'v');
  p.check('nbd://localhost:1/d', 'v');
  refused(() => p.check('nbd://192.168.1.5:10809/d', 'v'), /VM v: disk nbd:\/\/192\.168\.1\.5:10809\/d .*no storage endpoints are configured.*only loopback/);
  assert.ok(isLoopbackHost('127.9.9.9') && isLoopbackHost('[::1]') && !isLoopbackHost('127.0.0.1.evil.com'));
});

test('configured endpoints: exactly those pass, others are refused naming the allowed ones', () => {
  const p = StoragePolicy.fromEnv({ DROVER_STORAGE: 'san1:10809, san2:10809' });
  p.check('nbd://san1:10809/d', 'v');
  refused(() => p.check('nbd://san1:22/d', 'v'), /disk nbd:\/\/san1:22\/d is not on an allowed storage endpoint \(allowed: san1:10809, san2:10809\)/);
  refused(() => p.check('nbd://127.0.0.1:10809/d', 'v'), /allowed: san1:10809/);
});
