/**
 * `drover bench --tls`: the same VMs migrate between plain-text agents and between mutual-TLS
 * agents (a throw-away CA and identities in a temp folder) in one run, and each migration's
 * CPU cost is measured on both agents: utime + stime from /proc/PID/stat around the MigrateVm
 * call, less the sim guest's own vCPU threads (cpuMeter), divided by the GB (10^9 bytes) on the wire.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { startAgent, type AgentProcess } from '../../services/node-agent/agent-process';
import { agentTlsArgs } from '../../services/node-agent/local-agents';
import { initCa } from '../../lib/pki/ca';
import { issueIdentity } from '../../lib/pki/issue';
import { loadTlsFiles } from '../../lib/pki/tls-files';
import { clientCredentials } from '../../lib/pki/grpc-credentials';
import { formatRate } from '../../lib/units';
import { VCPU_THREAD_PREFIX } from '../../hypervisor/sim/thread-name';
import { statCpuMs } from '../../lib/thread-cpu';

/** A pair of bench agents, their clients, and how they talk. */
export interface BenchPair {
  transport: 'plain' | 'tls';
  procs: AgentProcess[];
  a: AgentClient;
  b: AgentClient;
  /** The target's node name (MigrateVm target_node). */
  targetNode: string;
  /** Stops the agents and removes the temp PKI. */
  close(): Promise<void>;
}

/** utime + stime in seconds of a /proc stat file; NaN when it cannot be read. */
function statCpuSeconds(file: string): number {
  return statCpuMs(file) / 1000;
}

