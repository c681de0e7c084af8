import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admissionBlocker } from './admission';
import { DEFAULT_CONFIG } from '../../cluster/keyspace';

test('admission enforces cluster, outbound and inbound limits', () => {
  const cfg = { ...DEFAULT_CONFIG, maxConcurrent: 3 };
  const adm = { jobs: [{ id: '1', from: 'a', to: 'b', at: 0 }] };
  assert.match(admissionBlocker(adm, { id: '2', from: 'a', to: 'c' }, cfg)!, /outbound limit 1 on a/);
  assert.equal(admissionBlocker(adm, { id: '2', from: 'c', to: 'b' }, cfg), undefined);
  const adm2 = { jobs: [...adm.jobs, { id: '2', from: 'c', to: 'b', at: 0 }] };
  assert.match(admissionBlocker(adm2, { id: '3', from: 'd', to: 'b' }, cfg)!, /inbound limit 2 on b/);
  const adm3 = { jobs: [...adm2.jobs, { id: '3', from: 'd', to: 'e', at: 0 }] };
  assert.match(admissionBlocker(adm3, { id: '4', from: 'f', to: 'g' }, cfg)!, /cluster-wide limit 3/);
  assert.equal(admissionBlocker(adm3, { id: '3', from: 'd', to: 'e' }, cfg), undefined, 'an admitted job is never blocked');
});
