/**
 * The switchover's two records against a real etcd: the target's ownership record and the
 * source's resume record exclude each other, whoever comes first; the migrator's settle cleans
 * the resume record; a fold onto the target is never mistaken for a refusal.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { startLocalEtcd, type LocalEtcd } from '../../cluster/local-etcd';
import { getJson } from '../../cluster/etcd';
import { keys, newJob, type JobRecord, type OwnershipClaim, type VmRecord } from '../../cluster/keyspace';
import { foldToTarget, settleFailed } from '../migrator/fold';
import { faultOwnershipDelayMs, foldedOnto, LEASE_MARGIN_MS, recordOwnership, resolveOutcome, settleUnknownRecord, type ClusterLink } from './switchover';
import type { Fence } from '../../migration/wire/protocol';

/**
 * A short node TTL keeps the source's bound (TTL + 2 margins) at 2.5 s, and leaves the target a
 * record window (TTL - one margin) of 1 s, which a loaded host's etcd txn fits in (at 600 ms the
 * 100 ms window was missed under load).
 */
const TTL_MS = 1500;
let etcdProc: LocalEtcd;
let etcd: Etcd3;
const link: ClusterLink = { lease: () => ({ deadlineMs: Date.now() + TTL_MS, ttlMs: TTL_MS, etcd }) };
const quiet = () => undefined;

before(async () => {
  etcdProc = await startLocalEtcd();
  etcd = new Etcd3({ hosts: etcdProc.url });
});
after(async () => {
  etcd.close();
  await etcdProc.stop();
});

/** Writes the intent (vms/<vm> migrating on `src`) and returns its fence. */
async function intent(vm: string, attempt = 1): Promise<Fence> {
  const spec = { name: vm, memBytes: 2 ** 20, vcpus: 1, profile: 'idle' as const };
  const rec: VmRecord = { name: vm, spec, node: 'src', desiredNode: '', state: 'migrating', lastMovedAt: 0, lastFrom: '', error: '', job: `job-${vm}`, createdAt: Date.now() };
  const put = await etcd.put(keys.vm(vm)).value(JSON.stringify(rec)).exec();
  return { vmRevision: String(put.header.revision), job: `job-${vm}`, attempt };
}

function jobOf(vm: string, fence: Fence): JobRecord {
  return { ...newJob({ id: fence.job, vm, from: 'src', to: 'tgt', reason: 'manual' }), attempts: fence.attempt };
}

const claim = async (node: string, vm: string) => (await getJson<OwnershipClaim>(etcd, keys.ownership(node, vm)))?.value;

test('the target records first: the source resolves owned and writes no resume record', async () => {
  const fence = await intent('a');
  await recordOwnership(link, 'tgt', 'a', fence, Date.now());
  assert.equal(await resolveOutcome(link, 'src', 'tgt', 'a', fence, quiet), 'owned');
  assert.equal(await claim('src', 'a'), undefined);
  assert.equal((await claim('tgt', 'a'))?.job, fence.job);
});

test('the source resumes first (target lease gone): its resume record lands and the target is fenced', async () => {
  const fence = await intent('b');
  assert.equal(await resolveOutcome(link, 'src', 'tgt', 'b', fence, quiet), 'refused');
  const mine = await claim('src', 'b');
  assert.equal(mine?.sourceResumed, true);
  assert.equal(mine?.attempt, 1);
  await assert.rejects(recordOwnership(link, 'tgt', 'b', fence, Date.now()), (e: Error & { code?: string }) => e.code === 'FAILED_PRECONDITION' && /fenced: the source src resumed/.test(e.message));
  assert.equal(await claim('tgt', 'b'), undefined, 'no target record after the source resumed');
  // The migrator's settle: the VM stays on the source, running; both records deleted.
  assert.equal(await settleFailed(etcd, jobOf('b', fence)), 'source');
  const v = (await getJson<VmRecord>(etcd, keys.vm('b')))!.value;
  assert.equal(v.node, 'src');
  assert.equal(v.state, 'running');
  assert.equal(await claim('src', 'b'), undefined);
  assert.equal(await claim('tgt', 'b'), undefined);
});

