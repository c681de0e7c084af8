/**
 * Send-rate control of the page stream.
 *
 * Without a cap, pages go out as fast as the stream takes them (the window and HTTP/2 flow
 * control pace the sender). With a cap (`--bandwidth`), every round runs at the cap from round 1
 * on, as QEMU's max-bandwidth does: the user named the link's share the migration may take, and
 * time spent below it only lets the guest dirty more. (Xen's rule, 100 Mbit/s for round 1, then
 * the dirty rate + 50 Mbit/s, ran round 1 of a 1 Gbit/s-capped migration at a tenth of the cap.)
 * The Pacer enforces a rate with a token bucket of one batch's burst.
 */

/** The pacer's rate for every round and stop-and-copy under a cap of `capBytesPerSec`: the cap; 0 (unlimited) without one. */
export function roundRate(capBytesPerSec: number): number {
  return capBytesPerSec > 0 ? capBytesPerSec : 0;
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

