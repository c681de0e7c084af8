/**
 * The processes of a multi-host cluster, each started inside its host's namespace with
 * `ip netns exec` (which execs, so the pid we hold is the real process): one etcd member, one
 * node agent per host, and migrators and schedulers spread over the hosts. Logs go to
 * RUNDIR/<host>/<name>.log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { HostNet } from './topology';

/** Kinds of processes the campaign can hit. */
export type ProcKind = 'etcd' | 'agent' | 'migrator' | 'scheduler';

/** One managed process. */
export interface Proc {
  name: string;
  kind: ProcKind;
  host: HostNet;
  child?: ChildProcess;
  /** How to start it again (same flags, same data dir). */
  argv: string[];
  env: NodeJS.ProcessEnv;
  exited: boolean;
  stopped: boolean;
}

/** The repository root (dist/test/multihost -> ../../..). */
export const REPO = path.resolve(__dirname, '..', '..', '..');
const CLI_MAIN = path.join(REPO, 'dist', 'cli', 'main.js');
/** What the CLI processes run: `node -e require(main).main(argv)`. */
export function droverArgv(args: string[], nodeFlags: string[] = []): string[] {
  return [process.execPath, ...nodeFlags, '-e', `require(${JSON.stringify(CLI_MAIN)}).main(process.argv.slice(1))`, ...args];
}

/** Every process of the cluster, by name. */
export class ProcessSet {
  readonly procs = new Map<string, Proc>();

  constructor(readonly dir: string, readonly hosts: HostNet[], readonly env: NodeJS.ProcessEnv) {}

  /** The etcd client URLs of all members, comma-separated. */
  etcdUrls(): string {
    return this.hosts.map((h) => `http://${h.ip}:2379`).join(',');
  }

  /** Agent address of a host. */
  agentAddr(h: HostNet): string {
    return `${h.ip}:7000`;
  }

  private add(name: string, kind: ProcKind, host: HostNet, argv: string[], env: NodeJS.ProcessEnv = {}): Proc {
    const p: Proc = { name, kind, host, argv, env: { ...process.env, ...this.env, ...env }, exited: true, stopped: false };
    this.procs.set(name, p);
    return p;
  }

  /** Declares the cluster: etcd + agent on every host, migrators and schedulers round-robin. */
  declare(opts: { migrators: number; schedulers: number; agentMem: string }): void {
    const cluster = this.hosts.map((h) => `${h.name}=http://${h.ip}:2380`).join(',');
    for (const h of this.hosts) {
      const data = path.join(this.dir, h.name, 'etcd');
      this.add(`etcd-${h.name}`, 'etcd', h, ['etcd', '--name', h.name, '--data-dir', data,
        '--listen-client-urls', `http://${h.ip}:2379`, '--advertise-client-urls', `http://${h.ip}:2379`,
        '--listen-peer-urls', `http://${h.ip}:2380`, '--initial-advertise-peer-urls', `http://${h.ip}:2380`,
        '--initial-cluster', cluster, '--initial-cluster-state', 'new', '--initial-cluster-token', path.basename(this.dir),
        '--heartbeat-interval', '100', '--election-timeout', '1000']);
    }
    this.hosts.forEach((h, i) => {
      // agents start tuned (as the local-cluster launcher does), so the pid is the agent itself
      this.add(`agent-${h.name}`, 'agent', h, droverArgv(['agent', '--listen', this.agentAddr(h), '--node-id', `node-${i + 1}`,
        '--etcd', this.etcdUrls(), '--mem-capacity', opts.agentMem, '--vcpus', '8', '--insecure'], ['--initial-old-space-size=256']),
      { DROVER_AGENT_TUNED: '1', GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=536870912' });
    });
    for (let i = 0; i < opts.migrators; i++) {
      const h = this.hosts[i % this.hosts.length];
      this.add(`migrator-${i + 1}`, 'migrator', h, droverArgv(['migrator', '--etcd', this.etcdUrls(), '--id', `migrator-${i + 1}`, '--insecure']));
    }
    for (let i = 0; i < opts.schedulers; i++) {
      const h = this.hosts[(i + 1) % this.hosts.length];
      this.add(`scheduler-${i + 1}`, 'scheduler', h, droverArgv(['scheduler', '--etcd', this.etcdUrls(), '--id', `scheduler-${i + 1}`, '--insecure']));
    }
  }

  /** Starts (or restarts) process `name` inside its host's namespace. */
  start(name: string): Proc {
    const p = this.procs.get(name)!;
    fs.mkdirSync(path.join(this.dir, p.host.name), { recursive: true });
    const log = fs.openSync(path.join(this.dir, p.host.name, `${p.name}.log`), 'a');
    fs.writeSync(log, `--- harness: start ${p.name} at ${new Date().toISOString()}\n`);
    const child = spawn('ip', ['netns', 'exec', p.host.ns, ...p.argv], { stdio: ['ignore', log, log], env: p.env });
    fs.closeSync(log);
    p.child = child;
    p.exited = false;
    p.stopped = false;
    child.once('exit', () => { p.exited = true; });
    return p;
  }

  /** Starts every process of `kind`. */
  startAll(kind: ProcKind): void {
    for (const p of this.procs.values()) if (p.kind === kind) this.start(p.name);
  }

  /** Sends a signal; for SIGKILL waits until the process is gone. */
  async signal(name: string, sig: NodeJS.Signals): Promise<void> {
    const p = this.procs.get(name)!;
    if (!p.child || p.exited) return;
    const gone = new Promise<void>((r) => (p.exited ? r() : p.child!.once('exit', () => r())));
    p.child.kill(sig);
    if (sig === 'SIGSTOP') p.stopped = true;
    if (sig === 'SIGCONT') p.stopped = false;
    if (sig === 'SIGKILL') await gone;
  }

  /** Processes of one kind. */
  ofKind(kind: ProcKind): Proc[] {
    return [...this.procs.values()].filter((p) => p.kind === kind);
  }

  /** Stops everything: SIGCONT (so SIGTERM is seen), SIGTERM, then SIGKILL after 3 s. */
  async stopAll(): Promise<void> {
    const live = [...this.procs.values()].filter((p) => p.child && !p.exited);
    for (const p of live) { p.child!.kill('SIGCONT'); p.child!.kill('SIGTERM'); }
    await Promise.all(live.map((p) => new Promise<void>((r) => {
      if (p.exited) return r();
      const t = setTimeout(() => p.child!.kill('SIGKILL'), 3000);
      p.child!.once('exit', () => { clearTimeout(t); r(); });
    })));
  }
}
