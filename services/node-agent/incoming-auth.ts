/**
 * Who may use a reservation on the target: each PrepareIncoming binds its one-time token to
 * (migration id, VM, source node). With TLS the source is the caller's verified node identity
 * (a request naming another source_node is refused), and Transfer's Start and AbortIncoming are
 * accepted only from that identity (lib/pki/authz.ts checkSource). In every mode AbortIncoming
 * needs the reservation's token: a wrong or empty one is PERMISSION_DENIED and the reservation
 * stays. The Start frame's token itself is checked by the receiver (migration/receiver/).
 */
import { DroverError } from '../../lib/errors';
import { checkSource } from '../../lib/pki/authz';
import { describeIdentity, type Identity } from '../../lib/pki/identity';

/** A refusal decided here (the server logs it and counts it in drover_authz_refusals_total). */
export interface ReservationRefusal {
  method: string;
  code: 'PERMISSION_DENIED';
  message: string;
  identity: Identity | undefined;
}

interface Binding {
  token: string;
  vm: string;
  source: string;
}

const PREPARE = 'drover.v1.MigrationReceiver/PrepareIncoming';
const TRANSFER = 'drover.v1.MigrationReceiver/Transfer';
const ABORT = 'drover.v1.MigrationReceiver/AbortIncoming';

/** The reservations' bindings of one target node. */
export class ReservationGuard {
  private readonly bindings = new Map<string, Binding>();

  /** `tls`: callers carry verified identities (the source checks apply). */
  constructor(readonly tls: boolean, private readonly onRefusal: (r: ReservationRefusal) => void = () => {}) {}

  /** PrepareIncoming: the source to bind: the caller's node name with TLS (which must equal `sourceNode`), else `sourceNode`. */
  sourceOf(sourceNode: string, caller: Identity | undefined): string {
    if (!this.tls) return sourceNode;
    if (!caller) this.refuse(PREPARE, caller, `${PREPARE} needs the source's node identity`);
    const v = checkSource(PREPARE, caller!, sourceNode);
    if (!v.ok) this.refuse(PREPARE, caller, `${v.message} (the request's source_node "${sourceNode}" is not the caller ${describeIdentity(caller)})`);
    return caller!.name;
  }

  /** Records a reservation's binding. */
  bind(migrationId: string, token: string, vm: string, source: string): void {
    this.bindings.set(migrationId, { token, vm, source });
  }

  /** Forgets a reservation (activated or discarded). */
  forget(migrationId: string): void {
    this.bindings.delete(migrationId);
  }

  /** Transfer's Start: with TLS, only the reservation's source identity may start it. */
  checkStart(migrationId: string, caller: Identity | undefined): void {
    const b = this.bindings.get(migrationId);
    if (!this.tls || !b) return;
    if (!caller) this.refuse(TRANSFER, caller, `${TRANSFER} of migration ${migrationId} needs the source's node identity`);
    const v = checkSource(TRANSFER, caller!, b.source, migrationId);
    if (!v.ok) this.refuse(TRANSFER, caller, v.message);
  }

  /** AbortIncoming: the reservation's token (every mode) and, with TLS, its source identity. Unknown ids pass (nothing to abort). */
  checkAbort(migrationId: string, token: string, caller: Identity | undefined): void {
    const b = this.bindings.get(migrationId);
    if (!b) return;
    if (this.tls) {
      const v = caller ? checkSource(ABORT, caller, b.source, migrationId) : { ok: false as const, message: `${ABORT} of migration ${migrationId} needs the source's node identity` };
      if (!v.ok) this.refuse(ABORT, caller, v.message);
    }
    if (token !== b.token) {
      this.refuse(ABORT, caller, `${token ? 'wrong' : 'empty'} token for migration ${migrationId} (VM ${b.vm}, source node ${b.source}): AbortIncoming refused, the reservation stays`);
    }
  }

  private refuse(method: string, identity: Identity | undefined, message: string): never {
    this.onRefusal({ method, code: 'PERMISSION_DENIED', message, identity });
    throw new DroverError('PERMISSION_DENIED', message);
  }
}
