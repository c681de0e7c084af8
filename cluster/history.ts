/**
 * Bounding the job history (`history/<id>`): the finished jobs beyond the newest
 * `historyMaxJobs`, and those older than `historyMaxAgeMs`, are deleted, so etcd does not grow
 * without end. The scheduler leader runs it (fenced on its campaign key, so a deposed leader
 * deletes nothing). It reads keys only, in the order the jobs finished (the history record is
 * written once, when its job ends, so its create revision orders them); a job's age is the time
 * in its id (`m-<ms base36>-...`), and a record whose id carries no time is pruned by count only.
 */
import type { Etcd3 } from 'etcd3';
import { idOf, keys } from './keyspace';

/** Deletes per transaction: below etcd's default --max-txn-ops (128). */
export const HISTORY_PRUNE_BATCH = 100;

/** How much history to keep. */
export interface HistoryLimits {
  /** Keep at most this many finished jobs (the newest). */
  maxJobs: number;
  /** Delete finished jobs created longer ago than this, ms. */
  maxAgeMs: number;
}

/** The creation time (ms) in a job id of newJobId(), or undefined if it has none. */
export function jobIdTime(id: string): number | undefined {
  const m = /^m-([0-9a-z]+)-/.exec(id);
  if (!m) return undefined;
  const t = parseInt(m[1], 36);
  return Number.isFinite(t) && t > 0 ? t : undefined;
}

/** The history ids to delete: `ids` oldest-finished first. */
export function historyToPrune(ids: string[], limits: HistoryLimits, now: number): string[] {
  const excess = Math.max(0, ids.length - Math.max(0, limits.maxJobs));
  return ids.filter((id, i) => {
    if (i < excess) return true;
    const t = jobIdTime(id);
    return t !== undefined && now - t > limits.maxAgeMs;
  });
}

/**
 * Prunes the history to `limits`; each batch is one transaction that requires `fenceKey` to
 * exist (when given). Returns how many records were deleted.
 */
export async function pruneHistory(etcd: Etcd3, limits: HistoryLimits, fenceKey?: string, now = Date.now()): Promise<number> {
  const ids = (await etcd.getAll().prefix(keys.histories()).sort('Create', 'Ascend').keys()).map(idOf);
  const doomed = historyToPrune(ids, limits, now);
  let deleted = 0;
  for (let i = 0; i < doomed.length; i += HISTORY_PRUNE_BATCH) {
    const batch = doomed.slice(i, i + HISTORY_PRUNE_BATCH);
    const ops = batch.map((id) => etcd.delete().key(keys.history(id)));
    // Unfenced: a compare that always holds (no key has a negative version).
    const txn = fenceKey ? etcd.if(fenceKey, 'Version', '>', 0) : etcd.if(keys.histories(), 'Version', '>', -1);
    const r = await txn.then(...ops).commit();
    if (!r.succeeded) break;
    deleted += batch.length;
  }
  return deleted;
}
