/** The drain check the operations module asks of the scheduler: could every VM of a node go elsewhere? */
import type { ClusterSnapshot } from '../../cluster/etcd';
import { planModel } from './model';
import { planEvacuation } from './planner';

/** VMs of `node` that no other node could take now, with why (empty: the drain can start). */
export function evacuationBlockers(snap: ClusterSnapshot, node: string): { vm: string; reason: string }[] {
  const model = planModel(snap);
  const vms = model.vms.filter((v) => v.node === node).map((v) => ({ ...v, movable: true }));
  return planEvacuation(model.nodes, vms, node).unplaced;
}