test('a target alive but silent past the source\'s bound: the source resumes with its record; the late target is fenced', async () => {
  const fence = await intent('c');
  const lease = etcd.lease(10);
  await lease.put(keys.alive('tgt')).value('{}').exec();
  try {
    const t0 = Date.now();
    assert.equal(await resolveOutcome(link, 'src', 'tgt', 'c', fence, quiet), 'refused');
    const waited = Date.now() - t0;
    assert.ok(waited >= TTL_MS + 2 * LEASE_MARGIN_MS && waited < TTL_MS + 2 * LEASE_MARGIN_MS + 1000, `the source waited its bound: ${waited} ms`);
    await assert.rejects(recordOwnership(link, 'tgt', 'c', fence, Date.now()), /fenced: the source src resumed/);
    assert.equal(await claim('tgt', 'c'), undefined);
  } finally {
    await lease.revoke();
  }
});

test('source and target race: exactly one record lands, and each side\'s answer agrees with it', async () => {
  const wins = [0, 0];
  for (let i = 0; i < 12; i++) {
    const vm = `r${i}`;
    const fence = await intent(vm);
    const [outcome, recorded] = await Promise.all([
      resolveOutcome(link, 'src', 'tgt', vm, fence, quiet),
      recordOwnership(link, 'tgt', vm, fence, Date.now()).then(() => true, () => false),
    ]);
    const [mine, theirs] = [await claim('src', vm), await claim('tgt', vm)];
    assert.ok(!!mine !== !!theirs, `${vm}: exactly one record (source ${!!mine}, target ${!!theirs})`);
    assert.equal(outcome === 'owned', recorded, `${vm}: the source says ${outcome}, the target recorded: ${recorded}`);
    assert.equal(recorded, !!theirs);
    wins[recorded ? 1 : 0]++;
  }
  console.log(`race: source won ${wins[0]}, target won ${wins[1]}`);
});

test('a stale resume record of an earlier attempt does not block the target', async () => {
  const fence = await intent('d', 2);
  const stale: OwnershipClaim = { job: fence.job, attempt: 1, vmRevision: '1', at: Date.now(), sourceResumed: true };
  await etcd.put(keys.ownership('src', 'd')).value(JSON.stringify(stale)).exec();
  await recordOwnership(link, 'tgt', 'd', fence, Date.now());
  assert.equal((await claim('tgt', 'd'))?.attempt, 2);
  assert.equal(await resolveOutcome(link, 'src', 'tgt', 'd', fence, quiet), 'owned');
  // The fold onto the target deletes the stale record too.
  assert.equal(await foldToTarget(etcd, jobOf('d', fence)), true);
  assert.equal(await claim('src', 'd'), undefined);
  assert.equal(await claim('tgt', 'd'), undefined);
});

test('the record folded onto the target before the source resolves: owned, never a resume', async () => {
  const fence = await intent('e');
  await recordOwnership(link, 'tgt', 'e', fence, Date.now());
  const recordRev = (await getJson<OwnershipClaim>(etcd, keys.ownership('tgt', 'e')))!.modRevision;
  assert.equal(await foldToTarget(etcd, jobOf('e', fence)), true);
  assert.equal(await claim('tgt', 'e'), undefined, 'folded away');
  const folded = (await getJson<VmRecord>(etcd, keys.vm('e')))!.value;
  assert.deepEqual([folded.node, folded.placed], ['tgt', { node: 'tgt', rev: recordRev }], 'placed at the revision of the target\'s record');
  assert.equal(await resolveOutcome(link, 'src', 'tgt', 'e', fence, quiet), 'owned');
  assert.equal(await claim('src', 'e'), undefined);
});

