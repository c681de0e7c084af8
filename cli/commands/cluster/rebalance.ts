/** `drover rebalance [--dry-run] [--aggressiveness 1-5] [--json]`: plan now and queue the moves. */
import { parse, flag, int, UsageError } from '../../args';
import { readSnapshot } from '../../../cluster/etcd';
import { requestMigration } from '../../../cluster/ops';
import { planModel } from '../../../services/scheduler/model';
import { planRebalance, type RebalancePlan } from '../../../services/scheduler/planner';
import { readLinks } from '../../../services/scheduler/move-cost';
import { ETCD, MiB, noExtra, table, withEtcd } from './common';

/** Plans a rebalance of the cluster as it is; queues its moves unless --dry-run. */
export async function rebalanceCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { ...ETCD, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' }, aggressiveness: { type: 'string' } }, 'rebalance');
  noExtra(p, 0, 'drover rebalance [--dry-run] [--aggressiveness 1-5] [--json]');
  const agg = int(p, 'aggressiveness');
  if (agg !== undefined && (agg < 1 || agg > 5)) throw new UsageError('rebalance: --aggressiveness must be 1..5');
  return withEtcd(p, 'rebalance', async (etcd) => {
    const snap = await readSnapshot(etcd);
    const model = planModel(snap, Date.now(), await readLinks(etcd));
    const plan = planRebalance(model.nodes, model.vms, { aggressiveness: agg ?? snap.config.aggressiveness, weights: snap.config.loadWeights });
    if (flag(p, 'json')) console.log(JSON.stringify(plan));
    else printPlan(plan);
    if (flag(p, 'dry-run') || plan.moves.length === 0) return 0;
    for (const m of plan.moves) {
      const job = await requestMigration(etcd, { vm: m.vm, to: m.to, reason: 'rebalance', predictedBytes: m.predictedBytes });
      if (!flag(p, 'json')) console.log(`queued ${job.id}: ${m.vm} ${m.from} -> ${m.to}`);
    }
    return 0;
  });
}

/** Prints a plan: the imbalance before and after, one row per move with the model's predicted cost and why it was picked. */
export function printPlan(plan: RebalancePlan): void {
  console.log(`imbalance ${plan.imbalanceBefore.toFixed(3)} (threshold ${plan.threshold}, aggressiveness ${plan.aggressiveness}) -> ${plan.imbalanceAfter.toFixed(3)} after ${plan.moves.length} move(s) [${plan.stop}]`);
  if (plan.moves.length) {
    console.log(table(['VM', 'FROM', 'TO', 'MEM', 'PREDICTED BYTES', 'PREDICTED TIME', 'PREDICTED DOWNTIME', 'IMBALANCE AFTER', 'WHY'],
      plan.moves.map((m) => [m.vm, m.from, m.to, `${(m.memBytes / MiB).toFixed(0)} MiB`, `${(m.predictedBytes / MiB).toFixed(0)} MiB`, `${m.predictedMs.toFixed(0)} ms`,
        `${m.predictedDowntimeMs.toFixed(1)} ms`, m.imbalanceAfter.toFixed(3), m.why])));
    console.log(`predicted cost: ${(plan.predictedBytes / MiB).toFixed(0)} MiB on the wire, ${plan.predictedMs.toFixed(0)} ms of migration`);
  }
  if (plan.skippedNotConverging.length) console.log(`not moved (the model predicts pre-copy would not converge): ${plan.skippedNotConverging.join(', ')}`);
}
