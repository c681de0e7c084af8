/** `drover migrator` and `drover scheduler`: one replica of a control-plane service until a signal. */
import { parse, str, address } from '../../args';
import { connectEtcd } from '../../../cluster/etcd';
import { Migrator } from '../../../services/migrator/service';
import { Scheduler } from '../../../services/scheduler/service';
import { startMetricsServer } from '../../../lib/metrics';
import { ETCD, etcdUrl, noExtra, waitSignal } from './common';
import { CertificateReloader } from '../../../lib/pki/tls-files';
import { TLS_OPTIONS, TLS_USAGE, tlsFilesOf, tlsFromFlags, useAgentIdentity } from '../../tls-flags';

/** Runs a migrator or scheduler replica; returns the exit code. */
export async function serviceCommand(kind: 'migrator' | 'scheduler', argv: string[]): Promise<number> {
  const p = parse(argv, { ...ETCD, id: { type: 'string' }, 'metrics-listen': { type: 'string' }, ...TLS_OPTIONS }, kind);
  noExtra(p, 0, `drover ${kind} [--etcd URL] [--id ID] [--metrics-listen HOST:PORT] ${TLS_USAGE}`);
  const metricsListen = str(p, 'metrics-listen') ? address(str(p, 'metrics-listen')!, '--metrics-listen') : undefined;
  // Its controller identity: towards etcd (RBAC user from the CN), the agents, and on /metrics.
  // SIGHUP re-reads the files: new agent connections present the new certificate (the etcd
  // client and the metrics endpoint keep the one they started with until a restart).
  const tls = tlsFromFlags(p, kind, { reloadable: true });
  const files = tlsFilesOf(tls);
  if (tls.mode === 'tls') {
    useAgentIdentity(tls.source);
    if (tls.source instanceof CertificateReloader) {
      const reloader = tls.source;
      process.on('SIGHUP', () => {
        const r = reloader.reload();
        process.stderr.write(r.ok ? `drover ${kind}: certificates reloaded (${reloader.paths.cert}, valid until ${r.files.notAfter.toISOString()})\n`
          : `drover ${kind}: certificate reload refused, keeping the previous certificates: ${r.error.message}\n`);
      });
    }
  }
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