test('a target that does not know whether its record landed: it landed => owned; it did not => a tombstone that fences the record and frees the source at once', async () => {
  const landed = await intent('f');
  await recordOwnership(link, 'tgt', 'f', landed, Date.now());
  assert.equal(await settleUnknownRecord(link, 'tgt', 'f', landed, quiet), 'owned');
  const lost = await intent('g');
  assert.equal(await settleUnknownRecord(link, 'tgt', 'g', lost, quiet), 'fenced');
  assert.equal((await claim('tgt', 'g'))?.fenced, true, 'the tombstone');
  await assert.rejects(recordOwnership(link, 'tgt', 'g', lost, Date.now()), /fenced: node tgt gave this attempt up/);
  const lease = etcd.lease(10);
  await lease.put(keys.alive('tgt')).value('{}').exec();
  try {
    const t0 = Date.now();
    assert.equal(await resolveOutcome(link, 'src', 'tgt', 'g', lost, quiet), 'refused');
    assert.ok(Date.now() - t0 < TTL_MS, `the tombstone frees the source before its bound (${Date.now() - t0} ms)`);
  } finally {
    await lease.revoke();
  }
  // The migrator's settle drops the tombstone and the resume record: the VM stays on the source.
  assert.equal(await settleFailed(etcd, jobOf('g', lost)), 'source');
  assert.equal(await claim('tgt', 'g'), undefined);
  assert.equal(await claim('src', 'g'), undefined);
});

test('a target that does not know whether its record landed, after a migrator found the record and folded it: owned, and no tombstone', async () => {
  // A chaos run: the record txn answered after the target's window, a migrator taking the job
  // over folded it (deleting the record), and the target then wrote a tombstone and destroyed
  // its copy while etcd named it the owner: the source resumed on the refusal, an orphan.
  const fence = await intent('h');
  await recordOwnership(link, 'tgt', 'h', fence, Date.now());
  assert.equal(await foldToTarget(etcd, jobOf('h', fence)), true);
  assert.equal(await claim('tgt', 'h'), undefined, 'folded away');
  assert.equal(await settleUnknownRecord(link, 'tgt', 'h', fence, quiet), 'owned');
  assert.equal(await claim('tgt', 'h'), undefined, 'no tombstone written');
  assert.equal(await resolveOutcome(link, 'src', 'tgt', 'h', fence, quiet), 'owned', 'the source reads the same outcome');
  // Rolled back onto the source instead: not ours, a tombstone.
  const back = await intent('i');
  const v = (await getJson<VmRecord>(etcd, keys.vm('i')))!;
  await etcd.put(keys.vm('i')).value(JSON.stringify({ ...v.value, state: 'running', job: '' })).exec();
  assert.equal(await settleUnknownRecord(link, 'tgt', 'i', back, quiet), 'fenced');
  assert.equal((await claim('tgt', 'i'))?.fenced, true);
});

test('foldedOnto: only a VM record that moved on since the fence and names the node', () => {
  const fence: Fence = { vmRevision: '10', job: 'j', attempt: 1 };
  const rec = (node: string, rev: string) => ({ modRevision: rev, value: { node } as VmRecord });
  assert.equal(foldedOnto(rec('tgt', '12'), 'tgt', fence), true);
  assert.equal(foldedOnto(rec('tgt', '10'), 'tgt', fence), false, 'the intent itself');
  assert.equal(foldedOnto(rec('src', '12'), 'tgt', fence), false, 'moved back to the source');
  assert.equal(foldedOnto(undefined, 'tgt', fence), false);
});

test('the ownership-delay fault knob is refused without the fault-injection switch', () => {
  assert.equal(faultOwnershipDelayMs({}), 0);
  assert.throws(() => faultOwnershipDelayMs({ DROVER_FAULT_OWNERSHIP_DELAY_MS: '100' }), /refused unless DROVER_FAULT_INJECTION=1/);
  assert.throws(() => faultOwnershipDelayMs({ DROVER_FAULT_OWNERSHIP_DELAY_MS: 'x', DROVER_FAULT_INJECTION: '1' }), /whole number/);
  assert.equal(faultOwnershipDelayMs({ DROVER_FAULT_OWNERSHIP_DELAY_MS: '250', DROVER_FAULT_INJECTION: '1' }), 250);
});

test('the record window counts from Complete arrival: a target that resumed a TTL after Complete is fenced and writes nothing', async () => {
  const fence = await intent('h');
  await assert.rejects(recordOwnership(link, 'tgt', 'h', fence, Date.now() - TTL_MS),
    (e: Error & { code?: string }) => e.code === 'FAILED_PRECONDITION' && /fenced: .* within its record window \(.*\d+ ms since Complete arrived/.test(e.message));
  assert.equal(await claim('tgt', 'h'), undefined, 'no record');
});
