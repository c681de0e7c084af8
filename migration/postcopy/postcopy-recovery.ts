/**
 * The source's post-copy recovery (protocol.ts "Post-copy recovery", as QEMU's
 * postcopy-recover): after the switch a dropped stream is not the end. The source keeps its
 * frozen copy and its digest, reconnects over a new Transfer stream with the same migration id
 * and token (Start with resume = the attempt), with backoff, within POSTCOPY_RECONNECT_BUDGET_MS,
 * and takes the target's Resumed: the pages it still lacks are the pages to send.
 */
import { DroverError } from '../../lib/errors';
import { PAGE_SIZE } from '../../hypervisor/types';
import {
  frames, missingBitmapOf, POSTCOPY_RECONNECT_BACKOFF_MS, POSTCOPY_RECONNECT_BUDGET_MS, POSTCOPY_RECONNECT_MAX_BACKOFF_MS,
  type Ack, type Frame,
} from '../wire/protocol';
import type { BatchWindow } from '../precopy/batch-window';

/** One attempt waits this long for Resumed (a TLS handshake and the target's scan of its page words fit well within). */
export const RESUME_ANSWER_TIMEOUT_MS = 5_000;

/** Codes of a dropped or stalled stream (worth a reconnection); anything else is the target's answer, final. */
const RECONNECTABLE = new Set(['UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED', 'INTERNAL', 'UNKNOWN']);

/**
 * A recovery that ended without the target: refused, or out of budget. The guest ran on the
 * target after the switch, so this never resumes the source (unlike a refusal before any drop).
 */
export class PostcopyRecoveryFailed extends DroverError {}

/** True when `e` is a dropped stream rather than a refusal. */
export function reconnectable(e: DroverError): boolean {
  return RECONNECTABLE.has(e.code);
}

/** What a recovery needs of the engine. */
export interface RecoveryEngine {
  readonly migrationId: string;
  readonly token: string;
  readonly pageCount: number;
  readonly window: BatchWindow;
  /** False when this transport cannot open another stream (then a drop after the switch loses the VM). */
  readonly canReconnect: boolean;
  /** Opens a new stream to the target and makes it the engine's channel (the old one's acks and errors are ignored). */
  reopen(): void;
  /** Writes a control frame on the current channel. */
  send(frame: Frame): Promise<void>;
  /** A line for the agent's log. */
  log(e: Record<string, unknown>): void;
}

/** The target's Resumed, checked. */
export interface Resumed {
  /** Pages the target still lacks (a subset of the switch's missing pages). */
  missing: Uint32Array;
  batches: number;
  resumedAtMs: number;
  done: boolean;
  attempts: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Reconnects after `cause` dropped the stream; `switchMissing` is the bitmap of the pages missing
 * at the switch. Returns the target's Resumed. Throws `cause` itself when the stream did not
 * merely drop (or this transport cannot reconnect); DATA_LOSS when the target refused the
 * reconnection (it gave the migration up after running the guest: never a reason to resume the
 * source); UNAVAILABLE when the budget ran out.
 */
export async function reconnect(e: RecoveryEngine, cause: DroverError, switchMissing: Uint32Array, firstAttempt: number): Promise<Resumed> {
  if (!reconnectable(cause) || !e.canReconnect) throw cause;
  const t0 = performance.now();
  const deadline = t0 + POSTCOPY_RECONNECT_BUDGET_MS;
  let backoff = POSTCOPY_RECONNECT_BACKOFF_MS;
  let last = cause;
  e.log({ msg: 'post-copy stream dropped; reconnecting to the target', code: cause.code, error: cause.message, budgetMs: POSTCOPY_RECONNECT_BUDGET_MS });
  for (let attempt = firstAttempt; ; attempt++) {
    if (!reconnectable(last)) throw new PostcopyRecoveryFailed('DATA_LOSS', `post-copy: the target refused reconnection attempt ${attempt - 1} (${last.code}: ${last.message})`, { cause: last });
    if (performance.now() >= deadline) {
      throw new PostcopyRecoveryFailed('UNAVAILABLE', `post-copy: could not reconnect to the target within ${POSTCOPY_RECONNECT_BUDGET_MS} ms (${attempt - firstAttempt} attempts; last: ${last.code}: ${last.message})`, { cause: last });
    }
    try {
      const r = await attemptOnce(e, attempt, deadline, switchMissing);
      e.log({ msg: 'post-copy resumed over a new stream', attempt, reconnectMs: Math.round(performance.now() - t0), done: r.done });
      return { ...r, attempts: attempt };
    } catch (err) {
      last = DroverError.from(err);
      e.log({ msg: 'post-copy reconnection attempt failed', attempt, code: last.code, error: last.message });
    }
    await sleep(Math.max(0, Math.min(backoff, deadline - performance.now())));
    backoff = Math.min(backoff * 2, POSTCOPY_RECONNECT_MAX_BACKOFF_MS);
  }
}

/** One reconnection: a new stream, Start(resume = `attempt`), the target's Resumed within RESUME_ANSWER_TIMEOUT_MS. */
async function attemptOnce(e: RecoveryEngine, attempt: number, deadline: number, switchMissing: Uint32Array): Promise<Omit<Resumed, 'attempts'>> {
  const w = e.window;
  w.resetForResume();
  e.reopen();
  const wait = Math.max(1, Math.min(RESUME_ANSWER_TIMEOUT_MS, deadline - performance.now()));
  const timer = setTimeout(() => w.fail(new DroverError('DEADLINE_EXCEEDED', `no Resumed within ${Math.round(wait)} ms of reconnection attempt ${attempt}`)), wait);
  try {
    await e.send(frames.resume(e.migrationId, e.token, PAGE_SIZE, e.pageCount, attempt));
    await w.until(() => w.resumed !== undefined);
  } finally {
    clearTimeout(timer);
  }
  return checkResumed(w.resumed!, e.pageCount, switchMissing);
}

/** Checks Resumed: its bitmap fits the VM and names only pages that were missing at the switch (DATA_LOSS otherwise). */
export function checkResumed(a: Extract<Ack, { kind: 'resumed' }>, pageCount: number, switchMissing: Uint32Array): Omit<Resumed, 'attempts'> {
  const missing = missingBitmapOf(a.missing, pageCount);
  for (let i = 0; i < missing.length; i++) {
    const extra = missing[i] & ~switchMissing[i];
    if (extra === 0) continue;
    const p = i * 32 + (31 - Math.clz32(extra));
    throw new DroverError('DATA_LOSS', `post-copy resume: the target says it lacks page ${p}, which it held at the switch`);
  }
  return { missing, batches: a.batches, resumedAtMs: a.resumedAtMs, done: a.done };
}
