/** Admission of migration jobs under the cluster's limits (one CAS on `admission` admits a job). */
import type { Admission, ClusterConfig } from '../../cluster/keyspace';

/** Does `job` fit the limits given the admitted jobs? Returns the reason it does not. */
export function admissionBlocker(adm: Admission, job: { id: string; from: string; to: string }, cfg: ClusterConfig): string | undefined {
  if (adm.jobs.some((a) => a.id === job.id)) return undefined;
  if (adm.jobs.length >= cfg.maxConcurrent) return `cluster-wide limit ${cfg.maxConcurrent}`;
  if (adm.jobs.filter((a) => a.from === job.from).length >= cfg.maxOutboundPerNode) return `outbound limit ${cfg.maxOutboundPerNode} on ${job.from}`;
  if (adm.jobs.filter((a) => a.to === job.to).length >= cfg.maxInboundPerNode) return `inbound limit ${cfg.maxInboundPerNode} on ${job.to}`;
  return undefined;
}
