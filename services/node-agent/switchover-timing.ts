/**
 * The switchover's timing rules, in one place (switchover.ts applies them; the fault table is in
 * migration/wire/protocol.ts). Every figure is a duration on one host's own clock: no rule
 * compares two hosts' clocks.
 *
 * The one invariant: a target's resumed copy is paused or destroyed before its source may resume
 * on a timeout. So the target's record window must end before the source's resolve bound, for any
 * timing of the two:
 * - The target's copy may run from Complete's arrival on (QEMU runs the guest as soon as its
 *   stream completes, well before the agent saw it beat), so its window counts from Complete's
 *   arrival, never from the later moment the agent declared it resumed.
 * - The source starts its bound no earlier than it sent Complete, which is before Complete
 *   arrived.
 * Hence target deadline <= arrival + TTL - margin < sent + TTL + 2 margins <= source bound, with
 * three margins to spare for timer lateness and a slow etcd answer.
 * The target also stops one margin before its own lease could expire: the source resumes at once
 * when the target's heartbeat is gone.
 */

/**
 * The slack each side keeps, ms: the target stops trying to record this long before its window
 * ends; the source waits two of them beyond the TTL. Half a second covers timer lateness and an
 * etcd answer on a loaded host (a txn takes milliseconds) many times over.
 */
export const LEASE_MARGIN_MS = 500;

/** How often a source re-reads etcd while resolving an outcome, ms: five reads a second cost etcd nothing and add at most this to a resume. */
export const RESOLVE_POLL_MS = 200;

/** When the target's record window opens and what bounds it. */
export interface TargetWindow {
  /** Date.now() when Complete arrived (its copy may run from then on). */
  completeArrivedAtMs: number;
  /** The node lease cannot expire before this (registration.ts `lease()`; 0 = no lease). */
  leaseDeadlineMs: number;
  /** The cluster's node TTL, ms (one DROVER_NODE_TTL_SEC per cluster: the source's too). */
  ttlMs: number;
}

/**
 * The time by which the target must have recorded its ownership, or pause its copy: the sooner
 * of its lease deadline and one TTL after Complete arrived, minus LEASE_MARGIN_MS.
 */
export function targetRecordDeadline(w: TargetWindow): number {
  return Math.min(w.leaseDeadlineMs, w.completeArrivedAtMs + w.ttlMs) - LEASE_MARGIN_MS;
}

/**
 * The time after which a source that cannot learn the outcome may write its resume record:
 * TTL + 2 margins after it started resolving (no earlier than it sent Complete).
 */
export function sourceResolveBound(resolveStartMs: number, ttlMs: number): number {
  return resolveStartMs + ttlMs + 2 * LEASE_MARGIN_MS;
}
