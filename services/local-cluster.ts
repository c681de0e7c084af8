/**
 * A local Drover cluster of real processes: etcd (unless a URL is given), N node agents started
 * with `--etcd`, and the scheduler and migrator as separate processes. Used by `drover up`,
 * `drover demo` and the integration tests. Each process logs to DIR/<name>.log.
 *
 * Supervision (unless `supervise: false`): an agent, migrator or scheduler that dies is started
 * again with backoff (services/supervisor.ts), as the systemd units' `Restart=on-failure` does;
 * every restart is logged to DIR/supervisor.log (and to `log`). A restarted agent comes back
 * empty: the scheduler reports the VMs it ran as lost. Nothing is restarted during `stop()`.
 *
 * Secure by default: a CA in DIR/pki (reused when present) and one identity per process
 * (services/local-pki.ts); etcd serves TLS with client-certificate auth and RBAC (each agent
 * writes only its own keys, cluster/etcd-rbac.ts); agents, migrators and schedulers get their
 * certificates as --ca/--cert/--key and serve /metrics over HTTPS. `insecure: true` keeps plain
 * text everywhere (every process gets --insecure and prints its warning line).
 *
 * DIR/drover.env is written once, atomically, when the cluster is ready: DROVER_ETCD,
 * DROVER_CA/DROVER_CERT/DROVER_KEY (the admin identity; absent in plain text) and DROVER_METRICS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { failedPrecondition, unavailable } from '../lib/errors';
import { connectEtcd, updateJson } from '../cluster/etcd';
import { keys, type ClusterConfig } from '../cluster/keyspace';
import { startLocalEtcd, type LocalEtcd } from '../cluster/local-etcd';
import { sleep } from '../cluster/log';
import { tunedEnv, tunedNodeArgs } from './node-agent/process-tuning';
import { Supervisor } from './supervisor';
import { publishMetricsTargets, type ClusterEnv, type MetricsTarget } from '../cluster/metrics-targets';
import { enableRbac } from '../cluster/etcd-rbac';
import { ensureLocalPki, type LocalPki } from './local-pki';

/** How long a restarted process may take to print its metrics address, ms (a start on a loaded host). */
const METRICS_REPUBLISH_WAIT_MS = 30_000;
/** Poll period of its log meanwhile, ms. */
const METRICS_REPUBLISH_POLL_MS = 500;

function metricsLines(text: string): number {
  return (text.match(/metrics on \S+/g) ?? []).length;
}

