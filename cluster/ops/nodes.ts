/**
 * Node maintenance operations: cordon (no new VMs or migrations to it), uncordon, drain (cordon,
 * then the scheduler moves every VM off), and waiting for a drain to finish. Each change of a
 * node's mark is one transaction fenced on the mark as read.
 */
import type { Etcd3 } from 'etcd3';
import { DroverError, failedPrecondition, notFound } from '../../lib/errors';
import { getJson, readSnapshot, type ClusterSnapshot, type Versioned } from '../etcd';
import { keys, type JobRecord, type NodeMark } from '../keyspace';
import { sleep } from '../log';
import { nodeUsage } from '../usage';

/** Poll period while waiting for a drain, ms. */
const DRAIN_POLL_MS = 300;

/** Why the VMs of a node could not all be placed elsewhere (the scheduler's evacuation planner answers). */
export type EvacuationCheck = (snap: ClusterSnapshot, node: string) => { vm: string; reason: string }[];

/** Result of a cordon. */
export type CordonResult = { kind: 'cordoned' } | { kind: 'already'; state: NodeMark['state'] };
/** Result of an uncordon. */
export type UncordonResult = { kind: 'uncordoned'; was: NodeMark['state'] } | { kind: 'not-cordoned' };
/** Result of starting a drain. */
export type DrainResult = { kind: 'draining'; vms: number } | { kind: 'already'; state: NodeMark['state'] };

/** A node's mark as read, with the one fenced write that replaces it. */
interface MarkSlot {
  snap: ClusterSnapshot;
  mark?: Versioned<NodeMark>;
  put(m: NodeMark | undefined): Promise<void>;
}

/** Reads node `id` (NOT_FOUND naming the nodes there are) and its mark. */
async function markSlot(etcd: Etcd3, id: string): Promise<MarkSlot> {
  const snap = await readSnapshot(etcd);
  if (!snap.nodes.get(id)) throw notFound(`no node named "${id}" (nodes: ${[...snap.nodes.keys()].join(', ') || 'none'})`);
  const mark = await getJson<NodeMark>(etcd, keys.mark(id));
  const put = async (m: NodeMark | undefined) => {
    const cmp = mark ? etcd.if(keys.mark(id), 'Mod', '==', mark.modRevision) : etcd.if(keys.mark(id), 'Create', '==', 0);
    const r = await cmp.then(m ? etcd.put(keys.mark(id)).value(JSON.stringify(m)) : etcd.delete().key(keys.mark(id))).commit();
    if (!r.succeeded) throw new DroverError('ABORTED', `node ${id} changed meanwhile; try again`);
  };
  return { snap, mark, put };
}

/** Cordons node `id`: no new VMs or migrations to it. */
export async function cordonNode(etcd: Etcd3, id: string): Promise<CordonResult> {
  const { mark, put } = await markSlot(etcd, id);
  if (mark) return { kind: 'already', state: mark.value.state };
  await put({ state: 'cordoned', since: Date.now() });
  return { kind: 'cordoned' };
}

/** Removes node `id`'s mark (cordoned, draining or drained). */
export async function uncordonNode(etcd: Etcd3, id: string): Promise<UncordonResult> {
  const { mark, put } = await markSlot(etcd, id);
  if (!mark) return { kind: 'not-cordoned' };
  await put(undefined);
  return { kind: 'uncordoned', was: mark.value.state };
}

/** Starts draining node `id`, refused (and nothing written) when its VMs could not all go elsewhere. */
export async function drainNode(etcd: Etcd3, id: string, evacuation: EvacuationCheck): Promise<DrainResult> {
  const { snap, mark, put } = await markSlot(etcd, id);
  if (mark?.value.state === 'draining' || mark?.value.state === 'drained') return { kind: 'already', state: mark.value.state };
  const others = [...nodeUsage(snap)].filter(([n, u]) => n !== id && u.schedulable);
  if (others.length === 0) throw failedPrecondition(`cannot drain ${id}: it is the last schedulable node (no other node could take its VMs)`);
  const unplaced = evacuation(snap, id);
  if (unplaced.length) throw new DroverError('RESOURCE_EXHAUSTED', `cannot drain ${id}: ${unplaced.map((u) => `${u.vm}: ${u.reason}`).join('; ')}`);
  const vms = [...snap.vms.values()].filter((v) => v.value.node === id).length;
  await put({ state: 'draining', since: Date.now() });
  return { kind: 'draining', vms };
}

/** Waits until node `id` is drained, calling `onJob` for each job off it as its phase changes. */
export async function waitDrained(etcd: Etcd3, id: string, timeoutMs: number, onJob: (j: JobRecord) => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const printed = new Set<string>();
  for (;;) {
    const s = await readSnapshot(etcd);
    for (const { value: j } of s.jobs.values()) if (j.from === id && !printed.has(j.id + j.phase)) { printed.add(j.id + j.phase); onJob(j); }
    const m = s.nodes.get(id)?.mark;
    if (!m) throw failedPrecondition(`node ${id} was uncordoned during the drain`);
    if (m.state === 'drained') return;
    if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `node ${id} still draining${m.note ? ` (${m.note})` : ''}`);
    await sleep(DRAIN_POLL_MS);
  }
}
