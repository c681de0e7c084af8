import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMessage, encodeMessage, messageType } from '../../../proto/load';
import type * as wire from '../../../proto/generated/drover-v1';
import { eventFromWire, eventToWire, nodeInfoFromWire, nodeInfoToWire, policyFromWire, policyToWire, type NodeInfo } from './agent-codec';

/** Encodes `value` as message `name` and decodes it back, as the wire does. */
function roundTrip<T>(name: string, value: object): T {
  const t = messageType(name);
  return decodeMessage<T>(t, encodeMessage(t, value));
}

test('NodeInfo survives the wire, its VMs and their specs included', () => {
  const n: NodeInfo = {
    nodeId: 'a', hypervisor: 'sim', memTotalBytes: 2 ** 34, memUsedBytes: 2 ** 30, vcpusTotal: 8, vcpusUsed: 2, protocolVersion: 1,
    vms: [{ spec: { name: 'web1', memBytes: 2 ** 30, vcpus: 2, profile: 'web', seed: 7 }, state: 'running', nodeId: 'a', dirtyRateBytesPerSec: 5, touchedBytes: 9, cpu: 0.5, heartbeatBeats: 3, heartbeatLastMs: 1, heartbeatMaxGapMs: 2, heartbeatResumeGapMs: 1.5 }],
  };
  assert.deepEqual(nodeInfoFromWire(roundTrip<wire.NodeInfo>('NodeInfo', nodeInfoToWire(n))), n);
});

test('a policy: zero values mean the engine default', () => {
  assert.deepEqual(policyFromWire(roundTrip<wire.MigrationPolicy>('MigrationPolicy', policyToWire({ maxDowntimeMs: 5, verify: true }))),
    { maxDowntimeMs: 5, bandwidthBytesPerSec: undefined, maxRounds: undefined, maxBytesFactor: undefined, timeoutMs: undefined, verify: true, compress: undefined });
  assert.deepEqual(policyFromWire(undefined), { maxDowntimeMs: undefined, bandwidthBytesPerSec: undefined, maxRounds: undefined, maxBytesFactor: undefined, timeoutMs: undefined, verify: false, compress: undefined });
  assert.equal(policyFromWire(roundTrip<wire.MigrationPolicy>('MigrationPolicy', policyToWire({ compress: 'always' }))).compress, 'always');
  assert.throws(() => policyFromWire({ ...policyToWire({}), compress: 'zstd' }), /policy\.compress must be one of never, auto, always, got 'zstd'/);
});

test('a progress event: an infinite ETA travels as -1 and comes back as NaN; no result until the end', () => {
  const ev = { migrationId: 'm-1', phase: 'precopy' as const, round: 2, remainingBytes: 1000, dirtyRateBytesPerSec: 50, rateBytesPerSec: 900, sentBytes: 10, etaMs: Infinity, elapsedMs: 5 };
  const back = eventFromWire(roundTrip<wire.MigrationEvent>('MigrationEvent', eventToWire(ev)));
  assert.ok(Number.isNaN(back.etaMs));
  assert.equal(back.result, undefined);
  assert.deepEqual({ ...back, etaMs: 0 }, { ...ev, etaMs: 0 });
});
