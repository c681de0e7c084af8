/**
 * etcd role-based access control for a Drover cluster (etcd 3.4, client-certificate auth).
 *
 * With `--client-cert-auth` and auth enabled, etcd takes the user name from the client
 * certificate's Subject CN. Drover's identities (lib/pki) carry `<role>-<name>`-style CNs; this
 * module maps them to etcd users and roles so that each process can write only what it owns:
 *
 * | etcd role | granted to | permissions (under the keyspace prefix) |
 * |---|---|---|
 * | `root` | the admin identity | everything, including auth management (etcd's built-in root) |
 * | `drover-controller` | migrators, schedulers | read and write every Drover key |
 * | `drover-monitor` | monitors | read every Drover key |
 * | `drover-node-<id>` | the agent of node `<id>` | read and write `nodes/<id>`, `alive/<id>` and the prefix `owned/<id>/` (its switchover records); read `config`, every `vms/` record, and every node's `alive/` and `owned/` (a paused source resolves a switchover from them) |
 *
 * etcd 3.4 enables auth only when a user named `root` holds the `root` role: one is created
 * without a password (nobody can log in as it; certificate users are matched by CN).
 *
 * Nothing else is granted: an agent cannot rewrite another node's record, a VM's owner or a job.
 * Safe to repeat: existing users, roles and grants are left as they are.
 */
import type { Etcd3 } from 'etcd3';
import { keys, PREFIX } from './keyspace';

/** Who may use the cluster's etcd, by certificate CN. */
export interface EtcdIdentities {
  /** CN of the admin identity (becomes etcd's root user). */
  admin: string;
  /** CNs of controllers (migrators, schedulers). */
  controllers: string[];
  /** CNs of monitors (read-only). */
  monitors: string[];
  /** Node agents: the CN of each and the node id it may write. */
  nodes: { cn: string; nodeId: string }[];
}

/** etcd's own role that may manage auth. */
const ROOT_ROLE = 'root';
/** Role of migrators and schedulers. */
export const CONTROLLER_ROLE = 'drover-controller';
/** Role of read-only monitors. */
export const MONITOR_ROLE = 'drover-monitor';

/** The etcd role of one node agent. */
export function nodeRole(nodeId: string): string {
  return `drover-node-${nodeId}`;
}

/** The end of a prefix range: the prefix with its last byte incremented (etcd's range_end). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  b[b.length - 1]++;
  return b;
}

type PermType = 'Read' | 'Write' | 'Readwrite';

/** Ignores etcd's "already exists" answers so every step is safe to repeat. */
async function idempotent(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!/already exists|already granted/i.test((err as Error).message)) throw err;
  }
}

async function grant(etcd: Etcd3, role: string, permType: PermType, key: string, rangeEnd?: Buffer): Promise<void> {
  await etcd.auth.roleGrantPermission({ name: role, perm: { permType, key: Buffer.from(key), range_end: rangeEnd ?? Buffer.alloc(0) } });
}

async function addUser(etcd: Etcd3, name: string, role: string): Promise<void> {
  // Certificate users have no password: etcd takes the user from the verified client certificate.
  await idempotent(etcd.auth.userAdd({ name, password: '', options: { no_password: true } }));
  await idempotent(etcd.auth.userGrantRole({ user: name, role }));
}

/**
 * Creates the roles and users of `ids` and enables auth. `etcd` must be connected with the
 * admin identity (or to an etcd with auth still off).
 */
export async function enableRbac(etcd: Etcd3, ids: EtcdIdentities): Promise<void> {
  const prefix = PREFIX;
  await idempotent(etcd.auth.roleAdd({ name: ROOT_ROLE }));
  await addUser(etcd, 'root', ROOT_ROLE);
  await addUser(etcd, ids.admin, ROOT_ROLE);
  await idempotent(etcd.auth.roleAdd({ name: CONTROLLER_ROLE }));
  await grant(etcd, CONTROLLER_ROLE, 'Readwrite', prefix, prefixEnd(prefix));
  await idempotent(etcd.auth.roleAdd({ name: MONITOR_ROLE }));
  await grant(etcd, MONITOR_ROLE, 'Read', prefix, prefixEnd(prefix));
  for (const cn of ids.controllers) await addUser(etcd, cn, CONTROLLER_ROLE);
  for (const cn of ids.monitors) await addUser(etcd, cn, MONITOR_ROLE);
  for (const n of ids.nodes) await addNode(etcd, n.cn, n.nodeId);
  await idempotent(etcd.auth.authEnable());
}

/** Adds (or re-adds) one node agent's user and role: its own keys and switchover records; the config and the VM records to read. */
export async function addNode(etcd: Etcd3, cn: string, nodeId: string): Promise<void> {
  const role = nodeRole(nodeId);
  await idempotent(etcd.auth.roleAdd({ name: role }));
  await grant(etcd, role, 'Readwrite', keys.node(nodeId));
  await grant(etcd, role, 'Readwrite', keys.alive(nodeId));
  await grant(etcd, role, 'Read', keys.config());
  await grant(etcd, role, 'Read', keys.vms(), prefixEnd(keys.vms()));
  await grant(etcd, role, 'Readwrite', keys.ownerships(nodeId), prefixEnd(keys.ownerships(nodeId)));
  // A paused source that lost its stream resolves the switchover from the target's record and lease.
  await grant(etcd, role, 'Read', keys.alives(), prefixEnd(keys.alives()));
  await grant(etcd, role, 'Read', keys.allOwnerships(), prefixEnd(keys.allOwnerships()));
  await addUser(etcd, cn, role);
}
