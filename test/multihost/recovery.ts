/**
 * Recovery time of each injected fault: from the moment the fault became detectable (a kill
 * closes connections at once; a stopped process or a downed link is detectable when its node
 * lease expires, or when the outage ends if sooner; a stopped etcd when it is back) until the
 * cluster is consistent again: no guest paused on any agent, every VM that is in no job runs
 * exactly once, on the node etcd records (VMs etcd marks unknown/failed are lost, not waited for),
 * and every direct (`dx-`) VM runs at most once. Polled, so the figure has the poll's resolution.
 */
import { agentVmsNow, type AgentVm, type EtcdView } from './cluster-view';
import type { Fault } from './faults';
import type { HostNet } from './topology';

/** The node lease TTL of the campaign's cluster (DROVER_NODE_TTL_SEC=3), ms. */
export const CAMPAIGN_TTL_MS = 3000;
/** A fault not recovered within this long counts as unrecovered (its figure is this bound). */
export const RECOVERY_LIMIT_MS = 60_000;
/** Pause between two consistency polls, ms (each poll lists every agent through the CLI). */
const POLL_MS = 250;
/** Name prefix of the VMs the campaign migrates directly (`drover migrate --from --to`), outside etcd. */
export const DIRECT_PREFIX = 'dx-';

/** When `f` became detectable, ms since epoch. */
export function detectableAt(f: Fault): number {
  switch (f.kind) {
    case 'kill-agent': case 'kill-target': case 'kill-migrator': case 'kill-scheduler': case 'kill-etcd': return f.at;
    case 'stall-etcd': return f.at + f.durationMs;
    case 'kill-target-etcd-stop': return f.at + 1500; // etcd stopped 700 + 800 ms around the kill (faults.ts)
    default: return f.at + Math.min(f.durationMs, CAMPAIGN_TTL_MS); // stop-*, link-down, stop-etcd-leader
  }
}

/** One fault's recovery. */
export interface RecoverySample { kind: string; ms: number; recovered: boolean }

/** Whether the cluster is consistent now (see the module comment); a reason when not. */
export async function inconsistency(etcd: EtcdView, hosts: HostNet[], agentAddr: (h: HostNet) => string): Promise<string> {
  const lists = await Promise.all(hosts.map((h) => agentVmsNow(agentAddr(h))));
  const [vms, jobs] = await Promise.all([etcd.vms(), etcd.jobs()]);
  const where = new Map<string, AgentVm[]>();
  const unreachable = new Set<string>();
  lists.forEach((l, i) => {
    if (!l) unreachable.add(`node-${hosts[i].name.slice(1)}`);
    for (const v of l ?? []) where.set(v.name, [...(where.get(v.name) ?? []), v]);
  });
  for (const [name, places] of where) {
    const paused = places.find((p) => p.state === 'paused');
    if (paused) return `${name} paused on ${paused.node}`;
    if (name.startsWith(DIRECT_PREFIX) && places.filter((p) => p.state === 'running').length > 1) return `${name} runs twice`;
  }
  const inJob = new Set([...jobs.values()].map((j) => j.vm));
  for (const [name, rec] of vms) {
    if (rec.job || inJob.has(name) || rec.state !== 'running') continue;
    if (unreachable.has(rec.node)) return `${name}: its node ${rec.node} does not answer`;
    const running = (where.get(name) ?? []).filter((p) => p.state === 'running').map((p) => p.node);
    if (running.length !== 1 || running[0] !== rec.node) return `${name}: etcd says ${rec.node}, runs on [${running.join(',')}]`;
  }
  return '';
}

/** Measures every fault's recovery; `watch` runs beside the fault's own sleep. */
export class RecoveryClock {
  readonly samples: RecoverySample[] = [];

  constructor(private readonly check: () => Promise<string>) {}

  /** Waits until `f` is detectable, then polls until the cluster is consistent (or the limit). */
  async watch(f: Fault, log: (msg: string) => void): Promise<void> {
    const from = detectableAt(f);
    await new Promise((r) => setTimeout(r, Math.max(0, from - Date.now())));
    let last = '';
    while (Date.now() - from < RECOVERY_LIMIT_MS) {
      let now: string;
      try {
        now = await this.check();
      } catch (e) { now = `check failed: ${(e as Error).message}`; }
      // Each change of what is still inconsistent, so a slow recovery shows where it waited.
      if (now && now !== last) log(`  +${Date.now() - from} ms after ${f.kind} became detectable: ${now}`);
      last = now;
      if (!last) break;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    const ms = Date.now() - from;
    const recovered = !last;
    this.samples.push({ kind: f.kind, ms, recovered });
    log(recovered ? `recovered from ${f.kind} ${ms} ms after it became detectable` : `NOT recovered from ${f.kind} within ${RECOVERY_LIMIT_MS / 1000} s: ${last}`);
  }
}

/** The q-quantile (0..1) of `xs` (nearest rank); 0 for none. */
export function quantile(xs: number[], q: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
