/** `drover up`: a local cluster (etcd, agents, a scheduler and a migrator) until Ctrl-C. */
import * as path from 'node:path';
import { parse, str, size, int, required, UsageError } from '../../args';
import { LocalCluster } from '../../../services/local-cluster';
import { ETCD, noExtra, waitSignal } from './common';

/** Most nodes `drover up` starts. */
const MAX_NODES = 64;

/** `drover up --nodes N --dir DIR ...`; returns the exit code. */
export async function upCommand(argv: string[]): Promise<number> {
  const usage = 'drover up --nodes N --dir DIR [--etcd URL] [--mem-capacity 2GiB] [--aggressiveness 1-5]';
  const p = parse(argv, { ...ETCD, nodes: { type: 'string' }, dir: { type: 'string' }, 'mem-capacity': { type: 'string' }, aggressiveness: { type: 'string' } }, 'up');
  noExtra(p, 0, usage);
  const nodes = int(p, 'nodes', 3)!;
  if (nodes < 1 || nodes > MAX_NODES) throw new UsageError(`up: --nodes ${nodes} must be 1..${MAX_NODES}`);
  const dir = path.resolve(required(p, 'dir', 'up'));
  const agg = int(p, 'aggressiveness');
  if (agg !== undefined && (agg < 1 || agg > 5)) throw new UsageError('up: --aggressiveness must be 1..5');
  size(p, 'mem-capacity');
  const cluster = new LocalCluster({
    nodes, dir, etcdUrl: str(p, 'etcd') ?? undefined, agentMem: str(p, 'mem-capacity'),
    config: agg !== undefined ? { aggressiveness: agg } : undefined,
  });
  const stopping = waitSignal();
  try {
    await cluster.start();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  console.log(`drover: cluster up: ${nodes} nodes, etcd ${cluster.etcdUrl}${str(p, 'etcd') ? '' : ' (local)'}, logs in ${dir}`);
  console.log(`  export $(cat ${path.join(dir, 'drover.env')})   # then: drover node list, drover vm create ...`);
  console.log('  Ctrl-C stops everything');
  await stopping;
  console.log('drover: stopping the cluster');
  await cluster.stop();
  return 0;
}
