/**
 * etcd writes one migration job costs on its normal path (no retries), counted from the code
 * in cluster/jobs.ts and services/migrator/ (service.ts claims and admits; job-run.ts, attempt.ts and
 * job-store.ts write the job):
 *   1 create (job + VM record, one txn)          1 claim (txn)          1 admission (CAS)
 *   1 start: job reserving + VM migrating (txn)  1 phase precopy
 *   1 attempt record (downtimeMs, guestBlackoutMs, pausedMs: attempt.ts, after the switchover)
 *   1 fold of the target's ownership record (fold.ts, one fenced txn)    1 finish (job -> history + VM, one txn)
 *   1 admission release                          1 claim delete
 * Protocol 2: the migrator writes nothing while the VM is paused (the target records owned/ after
 * it resumed the VM, outside this count). Progress writes come on top, throttled to one per second per job.
 * Every job also counts its own writes in `JobRecord.etcdWrites` (see `drover migrations list --json`).
 */
export const ETCD_WRITES_PER_MOVE = 10;
