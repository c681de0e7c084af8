/** `drover vm create|list|show|destroy` against the cluster (etcd). */
import { parse, flag, str, size, int, UsageError, type Parsed } from '../../args';
import { PROFILE_NAMES, type ProfileName, type VmSpec } from '../../../hypervisor/types';
import { AgentClient } from '../../../services/node-agent/client/agent-client';
import { createVmRecord, destroyVm, getVm, listVms, waitPlaced } from '../../../cluster/ops';
import { ETCD, MiB, noExtra, table, withEtcd } from './common';
import { readSnapshot } from '../../../cluster/etcd';
import type { JobPrediction } from '../../../cluster/keyspace';
import { readLinks, vmMoveCost } from '../../../services/scheduler/move-cost';

/** Smallest VM, bytes. */
const MIN_VM_MEM = 16 * MiB;
/** VM memory granularity (a guest page), bytes. */
const VM_MEM_ALIGN = 4096;
/** Default wait for the scheduler to place a new VM, s. */
const DEFAULT_CREATE_TIMEOUT_S = 120;
/** A VM name: lower-case letters, digits, '-', up to 63 (a DNS label). */
const VM_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** `drover vm SUB ...`; returns the exit code. */
export async function vmCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, {
    ...ETCD, mem: { type: 'string' }, profile: { type: 'string' }, node: { type: 'string' }, vcpus: { type: 'string' },
    json: { type: 'boolean' }, seed: { type: 'string' }, 'timeout': { type: 'string' },
  }, `vm ${sub ?? ''}`.trim());
  switch (sub) {
    case 'create': return vmCreate(p);
    case 'list': noExtra(p, 0, 'drover vm list [--json]'); return vmList(p);
    case 'show': return withEtcd(p, 'vm show', async (e) => {
      const name = p.positionals[0];
      if (!name) throw new UsageError('vm show: which VM? (drover vm show NAME)');
      console.log(JSON.stringify(await getVm(e, name), null, 2));
      return 0;
    });
    case 'destroy': return withEtcd(p, 'vm destroy', async (e) => {
      const name = p.positionals[0];
      if (!name) throw new UsageError('vm destroy: which VM? (drover vm destroy NAME)');
      await destroyVm(e, name, (a) => new AgentClient(a));
      console.log(`vm ${name} destroyed`);
      return 0;
    });
    default: throw new UsageError(`vm: unknown subcommand "${sub ?? ''}" (create, list, show, destroy)`);
  }
}

/** The VM spec from `vm create`'s arguments (usage errors name the flag). */
function vmSpecOf(p: Parsed): VmSpec {
  const usage = 'drover vm create NAME --mem 256MiB --profile idle|web|db|mmuncher [--node NODE] [--vcpus N]';
  const name = p.positionals[0];
  if (!name) throw new UsageError(`vm create: a VM name is required (usage: ${usage})`);
  noExtra(p, 1, usage);
  if (!VM_NAME.test(name)) throw new UsageError(`vm create: name "${name}" is invalid (lower-case letters, digits, '-', up to 63)`);
  const mem = size(p, 'mem');
  if (mem === undefined) throw new UsageError(`vm create: --mem is required (usage: ${usage})`);
  if (mem < MIN_VM_MEM || mem % VM_MEM_ALIGN !== 0) throw new UsageError(`vm create: --mem ${str(p, 'mem')} must be at least 16MiB and a multiple of 4KiB`);
  const profile = (str(p, 'profile') ?? 'idle') as ProfileName;
  if (!PROFILE_NAMES.includes(profile)) throw new UsageError(`vm create: --profile "${profile}" is not one of ${PROFILE_NAMES.join(', ')}`);
  const vcpus = int(p, 'vcpus', 1)!;
  const spec: VmSpec = { name, memBytes: mem, vcpus, profile };
  const seed = int(p, 'seed');
  if (seed !== undefined) spec.seed = seed;
  return spec;
}

async function vmCreate(p: Parsed): Promise<number> {
  const spec = vmSpecOf(p);
  const timeoutMs = (int(p, 'timeout', DEFAULT_CREATE_TIMEOUT_S)!) * 1000;
  return withEtcd(p, 'vm create', async (etcd) => {
    const rec = await createVmRecord(etcd, spec, str(p, 'node') ?? '');
    const v = await waitPlaced(etcd, rec.name, timeoutMs);
    console.log(`vm ${spec.name} running on ${v.node} (${(spec.memBytes / MiB).toFixed(0)} MiB, ${spec.profile})`);
    return 0;
  });
}

/**
 * The cost model's prediction of moving each placed VM off its node (services/scheduler/move-cost.ts:
 * its heartbeat's dirtying, the node's measured outbound link), by VM name.
 */
async function movePredictions(etcd: Parameters<typeof listVms>[0]): Promise<Map<string, JobPrediction>> {
  const [snap, links] = await Promise.all([readSnapshot(etcd), readLinks(etcd)]);
  const out = new Map<string, JobPrediction>();
  for (const n of snap.nodes.values()) {
    for (const hb of n.heartbeat?.vms ?? []) {
      const rec = snap.vms.get(hb.name)?.value;
      if (rec && rec.node === n.id) out.set(hb.name, vmMoveCost(rec.spec, n.id, hb, links).prediction);
    }
  }
  return out;
}

async function vmList(p: Parsed): Promise<number> {
  return withEtcd(p, 'vm list', async (etcd) => {
    const rows = await listVms(etcd);
    const pred = await movePredictions(etcd);
    const withPred = rows.map((r) => (pred.has(r.name) ? { ...r, predictedMove: pred.get(r.name) } : r));
    if (flag(p, 'json')) { console.log(JSON.stringify(withPred)); return 0; }
    // NOTE: why a VM is not running (e.g. `lost: node node-3 is alive but has not reported this VM since ...`)
    // MOVE: the model's predicted time, bytes and verdict for moving the VM off its node (see `drover analyze`).
    console.log(table(['NAME', 'NODE', 'STATE', 'MEM', 'PROFILE', 'DIRTY', 'MOVE TIME', 'MOVE BYTES', 'CONVERGES', 'JOB', 'NOTE'],
      rows.map((r) => {
        const m = pred.get(r.name);
        return [r.name, r.node || '-', r.state, `${(r.memBytes / MiB).toFixed(0)} MiB`, r.profile, `${(r.dirtyRateBytesPerSec / MiB).toFixed(1)} MiB/s`,
          m ? `${m.totalMs.toFixed(0)} ms` : '-', m ? `${(m.bytes / MiB).toFixed(0)} MiB` : '-', m ? (m.converges ? 'yes' : `no (${m.policy})`) : '-',
          r.job || '-', r.state === 'running' ? '-' : r.error || '-'];
      })));
    return 0;
  });
}
