/**
 * The post-copy migrations a target holds (migration/wire/protocol.ts "Post-copy recovery"):
 * from the switch until a grace period after PostcopyDone, each with the Transfer call that
 * carries it now. A dropped stream detaches the migration (the VM keeps running, its vCPUs wait
 * for missing pages) and starts POSTCOPY_RECOVER_WAIT_MS; a resume on a new stream attaches that
 * stream instead (a still attached old one is ended); a wait that runs out loses the VM.
 *
 * A link can also go silent without a reset (a partition, a dead path): the call stays open and
 * only gRPC's keepalive would notice, ~15 s later, while vCPUs wait for missing pages. So while a
 * vCPU waits on a page request and the attached call received no byte for POSTCOPY_STALL_MS, the
 * hold drops that call (the stall detector) and waits for the reconnection as for a drop; the
 * source's own detector (postcopy-source.ts) gives the silent stream up for the same bound.
 */
import { DroverError } from '../../lib/errors';
import { POSTCOPY_RECOVER_WAIT_MS, POSTCOPY_STALL_CHECK_MS, POSTCOPY_STALL_MS, type Ack } from '../../migration/wire/protocol';
import type { IncomingSession } from '../../migration/strategy/incoming';
import type { AgentLog } from './outgoing-migrations';
import { agentMetrics } from './agent-metrics';

/** A Transfer call as a hold sees it. */
export interface HeldCall {
  /** Ends a call a reconnection replaced, without failing the migration. */
  supersede(): void;
  /** When the call last received bytes from the source (performance.now()). */
  readonly lastBytesAt: number;
  /** Ends a call whose link went silent (`e` says why); the call detaches the migration as a dropped stream. */
  stall(e: DroverError): void;
}

/** One held post-copy migration. */
interface Hold<C> {
  session: IncomingSession;
  /** The call carrying it; undefined while detached. */
  call: C | undefined;
  /** Detached: when (performance.now()) and the timer that loses the VM. */
  detachedAt?: number;
  timer?: NodeJS.Timeout;
  /** The Owned ack once the ownership was recorded (a resume repeats it). */
  owned?: Ack;
  /** PostcopyDone was sent: the hold only answers a late resume until its grace timer forgets it. */
  done?: boolean;
  /** The stall detector's timer (every POSTCOPY_STALL_CHECK_MS while held). */
  watch?: NodeJS.Timeout;
}

/** The held post-copy migrations of one target node. */
export class PostcopyHolds<C extends HeldCall> {
  private readonly holds = new Map<string, Hold<C>>();

  /** `lose`: gives the VM up (the source never came back); `forget`: the hold ended (the reservation's binding goes). */
  constructor(private readonly log: AgentLog, private readonly lose: (m: IncomingSession, e: DroverError) => void, private readonly forget: (id: string) => void) {}

  /** Holds migration `m` (at its switch), carried by `call`. */
  hold(m: IncomingSession, call: C): void {
    const h: Hold<C> = { session: m, call };
    h.watch = setInterval(() => this.checkStall(h), POSTCOPY_STALL_CHECK_MS);
    h.watch.unref();
    this.holds.set(m.migrationId, h);
  }

  /** The stall detector: a vCPU waits for a page and the attached call heard nothing for POSTCOPY_STALL_MS: drop it. */
  private checkStall(h: Hold<C>): void {
    const c = h.call;
    if (!c || h.done) return;
    const waiting = h.session.receiver.pagesWaitedFor;
    const silentMs = performance.now() - c.lastBytesAt;
    if (waiting === 0 || silentMs < POSTCOPY_STALL_MS) return;
    agentMetrics().stalls.inc();
    c.stall(new DroverError('UNAVAILABLE', `post-copy link silent: no byte from the source for ${Math.round(silentMs)} ms (limit ${POSTCOPY_STALL_MS} ms) while vCPUs wait for ${waiting} page(s); dropping the stream for the source to reconnect`));
  }