/** bin/drover of this checkout (works from the sources and from dist/). */
export function droverBin(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    const p = path.join(dir, 'bin', 'drover');
    if (fs.existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  throw unavailable('cannot find bin/drover next to the compiled code');
}

/** What a local cluster runs: how many nodes, where logs go, and the agents' capacity. */
export interface LocalClusterOptions {
  nodes: number;
  dir: string;
  /** Use this etcd instead of starting one. */
  etcdUrl?: string;
  /** Memory capacity of each agent (default 2 GiB). */
  agentMem?: string;
  agentVcpus?: number;
  schedulers?: number;
  migrators?: number;
  /** Extra environment for every process (e.g. DROVER_NODE_TTL_SEC). */
  env?: Record<string, string>;
  /** Cluster config written before the services start. */
  config?: Partial<ClusterConfig>;
  /** Node id prefix (default `node-`). */
  nodePrefix?: string;
  /** Restart processes that die (default true). */
  supervise?: boolean;
  /** Gets each supervisor line (restarts) besides DIR/supervisor.log. */
  log?: (line: string) => void;
  /** Plain text everywhere, no certificates, no etcd auth (default false: mutual TLS and etcd RBAC). */
  insecure?: boolean;
}

/** A running local cluster. */
export class LocalCluster {
  etcdUrl = '';
  etcd?: Etcd3;
  private localEtcd?: LocalEtcd;
  readonly procs = new Map<string, ChildProcess>();
  private readonly exited = new Set<string>();
  /** /metrics endpoints of the processes (also in DIR/drover.env as DROVER_METRICS). */
  metricsTargets: MetricsTarget[] = [];
  private stopping = false;
  /** The cluster's identities (undefined in plain text). */
  pki?: LocalPki;
  /** What DIR/drover.env holds besides DROVER_METRICS. */
  private clusterEnv: ClusterEnv = {};
  private readonly supervisor = new Supervisor((line) => this.supervisorLog(line));

  constructor(readonly opts: LocalClusterOptions) {}

  private supervisorLog(line: string): void {
    fs.appendFileSync(path.join(this.opts.dir, 'supervisor.log'), `${new Date().toISOString()} ${line}\n`);
    this.opts.log?.(line);
  }

  /** Starts process `name` with `start`, under the supervisor unless supervision is off. */
  private launch(name: string, start: () => ChildProcess): ChildProcess {
    if (this.opts.supervise === false) return start();
    let first = true;
    return this.supervisor.add(name, () => {
      if (!first) void this.republishMetrics(name);
      first = false;
      return start();
    });
  }

  /** After a restart: once the new process names its metrics port, rewrites DROVER_METRICS and prometheus.yml. */
  private async republishMetrics(name: string): Promise<void> {
    const log = path.join(this.opts.dir, `${name}.log`);
    const count = () => { try { return metricsLines(fs.readFileSync(log, 'utf8')); } catch { return 0; } };
    const before = count();
    const deadline = Date.now() + METRICS_REPUBLISH_WAIT_MS;
    while (!this.stopping && Date.now() < deadline) {
      await sleep(METRICS_REPUBLISH_POLL_MS);
      if (count() <= before) continue;
      if (this.metricsTargets.length) this.metricsTargets = await this.publishMetrics().catch(() => this.metricsTargets);
      return;
    }
  }

  /** Node ids, in order. */
  nodeIds(): string[] {
    return Array.from({ length: this.opts.nodes }, (_, i) => `${this.opts.nodePrefix ?? 'node-'}${i + 1}`);
  }

  /** Process names of the control-plane replicas, in start order. */
  private controllerNames(): string[] {
    const n = (kind: string, count: number) => Array.from({ length: count }, (_, i) => `${kind}-${i + 1}`);
    return [...n('scheduler', this.opts.schedulers ?? 1), ...n('migrator', this.opts.migrators ?? 1)];
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.opts.dir, { recursive: true });
    fs.rmSync(path.join(this.opts.dir, 'drover.env'), { force: true }); // a previous run's: readers wait for this run's
    if (!this.opts.insecure) this.pki = await ensureLocalPki(path.join(this.opts.dir, 'pki'), this.nodeIds(), this.controllerNames());
    if (this.opts.etcdUrl) {
      this.etcdUrl = this.opts.etcdUrl;
    } else {
      this.localEtcd = await startLocalEtcd({ dir: path.join(this.opts.dir, 'etcd'), tls: this.pki?.etcd });
      this.etcdUrl = this.localEtcd.url;
    }
    this.etcd = await connectEtcd(this.etcdUrl, undefined, this.pki?.admin);
    // Our own etcd: users per identity, then auth on (an external etcd's auth is its operator's).
    if (this.pki && this.localEtcd) await enableRbac(this.etcd, this.pki.etcdIdentities);
    if (this.opts.config) {
      const cfg = this.opts.config;
      await updateJson<Partial<ClusterConfig>>(this.etcd, keys.config(), (cur) => ({ ...(cur ?? {}), ...cfg }));
    }
    this.clusterEnv = { DROVER_ETCD: this.etcdUrl, ...(this.pki ? { DROVER_CA: this.pki.caFile, DROVER_CERT: this.pki.admin.cert, DROVER_KEY: this.pki.admin.key } : {}) };
    for (const id of this.nodeIds()) this.startAgent(id);
    for (const name of this.controllerNames()) this.startService(name.startsWith('scheduler') ? 'scheduler' : 'migrator', name);
    await this.waitNodes(this.nodeIds().length);
    this.metricsTargets = await this.publishMetrics(); // DIR/drover.env (once, now that everything runs) + DIR/prometheus.yml
  }

  /** Writes DIR/drover.env and DIR/prometheus.yml with the processes' current metrics addresses. */
  private publishMetrics(): Promise<MetricsTarget[]> {
    const m = this.pki?.monitor;
    return publishMetricsTargets(this.opts.dir, [...this.procs.keys()], { env: this.clusterEnv, tls: m ? { caFile: m.ca, certFile: m.cert, keyFile: m.key } : undefined });
  }

  /** The TLS flags of process `name`: its identity, or --insecure. */
  private tlsArgs(name: string): string[] {
    if (!this.pki) return ['--insecure'];
    const f = this.pki.of(name);
    if (!fs.existsSync(f.cert)) throw failedPrecondition(`no certificate for ${name} in ${this.pki.dir}: the local cluster issues identities for its configured nodes and replicas only (drover pki issue --dir ${this.pki.dir} ... adds one)`);
    return ['--ca', f.ca, '--cert', f.cert, '--key', f.key];
  }

  /** Spawns `drover ARGS` as process `name`, logging to DIR/name.log. */
  spawnDrover(name: string, args: string[]): ChildProcess {
    const log = fs.openSync(path.join(this.opts.dir, `${name}.log`), 'a');
    const env: NodeJS.ProcessEnv = { ...process.env, DROVER_QUIET: '', ...this.opts.env, DROVER_ETCD: this.etcdUrl };
    // Each process gets its own identity as flags; none inherits the launcher's (an exported drover.env).
    for (const k of ['DROVER_CA', 'DROVER_CERT', 'DROVER_KEY']) delete env[k];
    // agents move memory: started tuned (else they would re-execute themselves, see process-tuning.ts)
    const child = args[0] === 'agent'
      ? spawn(process.execPath, tunedNodeArgs(args), { stdio: ['ignore', log, log], env: tunedEnv(env) })
      : spawn(process.execPath, [droverBin(), ...args], { stdio: ['ignore', log, log], env });
    fs.closeSync(log);
    this.procs.set(name, child);
    this.exited.delete(name);
    child.once('exit', () => this.exited.add(name));
    return child;
  }

  /** Starts (supervised) the agent of node `id`. */
  startAgent(id: string): ChildProcess {
    return this.launch(id, () => this.spawnDrover(id, ['agent', '--listen', '127.0.0.1:0', '--node-id', id, '--etcd', this.etcdUrl,
      '--mem-capacity', this.opts.agentMem ?? '2GiB', '--vcpus', String(this.opts.agentVcpus ?? 8), '--metrics-listen', '127.0.0.1:0', ...this.tlsArgs(id)]));
  }

  /** Starts (supervised) replica `id` of a control-plane service. */
  startService(kind: 'scheduler' | 'migrator', id: string): ChildProcess {
    return this.launch(id, () => this.spawnDrover(id, [kind, '--etcd', this.etcdUrl, '--id', id, '--metrics-listen', '127.0.0.1:0', ...this.tlsArgs(id)]));
  }

  /** Waits until `n` nodes heartbeat. */
  async waitNodes(n: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const alive = await this.etcd!.getAll().prefix(keys.alives()).keys();
      if (alive.length >= n) return;
      for (const [name, p] of this.procs) if (this.exited.has(name) && p.exitCode !== null && p.exitCode !== 0) throw unavailable(`${name} exited with code ${p.exitCode} (see ${path.join(this.opts.dir, name + '.log')})`);
      if (Date.now() > deadline) throw unavailable(`only ${alive.length} of ${n} nodes registered within ${timeoutMs / 1000} s (logs in ${this.opts.dir})`);
      await sleep(200);
    }
  }

  /** Sends `signal` to process `name` and, for SIGKILL/SIGTERM, waits for it to exit (a supervised one is then restarted). */
  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.procs.get(name);
    if (!p || this.exited.has(name)) return;
    const done = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(signal);
    if (signal === 'SIGKILL' || signal === 'SIGTERM' || signal === 'SIGINT') {
      const t = setTimeout(() => p.kill('SIGKILL'), 8000);
      await done;
      clearTimeout(t);
    }
  }

  /** Stops every process (services first, then agents, then etcd). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.supervisor.stop();
    const order = [...this.procs.keys()].sort((a, b) => rank(a) - rank(b));
    await Promise.all(order.filter((n) => rank(n) === 0).map((n) => this.kill(n, 'SIGTERM')));
    await Promise.all(order.filter((n) => rank(n) === 1).map((n) => this.kill(n, 'SIGTERM')));
    this.etcd?.close();
    await this.localEtcd?.stop();
  }
}

function rank(name: string): number {
  return name.startsWith('scheduler') || name.startsWith('migrator') ? 0 : 1;
}
