/**
 * The faults a campaign injects: kill -9 or SIGSTOP (then SIGCONT) of an agent, a migration's
 * target agent, a migrator or a scheduler; a host's link down for a while; kill -9 of an etcd
 * member (restarted on the same data dir); SIGSTOP of the etcd leader. Killed processes are
 * restarted after the fault's duration, as a supervisor would (`drover up` restarts nothing):
 * a killed agent comes back EMPTY, so its VMs are lost with it and must be reported as lost.
 */
import { execFileSync } from 'node:child_process';
import type { Prng } from './prng';
import type { ProcessSet, Proc } from './processes';
import { etcdLeader } from './cluster-view';

/** Every fault kind. */
export const FAULT_KINDS = [
  'kill-agent', 'stop-agent', 'kill-target', 'stop-target', 'kill-migrator', 'stop-migrator',
  'kill-scheduler', 'stop-scheduler', 'link-down', 'kill-etcd', 'stop-etcd-leader',
] as const;
/** One fault kind. */
export type FaultKind = typeof FAULT_KINDS[number];

/** A fault as injected (for the log and the pause credit). */
export interface Fault {
  kind: FaultKind;
  /** Process or link hit. */
  victim: string;
  /** Host names whose guests it may pause ('*' = all: etcd faults). */
  hosts: string[];
  durationMs: number;
  at: number;
  /** For a killed agent: node id whose VMs died with it. */
  killedNode?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function nodeOf(p: Proc): string {
  return `node-${p.host.name.slice(1)}`;
}

/** Chooses the victim process of a fault (`target` = node id of an active job's target). */
async function victim(kind: FaultKind, ps: ProcessSet, rnd: Prng, target?: string): Promise<Proc | undefined> {
  const live = (k: Proc['kind']) => ps.ofKind(k).filter((p) => !p.exited && !p.stopped);
  switch (kind) {
    case 'kill-target': case 'stop-target': {
      const t = live('agent').find((p) => nodeOf(p) === target);
      return t ?? (live('agent').length ? rnd.pick(live('agent')) : undefined);
    }
    case 'kill-agent': case 'stop-agent': return live('agent').length ? rnd.pick(live('agent')) : undefined;
    case 'kill-migrator': case 'stop-migrator': return live('migrator').length ? rnd.pick(live('migrator')) : undefined;
    case 'kill-scheduler': case 'stop-scheduler': return live('scheduler').length ? rnd.pick(live('scheduler')) : undefined;
    case 'kill-etcd': {
      const up = live('etcd');
      return up.length === ps.hosts.length ? rnd.pick(up) : undefined; // keep quorum: one member down at most
    }
    case 'stop-etcd-leader': {
      const url = await etcdLeader(ps.hosts.map((h) => `http://${h.ip}:2379`));
      return live('etcd').find((p) => url?.includes(`//${p.host.ip}:`));
    }
    default: return undefined;
  }
}

/** Injects one fault, waits its duration, and repairs it (SIGCONT, link up, restart). */
export async function inject(kind: FaultKind, ps: ProcessSet, rnd: Prng, durationMs: number, target: string | undefined,
  onInjected: (f: Fault) => void): Promise<Fault | undefined> {
  if (kind === 'link-down') {
    const h = rnd.pick(ps.hosts);
    const f: Fault = { kind, victim: `${h.name}:${h.dev}`, hosts: [h.name], durationMs, at: Date.now() };
    execFileSync('ip', ['-n', h.ns, 'link', 'set', h.dev, 'down']);
    onInjected(f);
    await sleep(durationMs);
    execFileSync('ip', ['-n', h.ns, 'link', 'set', h.dev, 'up']);
    return f;
  }
  const p = await victim(kind, ps, rnd, target);
  if (!p) return undefined;
  const f: Fault = { kind, victim: p.name, hosts: p.kind === 'etcd' ? ['*'] : p.kind === 'agent' ? [p.host.name] : ['*'], durationMs, at: Date.now() };
  if (kind.startsWith('stop-')) {
    await ps.signal(p.name, 'SIGSTOP');
    onInjected(f);
    await sleep(durationMs);
    await ps.signal(p.name, 'SIGCONT');
    return f;
  }
  if (p.kind === 'agent') f.killedNode = nodeOf(p);
  await ps.signal(p.name, 'SIGKILL');
  onInjected(f);
  await sleep(durationMs);
  ps.start(p.name);
  return f;
}

/** Parses `--kinds a,b` (every kind when absent); throws on an unknown kind. */
export function parseKinds(text: string | undefined): FaultKind[] {
  if (!text) return [...FAULT_KINDS];
  const ks = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const k of ks) if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new Error(`unknown fault kind "${k}" (kinds: ${FAULT_KINDS.join(', ')})`);
  return ks as FaultKind[];
}
