/** Cluster-config operations: read it, change fields of it. */
import type { Etcd3 } from 'etcd3';
import { readSnapshot, updateJson } from '../etcd';
import { keys, type ClusterConfig } from '../keyspace';

/** The cluster config in effect (defaults filled in). */
export async function getConfig(etcd: Etcd3): Promise<ClusterConfig> {
  return (await readSnapshot(etcd)).config;
}

/** Writes fields of the cluster config (one CAS, other fields kept). */
export async function setConfig(etcd: Etcd3, patch: Partial<ClusterConfig>): Promise<void> {
  await updateJson<Partial<ClusterConfig>>(etcd, keys.config(), (cur) => ({ ...(cur ?? {}), ...patch }));
}
