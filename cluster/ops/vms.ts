/**
 * VM operations of the cluster: create (checked, then one CAS of a pending record the scheduler
 * places), wait for placement, list, show, destroy (fenced: mark, destroy on the owner, delete).
 * Nothing is written when a request cannot be met.
 */
import type { Etcd3 } from 'etcd3';
import { DroverError, failedPrecondition, notFound } from '../../lib/errors';
import type { VmSpec } from '../../hypervisor/types';
import { capacityShortfall, formatMiB } from '../capacity';
import { casJson, getAllJsonByKey, getJson, readSnapshot, updateJson } from '../etcd';
import { keys, type OwnershipClaim, type VmRecord } from '../keyspace';
import { sleep } from '../log';
import { nodeUsage, type NodeUsage } from '../usage';

/** Poll period while waiting for the scheduler to place a VM, ms. */
const PLACEMENT_POLL_MS = 200;

/** What the destroy operation needs of a node agent (the agent's client fits). */
export interface VmHost {
  destroyVm(name: string): Promise<void>;
  close(): void;
}

/** Connects to the agent at `address`. */
export type VmHostConnector = (address: string) => VmHost;

/** `vm list` rows (`--json` prints them as they are). */
export interface VmRow {
  name: string;
  node: string;
  state: string;
  memBytes: number;
  vcpus: number;
  profile: string;
  job: string;
  dirtyRateBytesPerSec: number;
  cpu: number;
  error: string;
}

/** Why no node can take `spec` (automatic placement), as a RESOURCE_EXHAUSTED / FAILED_PRECONDITION error, or undefined. */
function placementRefusal(usage: NodeUsage[], spec: VmSpec): DroverError | undefined {
  const ready = usage.filter((u) => u.schedulable);
  const fits = ready.some((u) => !capacityShortfall('', u.capacity, u.used, spec));
  if (fits) return undefined;
  if (ready.length === 0) return failedPrecondition('no schedulable node (is the cluster up? drover node list)');
  const most = Math.max(...ready.map((u) => u.capacity.memBytes - u.used.memBytes));
  if (most >= spec.memBytes) return new DroverError('RESOURCE_EXHAUSTED', `VM "${spec.name}" needs ${spec.vcpus} vCPU(s) and ${formatMiB(spec.memBytes)}; no node has both free`);
  return new DroverError('RESOURCE_EXHAUSTED', `VM "${spec.name}" needs ${formatMiB(spec.memBytes)}; the most free memory on any node is ${formatMiB(most)}`);
}

/** Checks and writes a new pending VM record, pinned to `node` when given (nothing is written when the request cannot be met). */
export async function createVmRecord(etcd: Etcd3, spec: VmSpec, node: string): Promise<VmRecord> {
  const snap = await readSnapshot(etcd);
  if (snap.vms.has(spec.name)) throw new DroverError('ALREADY_EXISTS', `a VM named "${spec.name}" already exists (on ${snap.vms.get(spec.name)!.value.node || 'no node yet'})`);
  const usage = nodeUsage(snap);
  if (node) {
    const n = snap.nodes.get(node);
    if (!n) throw notFound(`no node named "${node}" (nodes: ${[...snap.nodes.keys()].join(', ') || 'none'})`);
    if (n.state !== 'ready') throw failedPrecondition(`node ${node} is ${n.state}: it takes no new VMs`);
    const u = usage.get(node)!;
    const short = capacityShortfall(node, u.capacity, u.used, spec);
    if (short) throw new DroverError('RESOURCE_EXHAUSTED', short);
  } else {
    const refusal = placementRefusal([...usage.values()], spec);
    if (refusal) throw refusal;
  }
  const rec: VmRecord = { name: spec.name, spec, node: '', desiredNode: node, state: 'pending', lastMovedAt: 0, lastFrom: '', error: '', job: '', createdAt: Date.now() };
  if (!(await casJson(etcd, keys.vm(spec.name), '0', rec))) throw new DroverError('ALREADY_EXISTS', `a VM named "${spec.name}" already exists`);
  return rec;
}

