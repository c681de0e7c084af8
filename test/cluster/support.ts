/**
 * Integration-test support: a real local cluster (etcd binary, agent, scheduler and migrator
 * processes) in a temp dir, the `drover` CLI as a child process, and polling helpers.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCluster, droverBin, type LocalClusterOptions } from '../../services/local-cluster';
import { readHistory, readSnapshot } from '../../cluster/etcd';
import { AgentClient, setAgentCredentials } from '../../services/node-agent/client/agent-client';
import type { JobRecord } from '../../cluster/keyspace';
import { loadTlsFiles } from '../../lib/pki/tls-files';
import { clientCredentials } from '../../lib/pki/grpc-credentials';

export { startLocalEtcd } from '../../cluster/local-etcd';
/** The cluster-operations API, as the CLI uses it (tests change config and create VMs through it). */
export { setConfig, createVmRecord, waitPlaced, requestMigration, cancelMigration } from '../../cluster/ops';

/** The admin environment of each running test cluster, by etcd URL (cli() adds it). */
const clusterEnvs = new Map<string, Record<string, string>>();

/**
 * Starts a cluster in a fresh temp dir (removed by `stop`, kept when the test failed and DROVER_KEEP=1).
 * As `drover up` runs it: mutual TLS and etcd RBAC (`insecure: true` for plain text). The test
 * process then acts as the cluster's admin: `cli(c.etcdUrl, ...)` gets DROVER_CA/CERT/KEY, every
 * AgentClient built without credentials presents the admin certificate, `c.etcd` is the admin's.
 */
export async function startCluster(opts: Partial<LocalClusterOptions> & { nodes: number }): Promise<LocalCluster & { stopAll(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-it-'));
  const c = new LocalCluster({ agentMem: '1GiB', agentVcpus: 16, ...opts, dir, env: { DROVER_QUIET: '', ...(opts.env ?? {}) } }) as LocalCluster & { stopAll(): Promise<void> };
  c.stopAll = async () => {
    clusterEnvs.delete(c.etcdUrl);
    await c.stop();
    if (process.env.DROVER_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  };
  try {
    await c.start();
  } catch (e) {
    await c.stopAll();
    throw e;
  }
  clusterEnvs.set(c.etcdUrl, cliEnv(c));
  if (c.pki) {
    const admin = loadTlsFiles(c.pki.admin);
    setAgentCredentials((node) => clientCredentials(admin, node ? { role: 'node', name: node } : { role: 'node' }));
  }
  return c;
}

/** Exit code and output of one `drover` run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The admin's environment of a TLS cluster (what DIR/drover.env says), empty in plain text. */
export function cliEnv(c: LocalCluster): Record<string, string> {
  return c.pki ? { DROVER_CA: c.pki.caFile, DROVER_CERT: c.pki.admin.cert, DROVER_KEY: c.pki.admin.key } : {};
}

/** Runs `drover ARGS` with DROVER_ETCD set to `etcdUrl`, as the admin of that test cluster (`env` overrides). */
export function cli(etcdUrl: string, args: string[], timeoutMs = 180_000, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [droverBin(), ...args], { env: { ...process.env, DROVER_ETCD: etcdUrl, ...clusterEnvs.get(etcdUrl), ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Polls `f` until it returns a truthy value. */
export async function waitFor<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Where each VM runs, by asking every agent (not etcd; as the admin in a TLS cluster). */
export async function runningWhere(c: LocalCluster): Promise<Map<string, string[]>> {
  const snap = await readSnapshot(c.etcd!);
  const admin = c.pki ? loadTlsFiles(c.pki.admin) : undefined;
  const where = new Map<string, string[]>();
  for (const n of snap.nodes.values()) {
    if (!n.heartbeat) continue;
    const a = new AgentClient(n.record.address, admin ? clientCredentials(admin, { role: 'node', name: n.id }) : undefined);
    try {
      for (const v of await a.listVms()) if (v.state === 'running' || v.state === 'paused') where.set(v.spec.name, [...(where.get(v.spec.name) ?? []), n.id]);
    } finally { a.close(); }
  }
  return where;
}

/** Most jobs that overlapped in time, per node and direction, from the history. */
export function maxOverlap(jobs: JobRecord[], key: 'from' | 'to'): Map<string, number> {
  const out = new Map<string, number>();
  const by = new Map<string, JobRecord[]>();
  for (const j of jobs) if (j.admittedAt && j.finishedAt) by.set(j[key], [...(by.get(j[key]) ?? []), j]);
  for (const [node, list] of by) {
    const ev: [number, number][] = [];
    for (const j of list) { ev.push([j.admittedAt, 1]); ev.push([j.finishedAt, -1]); }
    ev.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let cur = 0, max = 0;
    for (const [, d] of ev) { cur += d; max = Math.max(max, cur); }
    out.set(node, max);
  }
  return out;
}

export { readHistory, readSnapshot };
