/**
 * What the cluster looks like, read the way an operator would: the etcd keyspace (read-only,
 * with the etcd3 client) and every agent through the CLI (`drover vm list|verify --agent`).
 */
import { execFile } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import * as grpc from '@grpc/grpc-js';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { droverArgv } from './processes';

/** The key prefix Drover uses. */
const PREFIX = process.env.DROVER_ETCD_PREFIX || '/drover/v1/';

/** The fields of a VM record the checks read. */
export interface VmRec { name: string; node: string; state: string; job: string; error: string; spec: { profile: string } }
/** The fields of a job record the checks read. */
export interface JobRec { id: string; vm: string; from: string; to: string; reason: string; phase: string; result: string; error: string; createdAt: number; finishedAt: number; downtimeMs: number; migrator: string; guestBlackoutMs?: number }
/** A VM as one agent lists it. */
export interface AgentVm { name: string; node: string; state: string }
/** `vm verify --json` output. */
export interface VerifyOut { ok: boolean; badPages: number; detail: string; heartbeatMaxGapMs: number; heartbeatBeats: number }

/** Result of one CLI call. */
export interface CliResult { code: number; stdout: string; stderr: string }

/** Runs `drover ARGS` (in this process's namespace) with a deadline. */
export function drover(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 20_000): Promise<CliResult> {
  const [cmd, ...rest] = droverArgv(args);
  return new Promise((resolve) => {
    execFile(cmd, rest, { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 124) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** How long one read waits for the fastest member (a member cut off by a fault never answers). */
const READ_DEADLINE_MS = 4000;

/**
 * Read-only view of etcd. Each read goes to every member at once and takes the first answer
 * (linearizable, so a member cut off from the quorum cannot answer with stale data): one client
 * bound to a partitioned member would otherwise stall every check until its deadline.
 */
export class EtcdView {
  private readonly clients: Etcd3[];

  constructor(readonly urls: string) {
    this.clients = urls.split(',').map((u) => new Etcd3({ hosts: [u], dialTimeout: 2000 }));
  }

  private async all<T>(sub: string): Promise<Map<string, T>> {
    const kvs = await withDeadline(Promise.any(this.clients.map((c) => c.getAll().prefix(PREFIX + sub).strings())), READ_DEADLINE_MS);
    const out = new Map<string, T>();
    for (const [k, v] of Object.entries(kvs)) out.set(k.slice(k.lastIndexOf('/') + 1), JSON.parse(v) as T);
    return out;
  }

  /** vms/ records. */
  vms(): Promise<Map<string, VmRec>> { return this.all<VmRec>('vms/'); }
  /** Active jobs. */
  jobs(): Promise<Map<string, JobRec>> { return this.all<JobRec>('jobs/'); }
  /** Finished jobs. */
  history(): Promise<Map<string, JobRec>> { return this.all<JobRec>('history/'); }
  /** Nodes that heartbeat now. */
  async alive(): Promise<Set<string>> { return new Set((await this.all<unknown>('alive/')).keys()); }
  /** Maintenance marks. */
  marks(): Promise<Map<string, { state: string }>> { return this.all<{ state: string }>('marks/'); }

  /** Closes the client. */
  close(): void { for (const c of this.clients) c.close(); }
}

/** Rejects when `p` takes longer than `ms`. */
export function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p.finally(() => clearTimeout(t)), new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms`)), ms); })]);
}

/** The etcd leader's client URL (via the gRPC gateway's maintenance/status), or undefined. */
export async function etcdLeader(urls: string[]): Promise<string | undefined> {
  for (const u of urls) {
    try {
      const r = await fetch(`${u}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(1500) });
      const s = (await r.json()) as { header?: { member_id?: string }; leader?: string };
      if (s.leader && s.header?.member_id === s.leader) return u;
      if (s.leader) {
        const m = await fetch(`${u}/v3/cluster/member/list`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(1500) });
        const ml = (await m.json()) as { members?: { ID: string; clientURLs?: string[] }[] };
        const leader = ml.members?.find((x) => x.ID === s.leader);
        if (leader?.clientURLs?.[0]) return leader.clientURLs[0];
      }
    } catch { /* member down: ask the next */ }
  }
  return undefined;
}

/** VMs one agent runs, or undefined when it does not answer. */
export async function agentVms(addr: string): Promise<AgentVm[] | undefined> {
  const r = await drover(['vm', 'list', '--agent', addr, '--json', '--insecure'], {}, 8000);
  if (r.code !== 0) return undefined;
  try { return JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]') as AgentVm[]; } catch { return undefined; }
}

/** Guest check of a VM on one agent: the result, or the error text when it could not run. */
export async function verifyVm(addr: string, name: string): Promise<VerifyOut | string> {
  const r = await drover(['vm', 'verify', name, '--agent', addr, '--json', '--insecure'], {}, 15_000);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (line.startsWith('{')) {
    try { return JSON.parse(line) as VerifyOut; } catch { /* fall through */ }
  }
  return (r.stderr.trim() || `exit ${r.code}`).slice(0, 300);
}

/** How long a recovery poll waits for one agent's list: a cut-off host must not hold the poll up. */
const POLL_LIST_DEADLINE_MS = 750;

/**
 * VMs one agent runs, asked in-process (a fresh connection each time, so no reconnect backoff
 * from an earlier outage delays it), or undefined when it does not answer within
 * POLL_LIST_DEADLINE_MS. For recovery polls, whose figure is only as fine as one poll.
 */
export async function agentVmsNow(addr: string): Promise<AgentVm[] | undefined> {
  const client = new AgentClient(addr, grpc.credentials.createInsecure());
  try {
    const vms = await withDeadline(client.listVms(), POLL_LIST_DEADLINE_MS);
    return vms.map((v) => ({ name: v.spec.name, node: v.nodeId, state: v.state }));
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}
