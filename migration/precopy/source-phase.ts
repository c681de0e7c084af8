/**
 * The phases of a source-side pre-copy migration as one discriminated union: each variant
 * carries the data that exists only in it (the switchover clock once the source is paused,
 * whether the commit was sent, the result, the error). `SOURCE_TRANSITIONS` is the machine's
 * edge list; PrecopySource moves along it in one method.
 *
 *   reserving -> precopy -> stopcopy -> verifying -> activating -> done (Owned)
 *   any phase before the commit point -> failed | cancelled (rollback)
 *   activating -> failed: the target refused after Complete, or does not own the VM (the source resumed)
 *
 * The commit point is sending Complete (always with activate since protocol 2: stopcopy with
 * `commitSent`). After it the source resumes only on the target's explicit refusal or a resolved
 * outcome (protocol.ts, fault table); cancel is refused.
 */
import type { DroverError } from '../../lib/errors';
import type { DowntimeBreakdown, MigrationPhase, MigrationResult } from '../types';

/** The source's pause, and where the downtime that followed it went. */
export interface Switchover {
  /** Wall clock just before the pause (the Complete frame's pausedAtMs), ms. */
  pausedWall: number;
  /** performance.now() once the source was paused. */
  pausedAt: number;
  /** Filled in step by step through stop-and-copy, verification, commit and activation. */
  breakdown: DowntimeBreakdown;
}

/** One phase of a source-side migration, with its own data. */
export type SourcePhase =
  | { kind: 'reserving' }
  | { kind: 'precopy' }
  /** `switchover` once paused; `commitSent` once Complete with activate is on its way. */
  | { kind: 'stopcopy'; switchover?: Switchover; commitSent: boolean }
  | { kind: 'verifying'; switchover: Switchover; commitSent: boolean }
  | { kind: 'activating'; switchover: Switchover }
  | { kind: 'done'; result: MigrationResult }
  | { kind: 'failed'; error: DroverError }
  | { kind: 'cancelled'; error: DroverError };

/** Where each phase may go next (stopcopy -> stopcopy records the pause and the commit). */
export const SOURCE_TRANSITIONS: { readonly [K in MigrationPhase]: readonly MigrationPhase[] } = {
  reserving: ['precopy', 'failed', 'cancelled'],
  precopy: ['stopcopy', 'failed', 'cancelled'],
  stopcopy: ['stopcopy', 'verifying', 'failed', 'cancelled'],
  verifying: ['activating', 'failed', 'cancelled'],
  activating: ['done', 'failed'],
  done: [],
  failed: [],
  cancelled: [],
};

/** True once the commit point has passed: the target may run the guest, no rollback. */
export function isCommitted(p: SourcePhase): boolean {
  switch (p.kind) {
    case 'stopcopy':
    case 'verifying':
      return p.commitSent;
    case 'activating':
    case 'done':
      return true;
    default:
      return false;
  }
}

/** The switchover record of a phase after the pause, if it has one. */
export function switchoverOf(p: SourcePhase): Switchover | undefined {
  switch (p.kind) {
    case 'stopcopy':
    case 'verifying':
    case 'activating':
      return p.switchover;
    default:
      return undefined;
  }
}
