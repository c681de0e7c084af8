/**
 * Keeps child processes running, as systemd's `Restart=on-failure` keeps Drover's units running:
 * a child that exits with a non-zero code or dies of a signal is started again after an
 * exponential backoff (RESTART_FIRST_DELAY_MS, times RESTART_BACKOFF_FACTOR per failure in a row,
 * at most RESTART_MAX_DELAY_MS: a child that keeps dying is still retried, at the cap). A child
 * that ran for RESTART_STABLE_MS before dying starts again from the first delay. A clean exit
 * (code 0) is not restarted, and nothing is restarted once `stop()` was called. Every restart is
 * logged with the process name, its exit code or signal, and the delay.
 */
import type { ChildProcess } from 'node:child_process';

/** First restart delay, ms: long enough not to spin on a crash at start, short enough that an agent is back well inside its lease. */
export const RESTART_FIRST_DELAY_MS = 500;
/** Each failure in a row multiplies the delay by this. */
export const RESTART_BACKOFF_FACTOR = 2;
/** Longest restart delay, ms: a process that keeps dying is retried this often (systemd's RestartSec scale). */
export const RESTART_MAX_DELAY_MS = 30_000;
/** A child that ran this long before dying was healthy: its next restart uses the first delay again, ms. */
export const RESTART_STABLE_MS = 60_000;

/** How restarts are spaced. */
export interface BackoffPolicy {
  firstMs: number;
  factor: number;
  maxMs: number;
  stableMs: number;
}

/** The backoff of `drover up` and the local cluster. */
export const DEFAULT_BACKOFF: BackoffPolicy = {
  firstMs: RESTART_FIRST_DELAY_MS, factor: RESTART_BACKOFF_FACTOR, maxMs: RESTART_MAX_DELAY_MS, stableMs: RESTART_STABLE_MS,
};

/** The delay before restart number `failures` in a row (1 = the first). */
export function restartDelay(failures: number, p: BackoffPolicy = DEFAULT_BACKOFF): number {
  return Math.min(p.maxMs, p.firstMs * p.factor ** Math.max(0, failures - 1));
}

/** One restart decision, as logged. */
export interface RestartEvent {
  name: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  delayMs: number;
  /** Failures in a row, this one included. */
  failures: number;
}

/** The log line of a restart. */
export function restartLine(e: RestartEvent): string {
  const how = e.signal ? `signal ${e.signal}` : `code ${e.code}`;
  return `supervisor: ${e.name} exited (${how}); restarting in ${e.delayMs} ms (failure ${e.failures} in a row)`;
}

interface Entry {
  start: () => ChildProcess;
  child: ChildProcess;
  startedAt: number;
  failures: number;
  timer?: NodeJS.Timeout;
}

/** Restarts the children it was given when they fail, until stopped. */
export class Supervisor {
  private readonly entries = new Map<string, Entry>();
  private stopped = false;

  /** `log` gets one line per restart (and per clean exit, which is not restarted). */
  constructor(private readonly log: (line: string, e?: RestartEvent) => void, private readonly policy: BackoffPolicy = DEFAULT_BACKOFF) {}

  /** Starts `name` with `start` and restarts it whenever it fails; returns the first child. */
  add(name: string, start: () => ChildProcess): ChildProcess {
    const e: Entry = { start, child: start(), startedAt: Date.now(), failures: 0 };
    this.entries.set(name, e);
    this.watch(name, e);
    return e.child;
  }

  /** The child currently running as `name` (or the last one, while a restart is pending). */
  child(name: string): ChildProcess | undefined {
    return this.entries.get(name)?.child;
  }

  /** No more restarts (call before stopping the children); pending restarts are dropped. */
  stop(): void {
    this.stopped = true;
    for (const e of this.entries.values()) if (e.timer) clearTimeout(e.timer);
  }

  private watch(name: string, e: Entry): void {
    const child = e.child;
    let handled = false;
    const onEnd = (code: number | null, signal: NodeJS.Signals | null) => {
      if (handled || this.stopped || e.child !== child) return;
      handled = true;
      if (code === 0 && !signal) { this.log(`supervisor: ${name} exited cleanly (code 0); not restarted`); return; }
      if (Date.now() - e.startedAt >= this.policy.stableMs) e.failures = 0;
      e.failures++;
      const ev: RestartEvent = { name, code, signal, delayMs: restartDelay(e.failures, this.policy), failures: e.failures };
      this.log(restartLine(ev), ev);
      e.timer = setTimeout(() => {
        e.timer = undefined;
        if (this.stopped) return;
        e.child = e.start();
        e.startedAt = Date.now();
        this.watch(name, e);
      }, ev.delayMs);
    };
    child.once('exit', onEnd);
    // A child that could not be spawned at all emits 'error' and maybe no 'exit'.
    child.once('error', () => { if (child.pid === undefined) onEnd(null, null); });
  }
}