/** CPU seconds a process used so far (utime + stime of /proc/PID/stat, all its threads); NaN where /proc is missing. */
export function processCpuSeconds(pid: number | undefined): number {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/** CPU seconds of each thread of `pid` (utime + stime of /proc/PID/task/TID/stat), and whether it is a sim vCPU. */
function threadCpu(pid: number | undefined, into: Map<string, { vcpu: boolean; first: number; last: number }>, fresh: boolean): void {
  let tids: string[];
  try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { return; }
  for (const tid of tids) {
    try {
      const comm = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8');
      const s = statCpuSeconds(`/proc/${pid}/task/${tid}/stat`); // /proc/TID/stat would sum the whole process
      if (Number.isNaN(s)) continue;
      const seen = into.get(tid);
      if (seen) seen.last = s;
      else into.set(tid, { vcpu: comm.startsWith(VCPU_THREAD_PREFIX), first: fresh ? s : 0, last: s });
    } catch { /* the thread ended between readdir and read */ }
  }
}

/** How often the meter samples the agents' threads: a vCPU thread that ends (its VM destroyed) loses at most this much. */
const THREAD_SAMPLE_MS = 100;

/** What the meter measured on each side: the agent without its guests' vCPU threads, and those threads. */
export interface CpuReading {
  source: number;
  target: number;
  /** CPU seconds of the sim guests' vCPU threads (they run inside the agent process). */
  guest: { source: number; target: number };
}

/**
 * Starts a meter on both agents; the returned function gives each side's CPU seconds since:
 * the whole process (/proc/PID/stat) less the CPU of its sim vCPU threads (named by
 * hypervisor/sim/thread-name.ts, sampled every THREAD_SAMPLE_MS), which is the guest's, not
 * the migration's. QEMU guests run in their own processes and are never counted.
 */
export function cpuMeter(pair: BenchPair): () => CpuReading {
  const pids = pair.procs.map((p) => p.child.pid);
  const p0 = pids.map((pid) => processCpuSeconds(pid));
  const threads = pids.map(() => new Map<string, { vcpu: boolean; first: number; last: number }>());
  pids.forEach((pid, i) => threadCpu(pid, threads[i], true));
  const timer = setInterval(() => pids.forEach((pid, i) => threadCpu(pid, threads[i], false)), THREAD_SAMPLE_MS);
  return () => {
    clearInterval(timer);
    pids.forEach((pid, i) => threadCpu(pid, threads[i], false));
    const guest = threads.map((m) => [...m.values()].filter((t) => t.vcpu).reduce((a, t) => a + t.last - t.first, 0));
    const total = pids.map((pid, i) => processCpuSeconds(pid) - p0[i]);
    return { source: total[0] - guest[0], target: total[1] - guest[1], guest: { source: guest[0], target: guest[1] } };
  };
}

/** Starts two agents (`bench-a`, `bench-b`, or `bench-a-tls`, `bench-b-tls` with TLS). */
export async function startBenchPair(hv: string, transport: 'plain' | 'tls'): Promise<BenchPair> {
  const procs: AgentProcess[] = [];
  const dir = transport === 'tls' ? fs.mkdtempSync(path.join(os.tmpdir(), 'drover-bench-pki-')) : undefined;
  const suffix = transport === 'tls' ? '-tls' : '';
  const names = [`bench-a${suffix}`, `bench-b${suffix}`];
  try {
    let creds: ((node: string) => ReturnType<typeof clientCredentials>) | undefined;
    if (dir) {
      await initCa(dir);
      const admin = await issueIdentity(dir, { role: 'admin', name: 'bench' });
      const files = loadTlsFiles({ ca: path.join(dir, 'ca.crt'), cert: admin.certPath, key: admin.keyPath });
      creds = (node) => clientCredentials(files, { role: 'node', name: node });
    }
    for (const n of names) procs.push(await startAgent(n, [...(dir ? await agentTlsArgs(dir, n) : []), '--hypervisor', hv]));
    const a = new AgentClient(procs[0].address, creds?.(names[0]));
    const b = new AgentClient(procs[1].address, creds?.(names[1]));
    await a.waitReady();
    await b.waitReady();
    return {
      transport, procs, a, b, targetNode: names[1],
      close: async () => {
        a.close();
        b.close();
        await Promise.all(procs.map((x) => x.stop()));
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(procs.map((x) => x.stop()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** What the TLS comparison needs of a bench result. */
export interface TransportCost {
  profile: string;
  memBytes: number;
  security?: 'plain' | 'tls';
  /** The data transport the batches took (grpc or bulk). */
  transport?: 'grpc' | 'bulk';
  throughputBytesPerSec: number;
  bytesSent: number;
  cpuSeconds?: { source: number; target: number };
  /** CPU seconds of the sim guest's vCPU threads, each side (not in cpuSeconds). */
  guestCpuSeconds?: { source: number; target: number };
  /** Parallel data streams of the migration (1 when absent). */
  streams?: number;
}

/** CPU seconds per GB on the wire. */
export function perGb(cpuSeconds: number, bytes: number): number {
  return bytes > 0 ? cpuSeconds / (bytes / 1e9) : NaN;
}

/** The comparison lines: per profile, throughput and CPU s/GB of each side, plain and TLS. */
export function tlsComparison(results: TransportCost[]): string[] {
  const lines: string[] = [];
  for (const r of results) {
    if (!r.security || !r.cpuSeconds) continue;
    const c = r.cpuSeconds;
    const transport = `${r.security}${r.transport ? `/${r.transport}` : ''}${r.streams && r.streams !== 1 ? ` x${r.streams === 0xffff ? 'auto' : r.streams}` : ''}`;
    lines.push(`  ${r.profile.padEnd(9)} ${transport.padEnd(14)} ${formatRate(r.throughputBytesPerSec).padStart(12)}  CPU source ${perGb(c.source, r.bytesSent).toFixed(2)} s/GB, target ${perGb(c.target, r.bytesSent).toFixed(2)} s/GB (${(r.bytesSent / 1e9).toFixed(2)} GB on the wire)${r.guestCpuSeconds ? `; guest vCPUs ${r.guestCpuSeconds.source.toFixed(2)}/${r.guestCpuSeconds.target.toFixed(2)} s` : ''}`);
  }
  return lines.length ? ['', 'transport: plain text vs mutual TLS, same run (CPU = agent process utime+stime during MigrateVm, less the sim guest vCPU threads, / GB on the wire)', ...lines] : [];
}
