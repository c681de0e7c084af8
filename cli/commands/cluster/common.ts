/** Shared helpers of the cluster commands: the etcd URL, argument checks, tables, and the views they print. */
import type { Etcd3 } from 'etcd3';
import { UsageError, str, type OptionSpec, type Parsed } from '../../args';
import { connectEtcd, type ClusterSnapshot } from '../../../cluster/etcd';
import type { AttemptRecord, JobPrediction, JobRecord, NodeState } from '../../../cluster/keyspace';
import { DroverError } from '../../../lib/errors';
import { loadTlsFiles, tlsPathsFromEnv, type TlsFilePaths } from '../../../lib/pki/tls-files';
import { useAgentIdentity } from '../../tls-flags';

export { jobLine } from '../../../cluster/ops/job-line';

/** The --etcd option every cluster command takes. */
export const ETCD: OptionSpec = { etcd: { type: 'string' } };

/** Refuses positionals beyond the first `n` (one line naming the usage). */
export function noExtra(p: { positionals: string[] }, n: number, usage: string): void {
  if (p.positionals.length > n) throw new UsageError(`unexpected argument "${p.positionals[n]}" (usage: ${usage})`);
}

/** Resolves on the first SIGINT or SIGTERM. */
export function waitSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

/** The etcd URL from --etcd or DROVER_ETCD. */
export function etcdUrl(p: Parsed, command: string): string {
  const u = str(p, 'etcd') ?? process.env.DROVER_ETCD;
  if (!u) throw new UsageError(`${command}: no etcd given: use --etcd URL or set DROVER_ETCD (drover up writes DIR/drover.env)`);
  return u;
}

/**
 * The CLI's identity from DROVER_CA / DROVER_CERT / DROVER_KEY (DIR/drover.env: the admin's):
 * etcd over https uses it (connectEtcd), and so does every AgentClient the command builds.
 */
export function useEnvIdentity(command: string): TlsFilePaths | undefined {
  let paths: TlsFilePaths | undefined;
  try {
    paths = tlsPathsFromEnv();
    if (paths) useAgentIdentity(loadTlsFiles(paths, { requireIdentity: true }));
  } catch (err) {
    throw new UsageError(`${command}: ${DroverError.from(err).message}`);
  }
  return paths;
}

/** Connects (with the environment's identity when etcd is https), runs `f`, closes. */
export async function withEtcd<T>(p: Parsed, command: string, f: (etcd: Etcd3) => Promise<T>): Promise<T> {
  const url = etcdUrl(p, command);
  const tls = useEnvIdentity(command);
  const etcd = await connectEtcd(url, undefined, tls);
  try {
    return await f(etcd);
  } finally {
    etcd.close();
  }
}

/** Formats rows as a left-aligned table. */
export function table(head: string[], rows: (string | number)[][]): string {
  const all = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ')).join('\n');
}

/** Bytes per MiB (the unit the tables print). */
export const MiB = 2 ** 20;

/** `node list --json` objects. */
export interface NodeJson {
  id: string;
  state: NodeState;
  address: string;
  vms: string[];
  memTotalBytes: number;
  memUsedBytes: number;
  vcpusTotal: number;
  load: number;
  note: string;
}

/** The `node list` view of a snapshot. */
export function nodesJson(snap: ClusterSnapshot): NodeJson[] {
  return [...snap.nodes.values()].map((n) => {
    const vms = [...snap.vms.values()].map((v) => v.value).filter((v) => v.node === n.id).sort((a, b) => a.name.localeCompare(b.name));
    const used = vms.reduce((a, v) => a + v.spec.memBytes, 0);
    const total = n.heartbeat?.memTotalBytes ?? n.record.memTotalBytes;
    return {
      id: n.id, state: n.state, address: n.record.address, vms: vms.map((v) => v.name), memTotalBytes: total, memUsedBytes: used,
      vcpusTotal: n.record.vcpusTotal, load: total ? used / total : 0, note: n.mark?.note ?? '',
    };
  });
}

/** `migrations list --json` objects. */
export interface MigrationJson {
  id: string;
  vm: string;
  from: string;
  to: string;
  reason: string;
  phase: string;
  result: string;
  downtimeMs: number;
  totalMs: number;
  rounds: number;
  bytesSent: number;
  attempts: number;
  error: string;
  createdAt: number;
  admittedAt: number;
  finishedAt: number;
  etcdWrites: number;
  sentBytes: number;
  remainingBytes: number;
  /** The last attempt's guest-observed blackout, ms; -1 = not measured. */
  guestBlackoutMs: number;
  /** The last attempt's source pause (a pause that ended in a rollback included), ms. */
  pausedMs: number;
  /** Per attempt: downtimeMs, guestBlackoutMs, pausedMs (cluster/keyspace.ts AttemptRecord). */
  attemptLog: AttemptRecord[];
  /** The cost model's prediction made when the job started (totalMs, bytes, downtimeMs, converges, policy), beside the actual figures above; absent for a job not started. */
  prediction?: JobPrediction;
}

/** The `migrations list` view of a job. */
export function jobJson(j: JobRecord): MigrationJson {
  return {
    id: j.id, vm: j.vm, from: j.from, to: j.to, reason: j.reason, phase: j.phase, result: j.result,
    downtimeMs: j.engine?.downtimeMs ?? j.downtimeMs ?? 0, totalMs: j.engine?.totalMs ?? 0, rounds: j.engine?.rounds ?? j.progress?.round ?? 0,
    bytesSent: j.engine?.bytesSent ?? j.progress?.sentBytes ?? 0, attempts: j.attempts, error: j.error,
    createdAt: j.createdAt, admittedAt: j.admittedAt, finishedAt: j.finishedAt, etcdWrites: j.etcdWrites,
    sentBytes: j.progress?.sentBytes ?? 0, remainingBytes: j.progress?.remainingBytes ?? 0,
    guestBlackoutMs: j.guestBlackoutMs ?? -1, pausedMs: j.pausedMs ?? 0, attemptLog: j.attemptLog ?? [],
    ...(j.prediction ? { prediction: j.prediction } : {}),
  };
}