/** Waits until the scheduler placed and started the VM; removes the record if it could not. */
export async function waitPlaced(etcd: Etcd3, name: string, timeoutMs: number): Promise<VmRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await getJson<VmRecord>(etcd, keys.vm(name));
    if (!v) throw notFound(`VM "${name}" was removed while it was being created`);
    if (v.value.state === 'running') return v.value;
    if (v.value.state === 'failed') {
      await etcd.if(keys.vm(name), 'Mod', '==', v.modRevision).then(etcd.delete().key(keys.vm(name))).commit();
      throw new DroverError(/bytes|memory|free/.test(v.value.error) ? 'RESOURCE_EXHAUSTED' : 'FAILED_PRECONDITION', `VM "${name}" was not created: ${v.value.error}`);
    }
    if (Date.now() > deadline) throw new DroverError('DEADLINE_EXCEEDED', `VM "${name}" is still ${v.value.state} after ${timeoutMs / 1000} s (is a scheduler running?)`);
    await sleep(PLACEMENT_POLL_MS);
  }
}

/** The record of one VM; NOT_FOUND when there is none. */
export async function getVm(etcd: Etcd3, name: string): Promise<VmRecord> {
  const v = await getJson<VmRecord>(etcd, keys.vm(name));
  if (!v) throw notFound(`no VM named "${name}"`);
  return withOwnership(v.value, v.modRevision, await getAllJsonByKey<OwnershipClaim>(etcd, keys.allOwnerships()));
}

/**
 * Where a VM runs, honouring protocol 2's switchover record: while the record says `migrating`,
 * a target's `owned/<node>/<vm>` fenced on this very revision means the VM runs on that node
 * (its migrator has not folded the record yet, or died before it). `owned` is keyed by the full
 * key (`.../owned/<node>/<vm>`): the node is in the key only.
 */
export function withOwnership(vm: VmRecord, modRevision: string, owned: Map<string, { value: OwnershipClaim }>): VmRecord {
  if (vm.state !== 'migrating') return vm;
  for (const [key, c] of owned) {
    const [node, name] = key.slice(keys.allOwnerships().length).split('/');
    if (key.startsWith(keys.allOwnerships()) && name === vm.name && node && !c.value.fenced && c.value.vmRevision === modRevision) return { ...vm, node };
  }
  return vm;
}

/** Every VM with its measured dirty rate and CPU (from its node's heartbeat), sorted by name. */
export async function listVms(etcd: Etcd3): Promise<VmRow[]> {
  const snap = await readSnapshot(etcd);
  const vms = [...snap.vms.values()].map((v) => withOwnership(v.value, v.modRevision, snap.ownerships)).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  const hb = new Map<string, { dirty: number; cpu: number }>();
  for (const n of snap.nodes.values()) for (const v of n.heartbeat?.vms ?? []) if (v.name) hb.set(`${n.id}/${v.name}`, { dirty: v.dirtyRateBytesPerSec, cpu: v.cpu });
  return vms.map((v) => ({
    name: v.name, node: v.node, state: v.state, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus, profile: v.spec.profile,
    job: v.job, dirtyRateBytesPerSec: hb.get(`${v.node}/${v.name}`)?.dirty ?? 0, cpu: hb.get(`${v.node}/${v.name}`)?.cpu ?? 0, error: v.error,
  }));
}

/** Destroys a VM: fence the record (nobody schedules it), destroy it on its node, delete the record. */
export async function destroyVm(etcd: Etcd3, name: string, connect: VmHostConnector): Promise<void> {
  const v = await getJson<VmRecord>(etcd, keys.vm(name));
  if (!v) throw notFound(`no VM named "${name}"`);
  if (v.value.job) throw failedPrecondition(`VM "${name}" is being migrated (job ${v.value.job}); cancel it or wait`);
  // A lost VM (its node heartbeats but does not run it) can be destroyed: the agent answers NOT_FOUND.
  if (v.value.state === 'unknown' && !(await getJson(etcd, keys.alive(v.value.node)))) throw failedPrecondition(`VM "${name}" is on ${v.value.node}, which is not heartbeating; it cannot be destroyed safely now`);
  if (!(await casJson(etcd, keys.vm(name), v.modRevision, { ...v.value, state: 'failed', error: 'being destroyed', job: 'destroy' }))) throw new DroverError('ABORTED', `VM "${name}" changed; try again`);
  if (v.value.node) {
    const n = await getJson<{ address: string }>(etcd, keys.node(v.value.node));
    if (n) {
      const agent = connect(n.value.address);
      try { await agent.destroyVm(name); } catch (e) {
        if ((e as DroverError).code !== 'NOT_FOUND') {
          await updateJson<VmRecord>(etcd, keys.vm(name), () => v.value);
          throw e;
        }
      } finally { agent.close(); }
    }
  }
  await etcd.delete().key(keys.vm(name));
}
