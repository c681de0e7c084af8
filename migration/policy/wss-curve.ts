/**
 * The writable working set as a curve (Clark et al., "Live Migration of Virtual Machines", §4):
 * distinct bytes dirtied within a window of a given length. `drover analyze` measures it by
 * observation; the engine measures one point per pre-copy round (the round's length, what it
 * left dirty). Read by the cost model and by the engine's stop rule.
 */

/** One point of a writable-working-set curve: distinct bytes dirtied within a window of `windowMs`. */
export interface WssPoint {
  windowMs: number;
  bytes: number;
}

/**
 * WWS(t): linear between the measured points, from (0, 0); beyond the longest window it grows
 * at the last segment's slope (flat for a bounded working set), capped at `memBytes`. Without a
 * curve: dirty rate × t, capped at RAM.
 */
export function wssAt(curve: readonly WssPoint[], t: number, dirtyRate: number, memBytes: number): number {
  const pts = [...curve].sort((a, b) => a.windowMs - b.windowMs);
  if (t <= 0) return 0;
  if (pts.length === 0) return Math.min(memBytes, (dirtyRate * t) / 1000);
  let prev: WssPoint = { windowMs: 0, bytes: 0 };
  for (const p of pts) {
    if (t <= p.windowMs) return Math.min(memBytes, prev.bytes + ((p.bytes - prev.bytes) * (t - prev.windowMs)) / (p.windowMs - prev.windowMs || 1));
    prev = p;
  }
  const before = pts.length > 1 ? pts[pts.length - 2] : { windowMs: 0, bytes: 0 };
  const slope = Math.max(0, (prev.bytes - before.bytes) / (prev.windowMs - before.windowMs || 1));
  return Math.min(memBytes, prev.bytes + slope * (t - prev.windowMs));
}
