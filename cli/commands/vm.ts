/** `drover vm create|list|show|destroy|verify|resume --agent ADDR`: VMs on one agent. */
import { parse, required, str, size, rate, int, flag, address, UsageError } from '../args';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { checkProfile, validateSpec } from '../../hypervisor/spec';
import type { VmSpec } from '../../hypervisor/types';
import { formatBytes, formatRate } from '../../lib/units';
import type { VmInfo } from '../../services/node-agent/client/agent-codec';
import { TLS_OPTIONS, TLS_USAGE, agentChannelCredentials, tlsFromFlags } from '../tls-flags';

/** Usage of `drover vm` against one agent. */
export const VM_USAGE = `drover vm create NAME --agent ADDR --mem 1GiB --profile idle|web|db|mmuncher [--vcpus N] [--wss SIZE] [--dirty-rate RATE] [--fill SIZE] [--disk nbd://H:P/E] [--json] ${TLS_USAGE}\n       drover vm list|show NAME|destroy NAME|verify NAME --agent ADDR [--json] ${TLS_USAGE}\n       drover vm resume NAME --agent ADDR [--force] [--json] ${TLS_USAGE}   (a VM held paused after a migration whose outcome was unknown)`;

/** Spec flags shared by `vm create` and `bench`. */
export const SPEC_OPTIONS = {
  mem: { type: 'string' }, profile: { type: 'string' }, vcpus: { type: 'string' }, wss: { type: 'string' },
  'dirty-rate': { type: 'string' }, fill: { type: 'string' }, disk: { type: 'string' }, seed: { type: 'string' },
} as const;

/** Builds a VmSpec from parsed flags (strictly: unknown profile and bad sizes are usage errors). */
export function specFromFlags(name: string, p: ReturnType<typeof parse>, defaults: { mem?: number; profile?: string } = {}): VmSpec {
  const profileName = str(p, 'profile', defaults.profile);
  if (!profileName) throw new UsageError('--profile is required (idle, web, db or mmuncher)');
  let profile;
  try { profile = checkProfile(profileName); } catch (e) { throw new UsageError((e as Error).message); }
  const memBytes = size(p, 'mem', defaults.mem);
  if (memBytes === undefined) throw new UsageError('--mem is required (e.g. 1GiB)');
  const spec: VmSpec = { name, memBytes, vcpus: int(p, 'vcpus', 1)!, profile };
  const wss = size(p, 'wss');
  if (wss !== undefined) spec.wssBytes = wss;
  const dr = rate(p, 'dirty-rate');
  if (dr !== undefined) spec.dirtyRateBytesPerSec = dr;
  const fill = size(p, 'fill');
  if (fill !== undefined) spec.fillBytes = fill;
  const disk = str(p, 'disk');
  if (disk) spec.disk = disk;
  const seed = int(p, 'seed');
  if (seed !== undefined) spec.seed = seed;
  try { return validateSpec(spec); } catch (e) { throw new UsageError((e as Error).message); }
}

function row(v: VmInfo): string {
  const held = v.held ? `  HELD: ${v.held}` : '';
  return `${v.spec.name.padEnd(20)} ${v.state.padEnd(10)} ${v.spec.profile.padEnd(9)} ${formatBytes(v.spec.memBytes).padStart(9)}  dirty ${formatRate(v.dirtyRateBytesPerSec).padStart(11)}  node ${v.nodeId}${held}`;
}

function toJson(v: VmInfo): object {
  return { name: v.spec.name, node: v.nodeId, state: v.state, memBytes: v.spec.memBytes, profile: v.spec.profile, vcpus: v.spec.vcpus, dirtyRateBytesPerSec: v.dirtyRateBytesPerSec, touchedBytes: v.touchedBytes, ...(v.held ? { held: v.held } : {}) };
}

/** Runs `drover vm ... --agent ADDR`. */
export async function vmCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const p = parse(rest, { agent: { type: 'string' }, json: { type: 'boolean' }, force: { type: 'boolean' }, ...SPEC_OPTIONS, ...TLS_OPTIONS }, `vm ${sub ?? ''}`.trim());
  const addr = address(required(p, 'agent', `vm ${sub}`), '--agent');
  const agent = new AgentClient(addr, agentChannelCredentials(tlsFromFlags(p, `vm ${sub ?? ''}`.trim())));
  const json = flag(p, 'json');
  const name = () => {
    if (p.positionals.length !== 1) throw new UsageError(`vm ${sub}: expected one VM name`);
    return p.positionals[0];
  };
  try {
    switch (sub) {
      case 'create': {
        const spec = specFromFlags(name(), p);
        await agent.waitReady();
        const v = await agent.createVm(spec);
        console.log(json ? JSON.stringify(toJson(v)) : `created ${row(v)}`);
        return 0;
      }
      case 'list': {
        await agent.waitReady();
        const vms = await agent.listVms();
        if (json) console.log(JSON.stringify(vms.map(toJson)));
        else for (const v of vms) console.log(row(v));
        return 0;
      }
      case 'show': {
        const n = name();
        await agent.waitReady();
        const v = await agent.getVm(n);
        console.log(json ? JSON.stringify(toJson(v)) : row(v));
        return 0;
      }
      case 'destroy': {
        const n = name();
        await agent.waitReady();
        await agent.destroyVm(n);
        if (!json) console.log(`destroyed ${n}`);
        return 0;
      }
      case 'verify': {
        const n = name();
        await agent.waitReady();
        const r = await agent.verifyVm(n);
        const disk = r.diskChecked ? `, disk ${r.diskOk ? 'ok' : 'FAILED'} (WAL acked seq ${r.diskAckedSeq}; ${r.diskDetail})` : '';
        console.log(json ? JSON.stringify(r) : `${n}: guest check ${r.ok ? 'passed' : 'FAILED'} (${r.pagesChecked} pages${r.badPages ? `, ${r.badPages} bad: ${r.detail}` : ''})${disk}, heartbeat ${r.heartbeatBeats} beats`);
        return r.ok && (!r.diskChecked || r.diskOk) ? 0 : 1;
      }
      case 'resume': {
        const n = name();
        await agent.waitReady();
        const v = await agent.resumeVm(n, flag(p, 'force'));
        console.log(json ? JSON.stringify(toJson(v)) : `resumed ${row(v)}`);
        return 0;
      }
      default:
        throw new UsageError(`vm: unknown subcommand "${sub ?? ''}" (usage: ${VM_USAGE})`);
    }
  } finally {
    agent.close();
  }
}
