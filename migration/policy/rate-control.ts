/**
 * Send-rate control of the page stream.
 *
 * Without a cap, pages go out as fast as the stream takes them (the window and HTTP/2 flow
 * control pace the sender). With a cap (`--bandwidth`), each round's rate follows Xen's rule
 * (Clark et al. §5.2): start at XEN_START_RATE, then measured dirty rate + XEN_RATE_MARGIN,
 * never above the cap; stop-and-copy always runs at the cap. The Pacer enforces a rate with a
 * token bucket of one batch's burst.
 */

/** Xen's first-round rate: 100 Mbit/s. */
export const XEN_START_RATE = 100e6 / 8;
/** Xen's margin over the dirty rate: 50 Mbit/s. */
export const XEN_RATE_MARGIN = 50e6 / 8;

/**
 * Rate for round `round` (1-based) under a cap of `capBytesPerSec` (0 = unlimited, returns 0),
 * given the dirty rate measured in the previous round. `final` = stop-and-copy.
 */
export function roundRate(round: number, dirtyRateBytesPerSec: number, capBytesPerSec: number, final = false): number {
  if (capBytesPerSec <= 0) return 0;
  if (final) return capBytesPerSec;
  const want = round <= 1 ? XEN_START_RATE : dirtyRateBytesPerSec + XEN_RATE_MARGIN;
  return Math.min(capBytesPerSec, Math.max(want, XEN_START_RATE));
}

/** The pacer's burst: a round starts with this many bytes' worth of tokens (setRate), sent at once. */
export const PACER_BURST_BYTES = 1024 * 1024;

/** Token-bucket pacer: `take(bytes)` resolves when sending `bytes` keeps within the rate. */
export class Pacer {
  private rate = 0;
  private tokens = 0;
  private last = performance.now();

  /** Sets the rate in bytes/s (0 = unlimited) and the burst allowance in bytes. */
  setRate(bytesPerSec: number, burstBytes = PACER_BURST_BYTES): void {
    this.rate = bytesPerSec;
    this.burst = burstBytes;
    this.tokens = burstBytes;
    this.last = performance.now();
  }

  private burst = PACER_BURST_BYTES;

  /** Current rate (0 = unlimited). */
  get bytesPerSec(): number {
    return this.rate;
  }

  /** Milliseconds to wait before `bytes` may go (0 when they may go now); consumes the tokens. */
  reserve(bytes: number): number {
    if (this.rate <= 0) return 0;
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }

  /** Waits as `reserve` says. */
  async take(bytes: number): Promise<void> {
    const ms = this.reserve(bytes);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
}