  /** The held migration `id`, if any. */
  session(id: string): IncomingSession | undefined {
    return this.holds.get(id)?.session;
  }

  /** True when `call` carries held migration `id` now (a superseded call no longer does). */
  carries(id: string, call: C): boolean {
    return this.holds.get(id)?.call === call;
  }

  /** The ownership of `id` was recorded: a later resume repeats `owned`. */
  recordOwned(id: string, owned: Ack): void {
    const h = this.holds.get(id);
    if (h) h.owned = owned;
  }

  /**
   * The stream `call` of held migration `m` dropped (`cause`): detaches it, unless another call
   * carries it already; the VM is lost if no resume comes within POSTCOPY_RECOVER_WAIT_MS.
   */
  detach(m: IncomingSession, call: C, cause: DroverError, since = performance.now()): void {
    const h = this.holds.get(m.migrationId);
    if (!h || h.call !== call) return;
    h.call = undefined;
    if (h.done) return;
    h.detachedAt = since;
    m.receiver.detach(since);
    const missingPages = m.domain.migration.kind === 'pages' ? m.domain.migration.pages.postcopy?.missingPages : undefined;
    this.log({ msg: 'post-copy stream dropped: the VM keeps running here, vCPUs needing missing pages wait; waiting for the source to reconnect', migration: m.migrationId, vm: m.domain.spec.name, code: cause.code, error: cause.message, missingPages, waitMs: POSTCOPY_RECOVER_WAIT_MS });
    h.timer = setTimeout(() => {
      this.end(h, 'lost');
      this.lose(m, new DroverError('UNAVAILABLE', `the source did not reconnect within ${POSTCOPY_RECOVER_WAIT_MS} ms after the post-copy stream dropped (${cause.code}: ${cause.message})`, { cause }));
    }, POSTCOPY_RECOVER_WAIT_MS);
  }

  /**
   * A resume of held migration `id` arrived on `call` (the receiver accepted it): `call` carries
   * it from now on; an old call still attached is ended. Returns the Owned ack to repeat, if recorded.
   */
  attach(id: string, call: C): Ack | undefined {
    const h = this.holds.get(id);
    if (!h) return undefined;
    const old = h.call;
    h.call = call;
    if (old && old !== call) old.supersede();
    if (h.timer) {
      clearTimeout(h.timer);
      h.timer = undefined;
    }
    if (h.detachedAt !== undefined) {
      const stalledMs = performance.now() - h.detachedAt;
      h.detachedAt = undefined;
      agentMetrics().recoveries.inc({ outcome: 'resumed' });
      agentMetrics().stalled.observe(stalledMs / 1000);
      this.log({ msg: 'post-copy resumed: the source reconnected', migration: id, vm: h.session.domain.spec.name, stalledMs: Math.round(stalledMs * 10) / 10 });
    }
    return h.owned;
  }

  /** PostcopyDone went out for `id`: the hold answers a late resume for POSTCOPY_RECOVER_WAIT_MS more, then ends. */
  finished(id: string): void {
    const h = this.holds.get(id);
    if (!h || h.done) return;
    h.done = true;
    h.timer = setTimeout(() => this.end(h), POSTCOPY_RECOVER_WAIT_MS);
    h.timer.unref();
  }

  /** Ends the hold of `m` (lost, or the node shuts down). */
  release(m: IncomingSession): void {
    const h = this.holds.get(m.migrationId);
    if (h) this.end(h);
  }

  private end(h: Hold<C>, outcome?: 'lost'): void {
    if (h.timer) clearTimeout(h.timer);
    clearInterval(h.watch);
    if (this.holds.get(h.session.migrationId) !== h) return;
    this.holds.delete(h.session.migrationId);
    if (outcome && h.detachedAt !== undefined) {
      agentMetrics().recoveries.inc({ outcome });
      agentMetrics().stalled.observe((performance.now() - h.detachedAt) / 1000);
    }
    this.forget(h.session.migrationId);
  }
}
