/**
 * The cluster-operations API: everything a user (the CLI, the demo, the tests) or the scheduler
 * asks of the cluster, one module per group. Each change is one etcd transaction; a request
 * that cannot be met fails with a DroverError naming why, and writes nothing.
 */
export { getConfig, setConfig } from './config';
export { jobLine } from './job-line';
export { cancelMigration, listMigrations, requestMigration, watchAll, watchJob, type CancelResult } from './migrations';
export { cordonNode, drainNode, uncordonNode, waitDrained, type CordonResult, type DrainResult, type EvacuationCheck, type UncordonResult } from './nodes';
export { createVmRecord, destroyVm, getVm, listVms, waitPlaced, type VmHost, type VmHostConnector, type VmRow } from './vms';
