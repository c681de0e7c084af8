/**
 * A cluster migration of a QEMU VM through the tunnel (protocol 2): two `drover agent
 * --hypervisor qemu` processes registered in etcd (plain text: `insecure`), the migrator's fence
 * in the tunnel's Start; the target records owned/<to>/<vm>, the migrator folds it, and the job's
 * attempt record has the three downtime figures (the guest's blackout from QEMU's serial heartbeat).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, waitFor, requestMigration, createVmRecord } from '../cluster/support';
import { startAgent, type AgentProcess } from '../../services/node-agent/agent-process';
import { getAllJson, getJson } from '../../cluster/etcd';
import { keys, type JobRecord, type VmRecord } from '../../cluster/keyspace';
import type { LocalCluster } from '../../services/local-cluster';

const MiB = 1024 * 1024;
const clusters: (LocalCluster & { stopAll(): Promise<void> })[] = [];
const agents: AgentProcess[] = [];
after(async () => { for (const a of agents) await a.stop(); for (const c of clusters) await c.stopAll(); });

test('QEMU tunnel in cluster mode: the target records its ownership, the migrator folds it; the attempt has downtime, blackout and pause', async () => {
  const c = await startCluster({ nodes: 1, insecure: true, config: { autoRebalance: false } });
  clusters.push(c);
  for (const id of ['qn-1', 'qn-2']) agents.push(await startAgent(id, ['--hypervisor', 'qemu', '--etcd', c.etcdUrl, '--mem-capacity', '1GiB', '--insecure']));
  await waitFor('the QEMU nodes alive', async () => (await getJson(c.etcd!, keys.alive('qn-1'))) && (await getJson(c.etcd!, keys.alive('qn-2'))), 30_000);
  await createVmRecord(c.etcd!, { name: 'qv', memBytes: 64 * MiB, vcpus: 1, profile: 'idle' }, 'qn-1');
  await waitFor('qv runs on qn-1', async () => (await getJson<VmRecord>(c.etcd!, keys.vm('qv')))?.value.state === 'running', 60_000);
  const job = await requestMigration(c.etcd!, { vm: 'qv', to: 'qn-2', reason: 'manual' });
  const h = await waitFor('the job in the history', async () => (await getJson<JobRecord>(c.etcd!, keys.history(job.id)))?.value, 120_000);
  assert.equal(h.result, 'succeeded', h.error);
  const vm = (await getJson<VmRecord>(c.etcd!, keys.vm('qv')))!.value;
  assert.deepEqual([vm.node, vm.state], ['qn-2', 'running']);
  assert.equal((await getAllJson(c.etcd!, keys.allOwnerships())).size, 0, 'the ownership record is folded away');
  const a = h.attemptLog?.[0];
  assert.ok(a && a.result === 'succeeded', JSON.stringify(h.attemptLog));
  assert.ok(a.downtimeMs > 0 && a.guestBlackoutMs >= 0 && a.pausedMs >= a.downtimeMs - 1, JSON.stringify(a));
});
