/**
 * Live progress of a migration: on a terminal one line rewritten in place (phase, round, data
 * remaining, dirty rate, send rate, estimate); otherwise a line a second.
 */
import { formatBytes, formatMs, formatRate } from '../lib/units';
import type { MigrationEventInfo } from '../services/node-agent/client/agent-codec';

/** Renders progress events to a stream. */
export class ProgressLine {
  private last = 0;
  private drawn = false;
  constructor(private readonly out: NodeJS.WriteStream = process.stderr, private readonly label = '') {}

  /** Shows one event. */
  update(e: MigrationEventInfo): void {
    const tty = this.out.isTTY;
    const now = Date.now();
    if (!tty && now - this.last < 1000 && e.phase === 'precopy') return;
    this.last = now;
    const eta = Number.isFinite(e.etaMs) ? formatMs(e.etaMs) : '?';
    const line = `${this.label}${e.phase.padEnd(15)} round ${String(e.round).padStart(2)}  remaining ${formatBytes(e.remainingBytes).padStart(10)}  dirty ${formatRate(e.dirtyRateBytesPerSec).padStart(11)}  rate ${formatRate(e.rateBytesPerSec).padStart(11)}  sent ${formatBytes(e.sentBytes).padStart(10)}  eta ${eta}`;
    if (tty) {
      this.out.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else {
      this.out.write(`${line}\n`);
    }
  }

  /** Ends the live line. */
  done(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
