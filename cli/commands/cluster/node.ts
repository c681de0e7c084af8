/** `drover node list|cordon|uncordon|drain [--wait]`. */
import type { Etcd3 } from 'etcd3';
import { parse, flag, int, UsageError, type Parsed } from '../../args';
import { readSnapshot } from '../../../cluster/etcd';
import { cordonNode, drainNode, uncordonNode, waitDrained } from '../../../cluster/ops';
import { evacuationBlockers } from '../../../services/scheduler/evacuation';
import { ETCD, jobLine, MiB, nodesJson, noExtra, table, withEtcd } from './common';

/** Default limit of `node drain --wait`, s. */
const DEFAULT_DRAIN_TIMEOUT_S = 600;
const MARK_COMMANDS = ['cordon', 'uncordon', 'drain'];

/** `drover node SUB ...`; returns the exit code. */
export async function nodeCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, { ...ETCD, json: { type: 'boolean' }, wait: { type: 'boolean' }, timeout: { type: 'string' } }, `node ${sub ?? ''}`.trim());
  return withEtcd(p, `node ${sub ?? ''}`, async (etcd) => {
    if (sub === 'list') return list(etcd, p);
    if (!MARK_COMMANDS.includes(sub ?? '')) throw new UsageError(`node: unknown subcommand "${sub ?? ''}" (list, cordon, uncordon, drain)`);
    const id = p.positionals[0];
    if (!id) throw new UsageError(`node ${sub}: which node? (drover node ${sub} NODE)`);
    noExtra(p, 1, `drover node ${sub} NODE`);
    if (sub === 'uncordon') {
      const r = await uncordonNode(etcd, id);
      console.log(r.kind === 'uncordoned' ? `node ${id} uncordoned (was ${r.was})` : `node ${id} is not cordoned`);
      return 0;
    }
    if (sub === 'cordon') {
      const r = await cordonNode(etcd, id);
      console.log(r.kind === 'cordoned' ? `node ${id} cordoned: no new VMs or migrations to it` : `node ${id} is already ${r.state}`);
      return 0;
    }
    return drain(etcd, p, id);
  });
}

async function list(etcd: Etcd3, p: Parsed): Promise<number> {
  noExtra(p, 0, 'drover node list [--json]');
  const nodes = nodesJson(await readSnapshot(etcd));
  if (flag(p, 'json')) { console.log(JSON.stringify(nodes)); return 0; }
  console.log(table(['NODE', 'STATE', 'ADDRESS', 'MEM USED', 'LOAD', 'VMS', 'NOTE'],
    nodes.map((n) => [n.id, n.state, n.address, `${(n.memUsedBytes / MiB).toFixed(0)}/${(n.memTotalBytes / MiB).toFixed(0)} MiB`, `${(n.load * 100).toFixed(0)}%`, n.vms.join(',') || '-', n.note || ''])));
  return 0;
}

async function drain(etcd: Etcd3, p: Parsed, id: string): Promise<number> {
  const r = await drainNode(etcd, id, evacuationBlockers);
  console.log(r.kind === 'draining' ? `node ${id} draining: ${r.vms} VM(s) to move` : `node ${id} is already ${r.state}`);
  if (!flag(p, 'wait')) return 0;
  await waitDrained(etcd, id, int(p, 'timeout', DEFAULT_DRAIN_TIMEOUT_S)! * 1000, (j) => console.log(`  ${jobLine(j)}`));
  console.log(`node ${id} drained`);
  return 0;
}
