/** `drover up`: a local cluster (etcd, agents, 2 schedulers and 2 migrators, supervised) until Ctrl-C. */
import * as path from 'node:path';
import { parse, flag, str, size, int, required, UsageError, type Parsed } from '../../args';
import { insecureWarning } from '../../tls-flags';
import { LocalCluster } from '../../../services/local-cluster';
import { ETCD, noExtra, waitSignal } from './common';

/** Most nodes `drover up` starts. */
const MAX_NODES = 64;
/** Scheduler replicas by default: two, so a dead leader is replaced at once (etcd elects the other). */
const DEFAULT_SCHEDULERS = 2;
/** Migrator replicas by default: two, so a dead one's jobs are taken over by the other. */
const DEFAULT_MIGRATORS = 2;
/** Most replicas of one service `drover up` starts. */
const MAX_REPLICAS = 8;

function replicas(p: Parsed, name: 'schedulers' | 'migrators', dflt: number): number {
  const n = int(p, name, dflt)!;
  if (n < 1 || n > MAX_REPLICAS) throw new UsageError(`up: --${name} ${n} must be 1..${MAX_REPLICAS}`);
  return n;
}

/** `drover up --nodes N --dir DIR ...`; returns the exit code. */
export async function upCommand(argv: string[]): Promise<number> {
  const usage = 'drover up --nodes N --dir DIR [--etcd URL] [--mem-capacity 2GiB] [--aggressiveness 1-5] [--schedulers 2] [--migrators 2] [--insecure]';
  const p = parse(argv, {
    ...ETCD, nodes: { type: 'string' }, dir: { type: 'string' }, 'mem-capacity': { type: 'string' }, aggressiveness: { type: 'string' },
    schedulers: { type: 'string' }, migrators: { type: 'string' }, insecure: { type: 'boolean' },
  }, 'up');
  noExtra(p, 0, usage);
  const nodes = int(p, 'nodes', 3)!;
  if (nodes < 1 || nodes > MAX_NODES) throw new UsageError(`up: --nodes ${nodes} must be 1..${MAX_NODES}`);
  const dir = path.resolve(required(p, 'dir', 'up'));
  const agg = int(p, 'aggressiveness');
  if (agg !== undefined && (agg < 1 || agg > 5)) throw new UsageError('up: --aggressiveness must be 1..5');
  size(p, 'mem-capacity');
  const schedulers = replicas(p, 'schedulers', DEFAULT_SCHEDULERS);
  const migrators = replicas(p, 'migrators', DEFAULT_MIGRATORS);
  const insecure = flag(p, 'insecure');
  if (insecure) console.error(insecureWarning('up: the cluster'));
  const cluster = new LocalCluster({
    nodes, dir, etcdUrl: str(p, 'etcd') ?? undefined, agentMem: str(p, 'mem-capacity'), schedulers, migrators, insecure,
    config: agg !== undefined ? { aggressiveness: agg } : undefined,
    log: (line) => console.log(`drover: ${line}`),
  });
  const stopping = waitSignal();
  try {
    await cluster.start();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  console.log(`drover: cluster up: ${nodes} nodes, ${schedulers} schedulers, ${migrators} migrators (restarted if they die), etcd ${cluster.etcdUrl}${str(p, 'etcd') ? '' : ' (local)'}, logs in ${dir}`);
  console.log(cluster.pki ? `  mutual TLS everywhere, etcd RBAC; CA and identities in ${cluster.pki.dir} (drover pki issue --dir ${cluster.pki.dir} ... adds one)` : '  PLAIN TEXT (--insecure): no authentication');
  console.log(`  export $(cat ${path.join(dir, 'drover.env')})   # then: drover node list, drover vm create ...`);
  console.log('  Ctrl-C stops everything');
  await stopping;
  console.log('drover: stopping the cluster');
  await cluster.stop();
  return 0;
}
