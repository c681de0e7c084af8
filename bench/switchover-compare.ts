/**
 * Cluster vs direct switchover downtime, in one run (issue 12's figure): a LocalCluster of two
 * agents with etcd, a migrator and a scheduler (`drover up --insecure`-style), plus two
 * standalone agents without etcd. N migrations of 256 MiB idle, web and db VMs each way on
 * both paths; prints median/p99/max of downtimeMs (source pause -> target Activated) and the
 * guest-observed blackout (the source's last heartbeat to the target's first, agent-codec.ts guestBlackoutMs).
 * Both paths run mutual TLS with the cluster's CA (the standalone agents get node identities from it).
 *
 *   node dist/bench/switchover-compare.js [--repeat 10] [--json]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCluster } from '../services/local-cluster';
import { AgentClient } from '../services/node-agent/client/agent-client';
import { guestBlackoutMs } from '../services/node-agent/client/agent-codec';
import { createVmRecord, requestMigration, waitPlaced } from '../cluster/ops';
import { getJson } from '../cluster/etcd';
import { agentTlsArgs } from '../services/node-agent/local-agents';
import { clientCredentials } from '../lib/pki/grpc-credentials';
import { loadTlsFiles } from '../lib/pki/tls-files';
import type { LocalPki } from '../services/local-pki';
import { keys, type JobRecord, type NodeRecord } from '../cluster/keyspace';

const MiB = 2 ** 20;
const PROFILES = ['idle', 'web', 'db'] as const;

interface Sample { path: 'cluster' | 'direct'; profile: string; downtimeMs: number; blackoutMs: number }

function stats(xs: number[]): { p50: number; p99: number; max: number; n: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] ?? NaN;
  return { p50: q(0.5), p99: q(0.99), max: s[s.length - 1] ?? NaN, n: s.length };
}

/** The admin's client of node `node`'s agent, expecting that node's certificate. */
function clientOf(pki: LocalPki, address: string, node: string): AgentClient {
  return new AgentClient(address, clientCredentials(loadTlsFiles({ ca: pki.caFile, cert: pki.admin.cert, key: pki.admin.key }), { role: 'node', name: node }));
}

async function directAgent(c: LocalCluster, dir: string, id: string): Promise<AgentClient> {
  c.spawnDrover(id, ['agent', '--listen', '127.0.0.1:0', '--node-id', id, ...await agentTlsArgs(c.pki!.dir, id), '--mem-capacity', '2GiB', '--vcpus', '16']);
  const file = path.join(dir, `${id}.log`);
  for (let i = 0; i < 200; i++) {
    const m = fs.existsSync(file) ? /listening on (\S+)/.exec(fs.readFileSync(file, 'utf8')) : null;
    if (m) return clientOf(c.pki!, m[1], id);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`agent ${id} did not start`);
}

async function clusterRuns(c: LocalCluster, repeat: number, out: Sample[]): Promise<void> {
  const etcd = c.etcd!;
  const addr = async (n: string) => (await getJson<NodeRecord>(etcd, keys.node(n)))!.value.address;
  for (const profile of PROFILES) {
    const name = `c-${profile}`;
    await createVmRecord(etcd, { name, memBytes: 256 * MiB, vcpus: 1, profile }, 'node-1');
    await waitPlaced(etcd, name, 60_000);
    for (let i = 0; i < 2 * repeat; i++) {
      const to = i % 2 === 0 ? 'node-2' : 'node-1';
      await new Promise((r) => setTimeout(r, 300));
      const job = await requestMigration(etcd, { vm: name, to, reason: 'manual' });
      let h: JobRecord | undefined;
      for (let t = 0; t < 600 && !h; t++) { h = (await getJson<JobRecord>(etcd, keys.history(job.id)))?.value; if (!h) await new Promise((r) => setTimeout(r, 100)); }
      if (!h || h.result !== 'succeeded') throw new Error(`cluster migration of ${name} to ${to}: ${h?.result} ${h?.error}`);
      const a = clientOf(c.pki!, await addr(to), to);
      const vm = await a.getVm(name);
      a.close();
      out.push({ path: 'cluster', profile, downtimeMs: h.downtimeMs, blackoutMs: guestBlackoutMs(vm) });
    }
  }
}

async function directRuns(a: AgentClient, b: AgentClient, repeat: number, out: Sample[]): Promise<void> {
  const addrOf = (x: AgentClient) => x.address;
  const nodeOf = new Map([[a, 'direct-1'], [b, 'direct-2']]);
  for (const profile of PROFILES) {
    const name = `d-${profile}`;
    await a.createVm({ name, memBytes: 256 * MiB, vcpus: 1, profile });
    for (let i = 0; i < 2 * repeat; i++) {
      const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
      await new Promise((r) => setTimeout(r, 300));
      const r = await from.migrateVm(name, addrOf(to), {}, undefined, '', nodeOf.get(to));
      const vm = await to.getVm(name);
      out.push({ path: 'direct', profile, downtimeMs: r.downtimeMs, blackoutMs: guestBlackoutMs(vm) });
    }
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const repeat = Number(args[args.indexOf('--repeat') + 1]) || 10;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-swcmp-'));
  const c = new LocalCluster({ nodes: 2, agentMem: '2GiB', agentVcpus: 16, dir, config: { autoRebalance: false }, env: { DROVER_QUIET: '' } });
  const out: Sample[] = [];
  let a: AgentClient | undefined, b: AgentClient | undefined;
  try {
    await c.start();
    a = await directAgent(c, dir, 'direct-1');
    b = await directAgent(c, dir, 'direct-2');
    await clusterRuns(c, repeat, out);
    await directRuns(a, b, repeat, out);
  } finally {
    a?.close(); b?.close();
    await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const rows = [];
  for (const p of ['cluster', 'direct'] as const) for (const profile of PROFILES) {
    const s = out.filter((x) => x.path === p && x.profile === profile);
    rows.push({ path: p, profile, downtimeMs: stats(s.map((x) => x.downtimeMs)), guestBlackoutMs: stats(s.map((x) => x.blackoutMs)) });
  }
  if (args.includes('--json')) { console.log(JSON.stringify(rows)); return; }
  const f = (v: number) => v.toFixed(2).padStart(7);
  console.log('path     profile  n   downtime p50    p99    max | blackout p50    p99    max');
  for (const r of rows) {
    console.log(`${r.path.padEnd(8)} ${r.profile.padEnd(7)} ${String(r.downtimeMs.n).padStart(3)} ${f(r.downtimeMs.p50)}${f(r.downtimeMs.p99)}${f(r.downtimeMs.max)} |     ${f(r.guestBlackoutMs.p50)}${f(r.guestBlackoutMs.p99)}${f(r.guestBlackoutMs.max)}`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
