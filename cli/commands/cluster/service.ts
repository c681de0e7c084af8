/** `drover migrator` and `drover scheduler`: one replica of a control-plane service until a signal. */
import { parse, str, address } from '../../args';
import { connectEtcd } from '../../../cluster/etcd';
import { Migrator } from '../../../services/migrator/service';
import { Scheduler } from '../../../services/scheduler/service';
import { startMetricsServer } from '../../../lib/metrics';
import { ETCD, etcdUrl, noExtra, waitSignal } from './common';
import { TLS_OPTIONS, TLS_USAGE, tlsFilesOf, tlsFromFlags, useAgentIdentity } from '../../tls-flags';

/** Runs a migrator or scheduler replica; returns the exit code. */
export async function serviceCommand(kind: 'migrator' | 'scheduler', argv: string[]): Promise<number> {
  const p = parse(argv, { ...ETCD, id: { type: 'string' }, 'metrics-listen': { type: 'string' }, ...TLS_OPTIONS }, kind);
  noExtra(p, 0, `drover ${kind} [--etcd URL] [--id ID] [--metrics-listen HOST:PORT] ${TLS_USAGE}`);
  const metricsListen = str(p, 'metrics-listen') ? address(str(p, 'metrics-listen')!, '--metrics-listen') : undefined;
  // Its controller identity: towards etcd (RBAC user from the CN), the agents, and on /metrics.
  const tls = tlsFromFlags(p, kind);
  const files = tlsFilesOf(tls);
  if (files) useAgentIdentity(files);
  const etcd = await connectEtcd(etcdUrl(p, kind), undefined, files?.paths);
  const id = str(p, 'id');
  const svc = kind === 'migrator' ? new Migrator(etcd, { id }) : new Scheduler(etcd, { id });
  await svc.start();
  // `drover up` reads this line (in DIR/<id>.log) to learn the port.
  const metrics = metricsListen ? await startMetricsServer(metricsListen, undefined, { tls: files }) : undefined;
  if (metrics) process.stdout.write(`drover ${kind} ${svc.id} metrics on ${metrics.address}\n`);
  await waitSignal();
  await svc.stop();
  await metrics?.close();
  etcd.close();
  return 0;
}
