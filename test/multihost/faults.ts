/**
 * The faults a campaign injects: kill -9 or SIGSTOP (then SIGCONT) of an agent, a migration's
 * target agent, a migrator or a scheduler; a host's link down for a while; kill -9 of an etcd
 * member (restarted on the same data dir); SIGSTOP of the etcd leader. Killed processes are
 * restarted after the fault's duration, as a supervisor would (`drover up` restarts nothing):
 * a killed agent comes back EMPTY, so its VMs are lost with it and must be reported as lost.
 * Two compound faults reproduce issue #12's measurements: `stall-etcd` (every member stopped for
 * the duration, e.g. a 5 s stall) and `kill-target-etcd-stop` (etcd stopped ~1.5 s around a
 * kill -9 of the migration's target).
 */
import { execFileSync } from 'node:child_process';
import type { Prng } from './prng';
import type { ProcessSet, Proc } from './processes';
import { etcdLeader } from './cluster-view';

/** Every fault kind. */
export const FAULT_KINDS = [
  'kill-agent', 'stop-agent', 'kill-target', 'stop-target', 'kill-migrator', 'stop-migrator',
  'kill-scheduler', 'stop-scheduler', 'link-down', 'kill-etcd', 'stop-etcd-leader', 'stall-etcd', 'kill-target-etcd-stop',
] as const;
/** One fault kind. */
export type FaultKind = typeof FAULT_KINDS[number];

/** A fault as injected (for the log and the pause credit). */
export interface Fault {
  kind: FaultKind;
  /** Process or link hit. */
  victim: string;
  /**
   * Host names whose guests it pauses by itself, credited against their heartbeat gap ('*' =
   * all: etcd faults). Migrator and scheduler faults pause no guest: a pause they cause counts.
   */
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

/** What the fault should hit when a migration is running: its target node and its migrator. */
export interface Aim { target?: string; migrator?: string }

/** Chooses the victim process of a fault. */
async function victim(kind: FaultKind, ps: ProcessSet, rnd: Prng, aim: Aim): Promise<Proc | undefined> {
  const target = aim.target;
  const live = (k: Proc['kind']) => ps.ofKind(k).filter((p) => !p.exited && !p.stopped);
  switch (kind) {
    case 'kill-target': case 'stop-target': case 'kill-target-etcd-stop': {
      const t = live('agent').find((p) => nodeOf(p) === target);
      return t ?? (live('agent').length ? rnd.pick(live('agent')) : undefined);
    }
    case 'kill-agent': case 'stop-agent': return live('agent').length ? rnd.pick(live('agent')) : undefined;
    case 'kill-migrator': case 'stop-migrator': {
      const m = live('migrator').find((p) => p.name === aim.migrator);
      return m ?? (live('migrator').length ? rnd.pick(live('migrator')) : undefined);
    }
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
export async function inject(kind: FaultKind, ps: ProcessSet, rnd: Prng, durationMs: number, aim: Aim,
  onInjected: (f: Fault) => void): Promise<Fault | undefined> {
  if (kind === 'stall-etcd') return stallEtcd(ps, durationMs, onInjected);
  if (kind === 'link-down') {
    const h = rnd.pick(ps.hosts);
    const f: Fault = { kind, victim: `${h.name}:${h.dev}`, hosts: [h.name], durationMs, at: Date.now() };
    execFileSync('ip', ['-n', h.ns, 'link', 'set', h.dev, 'down']);
    onInjected(f);
    await sleep(durationMs);
    execFileSync('ip', ['-n', h.ns, 'link', 'set', h.dev, 'up']);
    return f;
  }
  const p = await victim(kind, ps, rnd, aim);
  if (!p) return undefined;
  if (kind === 'kill-target-etcd-stop') return killUnderStall(p, ps, durationMs, onInjected);
  const f: Fault = { kind, victim: p.name, hosts: p.kind === 'etcd' ? ['*'] : p.kind === 'agent' ? [p.host.name] : [], durationMs, at: Date.now() };
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

/** Every etcd member SIGSTOPped for `durationMs`, then SIGCONT. */
async function stallEtcd(ps: ProcessSet, durationMs: number, onInjected: (f: Fault) => void): Promise<Fault> {
  const members = ps.ofKind('etcd').filter((p) => !p.exited);
  const f: Fault = { kind: 'stall-etcd', victim: members.map((p) => p.name).join('+'), hosts: ['*'], durationMs, at: Date.now() };
  for (const m of members) await ps.signal(m.name, 'SIGSTOP');
  onInjected(f);
  await sleep(durationMs);
  for (const m of members) await ps.signal(m.name, 'SIGCONT');
  return f;
}

/** etcd stopped ~1.5 s around a kill -9 of agent `p`; the agent comes back empty after `durationMs`. */
async function killUnderStall(p: Proc, ps: ProcessSet, durationMs: number, onInjected: (f: Fault) => void): Promise<Fault> {
  const members = ps.ofKind('etcd').filter((m) => !m.exited);
  const f: Fault = { kind: 'kill-target-etcd-stop', victim: `${p.name}+etcd`, hosts: ['*'], durationMs, at: Date.now(), killedNode: nodeOf(p) };
  for (const m of members) await ps.signal(m.name, 'SIGSTOP');
  await sleep(700);
  await ps.signal(p.name, 'SIGKILL');
  onInjected(f);
  await sleep(800);
  for (const m of members) await ps.signal(m.name, 'SIGCONT');
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
