/**
 * The network of a multi-host run: one "switch" namespace holding a bridge, one namespace per
 * host and one control namespace (where the campaign runs), each joined to the bridge by a veth
 * pair shaped with `tc tbf` to 1 Gbit/s. Addresses come from one private /24 that exists only
 * inside these namespaces (the root namespace has no route to it). Every name starts with
 * `drv<pid>-`, so parallel runs do not collide and leftovers of dead runs can be found.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

/** The private subnet, only inside our namespaces. */
export const SUBNET = '10.231.7';
/** Name pattern of our namespaces: drv<pid>-<role>. */
const NS_RE = /^drv(\d+)-(sw|ctl|h\d+)$/;

/** One host of the run. */
export interface HostNet {
  /** h1, h2, ... */
  name: string;
  /** Network namespace. */
  ns: string;
  /** Address inside the namespace. */
  ip: string;
  /** The host's interface (inside its namespace). */
  dev: string;
}

/** The whole network of one run. */
export interface Topology {
  prefix: string;
  switchNs: string;
  ctl: HostNet;
  hosts: HostNet[];
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Fails with a clear message when namespaces cannot be made here (not root, no `ip`). */
export function checkPrivileges(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('the multi-host harness needs root (it creates network namespaces, veth pairs and a bridge)');
  }
  try { ip('-V'); } catch { throw new Error('the multi-host harness needs iproute2 (`ip`)'); }
}

function addPort(t: Topology, h: HostNet, idx: number): void {
  const peer = `${t.prefix}p${idx}`; // bridge side, inside the switch namespace
  ip('link', 'add', h.dev, 'netns', h.ns, 'type', 'veth', 'peer', 'name', peer, 'netns', t.switchNs);
  ip('-n', t.switchNs, 'link', 'set', peer, 'master', 'br0');
  ip('-n', t.switchNs, 'link', 'set', peer, 'up');
  ip('-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', h.dev);
  ip('-n', h.ns, 'link', 'set', h.dev, 'up');
  ip('-n', h.ns, 'link', 'set', 'lo', 'up');
  // 1 Gbit/s per host link (tbf: netem is not available on this kernel)
  execFileSync('ip', ['netns', 'exec', h.ns, 'tc', 'qdisc', 'add', 'dev', h.dev, 'root', 'tbf', 'rate', '1gbit', 'burst', '256kb', 'latency', '50ms']);
}

/** Builds the switch, the control namespace and `n` hosts. Cleans up what it made if it fails. */
export function createTopology(n: number, pid = process.pid): Topology {
  const prefix = `drv${pid}-`;
  const mk = (role: string, octet: number): HostNet => ({ name: role, ns: `${prefix}${role}`, ip: `${SUBNET}.${octet}`, dev: `${prefix}e`.slice(0, 15) });
  const t: Topology = {
    prefix, switchNs: `${prefix}sw`, ctl: mk('ctl', 250),
    hosts: Array.from({ length: n }, (_, i) => mk(`h${i + 1}`, 11 + i)),
  };
  try {
    ip('netns', 'add', t.switchNs);
    ip('-n', t.switchNs, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', t.switchNs, 'link', 'set', 'br0', 'up');
    [t.ctl, ...t.hosts].forEach((h, i) => { ip('netns', 'add', h.ns); addPort(t, h, i); });
  } catch (e) {
    destroyNamespaces(pid);
    throw e;
  }
  return t;
}

function listOurNamespaces(): { ns: string; pid: number }[] {
  let out = '';
  try { out = ip('netns', 'list'); } catch { return []; }
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0]).filter((x) => NS_RE.test(x ?? ''))
    .map((ns) => ({ ns, pid: Number(NS_RE.exec(ns)![1]) }));
}

/** Kills every process inside namespace `ns` (they are all ours) and deletes it. */
function destroyNs(ns: string): void {
  try {
    for (const p of ip('netns', 'pids', ns).split('\n').map(Number).filter((x) => x > 0)) {
      try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
    }
  } catch { /* no such namespace */ }
  try { ip('netns', 'del', ns); } catch { /* already gone */ }
}

/** Removes every namespace (with its veths and bridge) of the run of `pid`. */
export function destroyNamespaces(pid: number): void {
  const mine = listOurNamespaces().filter((x) => x.pid === pid);
  for (const { ns } of mine.filter((x) => !x.ns.endsWith('-sw'))) destroyNs(ns);
  for (const { ns } of mine.filter((x) => x.ns.endsWith('-sw'))) destroyNs(ns);
}

/** Namespaces of this harness left by runs whose process is gone. */
export function removeLeftovers(): string[] {
  const dead = listOurNamespaces().filter(({ pid }) => !isHarness(pid));
  for (const pid of new Set(dead.map((d) => d.pid))) {
    destroyNamespaces(pid);
    fs.rmSync(runDir(pid), { recursive: true, force: true });
  }
  return dead.map((d) => d.ns);
}

/** Whether `pid` is a live run of this harness (a live process running chaos-main). */
function isHarness(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('chaos-main');
  } catch {
    return false;
  }
}

/** Our namespaces that exist now (for the self-test). */
export function namespacesOf(pid: number): string[] {
  return listOurNamespaces().filter((x) => x.pid === pid).map((x) => x.ns);
}

/** Scratch directory of the run of `pid` (etcd data, logs). */
export function runDir(pid: number): string {
  return `/tmp/drover-chaos/${pid}`;
}
