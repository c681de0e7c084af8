/**
 * The watchdog of one migration attempt: a progress timeout (bytes sent unchanged for too long)
 * and a completion timeout (scaled by VM size, see `completionTimeoutMs`). Pure bookkeeping over
 * an injected clock; the attempt polls `check()` and cancels with the reason it returns.
 */

/** Period at which an attempt polls its watchdog, ms (fast enough to react within a second). */
export const WATCHDOG_PERIOD_MS = 500;

/** Limits of one attempt. */
export interface WatchdogLimits {
  /** The whole attempt must finish within this, ms. */
  completionTimeoutMs: number;
  /** Bytes sent must change at least this often, ms. */
  progressTimeoutMs: number;
  /** Size of the VM (named in the completion timeout's message), bytes. */
  memBytes: number;
}

/** Progress and completion timeouts of one attempt, against an injected clock. */
export class Watchdog {
  private readonly startedAt: number;
  private lastSent = -1;
  private lastProgressAt: number;

  constructor(private readonly limits: WatchdogLimits, private readonly now: () => number = Date.now) {
    this.startedAt = now();
    this.lastProgressAt = this.startedAt;
  }

  /** Records the engine's bytes-sent counter; a changed value counts as progress. */
  progress(sentBytes: number): void {
    if (sentBytes === this.lastSent) return;
    this.lastSent = sentBytes;
    this.lastProgressAt = this.now();
  }

  /** Why the attempt must be cancelled now, or undefined while it is within its limits. */
  check(): string | undefined {
    const now = this.now();
    const { completionTimeoutMs, progressTimeoutMs, memBytes } = this.limits;
    if (now - this.startedAt > completionTimeoutMs) {
      return `completion timeout: not done after ${Math.round(completionTimeoutMs / 1000)} s (${Math.round(memBytes / 2 ** 20)} MiB VM)`;
    }
    if (now - this.lastProgressAt > progressTimeoutMs) return `progress timeout: no data moved for ${Math.round(progressTimeoutMs / 1000)} s`;
    return undefined;
  }
}
