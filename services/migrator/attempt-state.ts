/**
 * The state of one migration attempt as its migrator drives it, with every transition in one
 * place. The engine copies (`migrating`) until the target holds a verified image; the migrator
 * then flips the owner in etcd (`committing`); once the flip is recorded (`committed`) only
 * completion remains. A cancel (watchdog, user request, or a commit that lost its fence) moves
 * to `cancelling` from `migrating` or `committing`, never after the flip.
 *
 * Losing the job (another replica took it over) is orthogonal: it can happen in any state and
 * only stops this replica's writes, so it is a flag, not a variant.
 */
import { DroverError } from '../../lib/errors';
import type { MigrationResult } from '../../migration/types';

/** Where an attempt is; each variant carries its own data. */
export type AttemptState =
  | { kind: 'migrating' }
  | { kind: 'committing'; awaitingAt: number }
  | { kind: 'committed'; awaitingAt: number }
  | { kind: 'cancelling'; reason: string; byUser: boolean; commitStarted: boolean };

/** What the migrator does with an attempt once the engine returned. */
export type AttemptOutcome =
  /** Another replica owns the job now: stop, it finishes the job. */
  | { kind: 'abandoned' }
  /** The VM runs on the target; `ownerRecorded` false when the engine activated without our commit. */
  | { kind: 'succeeded'; result: MigrationResult; ownerRecorded: boolean }
  /** The owner flipped but the engine did not report success: complete it as a takeover does. */
  | { kind: 'committed' }
  /** Cancelled before the flip (the VM runs on the source). */
  | { kind: 'cancelled'; reason: string; byUser: boolean; result?: MigrationResult }
  /** The engine failed before the flip: retry (retryable codes) or fail. */
  | { kind: 'failed'; error: DroverError };

/** Holds one attempt's state; the only code that changes it. */
export class AttemptTracker {
  private s: AttemptState = { kind: 'migrating' };
  private lostJob = false;

  /** The current state (read-only view). */
  get state(): Readonly<AttemptState> {
    return this.s;
  }

  /** True once another replica took the job over. */
  get lost(): boolean {
    return this.lostJob;
  }

  /** The watchdog may cancel only while the engine copies and nothing else decided. */
  get watchdogArmed(): boolean {
    return this.s.kind === 'migrating';
  }

  /** A commit was started (whatever became of it): phase writes stop, the watchdog stays out. */
  get commitStarted(): boolean {
    return this.s.kind === 'committing' || this.s.kind === 'committed' || (this.s.kind === 'cancelling' && this.s.commitStarted);
  }

  /** The target is verified and nothing cancelled: the owner flip can begin. */
  get mayStartCommit(): boolean {
    return this.s.kind === 'migrating';
  }

  /** migrating → committing (the source reported awaiting-commit). */
  startCommit(now: number): void {
    if (this.s.kind !== 'migrating') throw this.illegal('start a commit');
    this.s = { kind: 'committing', awaitingAt: now };
  }

  /** committing → committed (the owner flip is recorded in etcd). */
  markCommitted(): void {
    if (this.s.kind !== 'committing') throw this.illegal('record the owner flip');
    this.s = { kind: 'committed', awaitingAt: this.s.awaitingAt };
  }

  /** migrating|committing → cancelling. False (nothing changes) once cancelling or committed. */
  cancel(reason: string, byUser: boolean): boolean {
    if (this.s.kind === 'cancelling' || this.s.kind === 'committed') return false;
    this.s = { kind: 'cancelling', reason, byUser, commitStarted: this.s.kind === 'committing' };
    return true;
  }

  /** Another replica owns the job now. */
  markLost(): void {
    this.lostJob = true;
  }

  /** What to do once the engine returned `result` or threw `error`. */
  outcome(result: MigrationResult | undefined, error: DroverError | undefined): AttemptOutcome {
    if (this.lostJob) return { kind: 'abandoned' };
    const s = this.s;
    if (result && result.outcome === 'succeeded') {
      return { kind: 'succeeded', result, ownerRecorded: s.kind === 'committed' };
    }
    if (s.kind === 'committed') return { kind: 'committed' };
    if (s.kind === 'cancelling') return { kind: 'cancelled', reason: s.reason, byUser: s.byUser, result };
    return { kind: 'failed', error: error ?? new DroverError(result?.outcome === 'cancelled' ? 'CANCELLED' : 'INTERNAL', result?.error || 'migration failed') };
  }

  private illegal(what: string): DroverError {
    return new DroverError('INTERNAL', `migration attempt: cannot ${what} in state ${this.s.kind}`);
  }
}
