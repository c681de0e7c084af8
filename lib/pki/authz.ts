/**
 * Who may call what: the one authorization table of Drover's gRPC APIs, and `authorize()`.
 *
 *   Method                                         admin  controller  node  monitor
 *   ---------------------------------------------  -----  ----------  ----  -------
 *   drover.v1.NodeAgent/CreateVm                     x        x
 *   drover.v1.NodeAgent/DestroyVm                    x        x
 *   drover.v1.NodeAgent/VerifyVm                     x        x
 *   drover.v1.NodeAgent/ResumeVm                     x        x
 *   drover.v1.NodeAgent/ListVms                      x        x                x
 *   drover.v1.NodeAgent/GetVm                        x        x                x
 *   drover.v1.NodeAgent/GetNodeInfo                  x        x                x
 *   drover.v1.NodeAgent/MigrateVm                    x        x
 *   drover.v1.NodeAgent/CancelMigration              x        x
 *   drover.v1.NodeAgent/CommitMigration              x        x
 *   drover.v1.NodeAgent/AnalyzeVm                    x        x                x
 *   drover.v1.MigrationReceiver/PrepareIncoming                       x (source)
 *   drover.v1.MigrationReceiver/Transfer                              x (source)
 *   drover.v1.MigrationReceiver/AbortIncoming                         x (source)
 *   drover.v1.MigrationReceiver/SwitchoverOutcome                     x (token)
 *   grpc.health.v1.Health/Check                      x        x        x     x
 *   grpc.health.v1.Health/Watch                      x        x        x     x
 *   grpc.health.v1.Health/List                       x        x        x     x
 *
 * - admin: every control call; the data plane (MigrationReceiver) is node-to-node only.
 * - controller (migrator, scheduler): VM life cycle, migrations, and the reads they plan with.
 *   VerifyVm is not read-only in cost (it walks guest memory), so monitors do not get it.
 * - node: only the migration data plane, and only as the source the reservation names
 *   ("(source)"): the receiver must also call `checkSource()` with the node the request or the
 *   reservation names (PrepareIncoming's source_node; the reservation's source for Transfer and
 *   AbortIncoming), alongside the one-time token bound to (migration id, VM, source identity).
 *   SwitchoverOutcome answers only the holder of the migration's one-time token, which only its
 *   source has (the reservation may be gone by then: the target answers from its outcome book).
 * - monitor: read-only calls. Metrics are served over HTTPS (lib/pki/tls-options.ts), not gRPC.
 * - No identity (no client certificate, or one without a single Drover URI) → UNAUTHENTICATED.
 *   A method missing from this table is denied to every role (PERMISSION_DENIED).
 */
import { describeIdentity, ROLES, type Identity, type Role } from './identity';

/** What one method allows. */
export interface MethodRule {
  roles: readonly Role[];
  /** node callers must also be the migration's source: see checkSource(). */
  sourceBound?: boolean;
}

const CONTROL: readonly Role[] = ['admin', 'controller'];
const READ: readonly Role[] = ['admin', 'controller', 'monitor'];
const DATA: MethodRule = { roles: ['node'], sourceBound: true };

/** The authorization table, keyed by full method name `package.Service/Method`. */
export const AUTHZ_TABLE: Readonly<Record<string, MethodRule>> = Object.freeze({
  'drover.v1.NodeAgent/CreateVm': { roles: CONTROL },
  'drover.v1.NodeAgent/DestroyVm': { roles: CONTROL },
  'drover.v1.NodeAgent/VerifyVm': { roles: CONTROL },
  'drover.v1.NodeAgent/ResumeVm': { roles: CONTROL },
  'drover.v1.NodeAgent/ListVms': { roles: READ },
  'drover.v1.NodeAgent/GetVm': { roles: READ },
  'drover.v1.NodeAgent/GetNodeInfo': { roles: READ },
  'drover.v1.NodeAgent/MigrateVm': { roles: CONTROL },
  'drover.v1.NodeAgent/CancelMigration': { roles: CONTROL },
  'drover.v1.NodeAgent/CommitMigration': { roles: CONTROL },
  // Read-only: observes the dirty log for a window (a few ms of agent CPU per second), sends nothing.
  'drover.v1.NodeAgent/AnalyzeVm': { roles: READ },
  'drover.v1.MigrationReceiver/PrepareIncoming': DATA,
  'drover.v1.MigrationReceiver/Transfer': DATA,
  'drover.v1.MigrationReceiver/AbortIncoming': DATA,
  'drover.v1.MigrationReceiver/SwitchoverOutcome': DATA,
  'grpc.health.v1.Health/Check': { roles: ROLES },
  'grpc.health.v1.Health/Watch': { roles: ROLES },
  'grpc.health.v1.Health/List': { roles: ROLES },
});

/** A refusal's status: no identity, or the wrong one. */
export type RefusalCode = 'UNAUTHENTICATED' | 'PERMISSION_DENIED';

/** The verdict of authorize() / checkSource(). */
export type AuthzResult = { ok: true } | { ok: false; code: RefusalCode; message: string };

/** `drover.v1.NodeAgent/CreateVm` from a gRPC path `/drover.v1.NodeAgent/CreateVm` or the name itself. */
export function methodName(pathOrName: string): string {
  return pathOrName.startsWith('/') ? pathOrName.slice(1) : pathOrName;
}

/** May `identity` call `method` (a full name or gRPC path)? Pure; the message names role and method. */
export function authorize(method: string, identity: Identity | undefined): AuthzResult {
  const name = methodName(method);
  if (!identity) return { ok: false, code: 'UNAUTHENTICATED', message: `${name} needs a client certificate with a Drover identity (spiffe://drover/<role>/<name>)` };
  const rule = Object.prototype.hasOwnProperty.call(AUTHZ_TABLE, name) ? AUTHZ_TABLE[name] : undefined;
  if (!rule) return { ok: false, code: 'PERMISSION_DENIED', message: `${name} is not in the authorization table: denied to every role (caller ${describeIdentity(identity)})` };
  if (!rule.roles.includes(identity.role)) {
    return { ok: false, code: 'PERMISSION_DENIED', message: `role ${identity.role} may not call ${name} (caller ${describeIdentity(identity)}; allowed: ${rule.roles.join(', ')})` };
  }
  return { ok: true };
}

/**
 * For source-bound methods: a node caller must be the source node the request or reservation
 * names. Other roles and other methods pass (authorize() already decided for them).
 */
export function checkSource(method: string, identity: Identity, sourceNode: string, migrationId?: string): AuthzResult {
  const name = methodName(method);
  if (!AUTHZ_TABLE[name]?.sourceBound || identity.role !== 'node' || identity.name === sourceNode) return { ok: true };
  const which = migrationId ? ` for migration ${migrationId}` : '';
  return { ok: false, code: 'PERMISSION_DENIED', message: `node ${identity.name} may not call ${name}${which}: the source is node ${sourceNode}` };
}

/** The methods a role may call, in table order (for docs and `drover pki show`). */
export function methodsFor(role: Role): string[] {
  return Object.entries(AUTHZ_TABLE).filter(([, r]) => r.roles.includes(role)).map(([m]) => m);
}
