/** `drover agent`: runs a node agent in the foreground until SIGINT/SIGTERM. */
import * as os from 'node:os';
import { parse, required, str, size, int, address, duration, UsageError } from '../args';
import { createHypervisor } from '../../hypervisor';
import { NodeAgentServer } from '../../services/node-agent/agent-server';
import { createLogger } from '../../lib/log';
import { startMetricsServer } from '../../lib/metrics';
import { exitWithParent, isTuned, runTuned } from '../../services/node-agent/process-tuning';
import { TLS_OPTIONS, TLS_USAGE, tlsFilesOf, tlsFromFlags } from '../tls-flags';
import { CertificateReloader } from '../../lib/pki/tls-files';
import type { Logger } from 'pino';
import { parseStreams } from './migrate';
import { nativeConfig } from '../../hypervisor/qemu/migration-tls';
import { BulkListenError } from '../../migration/transport/bulk-listener';
import * as fs from 'node:fs';
import { defaultStateDir } from '../../services/node-agent/outcome-journal';

/** Throws a usage error naming --state-dir unless it is (or can be made) a writable directory. */
function checkStateDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw new UsageError(`--state-dir "${dir}" is not a writable directory: ${(err as Error).message}`);
  }
}

/** Usage of `drover agent`. */
export const AGENT_USAGE = `drover agent --listen HOST:PORT --node-id ID [--hypervisor sim|qemu] [--qemu-binary PATH] [--qemu-migration auto|native|tunnel] [--streams N|auto] [--bulk on|off] [--bulk-listen HOST:PORT] [--state-dir DIR] [--outcome-wait 30s] [--mem-capacity 16GiB] [--vcpus N] [--etcd URL] [--metrics-listen HOST:PORT] [--storage HOST:PORT]... ${TLS_USAGE}`;

/** Runs the agent; resolves when it was stopped. */
export async function agentCommand(argv: string[]): Promise<number> {
  const p = parse(argv, {
    listen: { type: 'string' }, 'node-id': { type: 'string' }, hypervisor: { type: 'string', default: 'sim' },
    'mem-capacity': { type: 'string' }, vcpus: { type: 'string' }, etcd: { type: 'string' }, 'metrics-listen': { type: 'string' },
    'qemu-binary': { type: 'string' }, 'qemu-migration': { type: 'string', default: 'auto' }, storage: { type: 'string', multiple: true }, streams: { type: 'string' }, bulk: { type: 'string', default: 'on' }, 'bulk-listen': { type: 'string' }, 'state-dir': { type: 'string' }, 'outcome-wait': { type: 'string' }, ...TLS_OPTIONS,
  }, 'agent');
  if (p.positionals.length) throw new UsageError(`agent: unexpected argument "${p.positionals[0]}" (usage: ${AGENT_USAGE})`);
  // The data plane needs V8/malloc settings that only a fresh process can take (process-tuning.ts).
  if (!isTuned()) return runTuned(['agent', ...argv]);
  exitWithParent();
  const listen = address(required(p, 'listen', 'agent'), '--listen');
  const metricsListen = str(p, 'metrics-listen') ? address(str(p, 'metrics-listen')!, '--metrics-listen') : undefined;
  const nodeId = required(p, 'node-id', 'agent');
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(nodeId)) throw new UsageError(`--node-id "${nodeId}" is invalid (lower-case letters, digits, '-')`);
  // Certificates are required; plain text only with an explicit --insecure (and the warning line).
  const tls = tlsFromFlags(p, 'agent', { reloadable: true });
  const files = tlsFilesOf(tls);
  const log = createLogger('agent').child({ node: nodeId });
  // QEMU: native TLS migration between the QEMUs with this node's certificate (auto, with
  // certificates); the tunnel through the agents otherwise. Plain-text native only with --insecure.
  const qmode = str(p, 'qemu-migration', 'auto')!;
  if (!['auto', 'native', 'tunnel'].includes(qmode)) throw new UsageError(`--qemu-migration "${qmode}" is invalid (expected auto, native or tunnel)`);
  const secure = tls.mode === 'tls';
  const want = qmode === 'tunnel' || (qmode === 'auto' && !secure) ? '' : secure ? 'tls' : 'tcp';
  const qemuMigration = nativeConfig(want, listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, ''), files?.paths);
  if (qemuMigration.fallbackReason) log.warn({ reason: qemuMigration.fallbackReason }, 'QEMU native migration off: the tunnel carries it');
  const hypervisor = createHypervisor(str(p, 'hypervisor', 'sim')!, { qemuBinary: str(p, 'qemu-binary'), qemuMigration: qemuMigration.config });
  const memBytes = size(p, 'mem-capacity', Math.floor(os.totalmem() * 0.75))!;
  const vcpus = int(p, 'vcpus', 64)!;
  // Storage endpoints a VM's disk may name (absent: DROVER_STORAGE, else loopback only).
  const storage = ((p.values.storage as string[] | undefined) ?? []).map((s) => address(s, '--storage'));
  // Data streams of an outgoing migration whose request leaves the count open (cluster migrations).
  const streams = str(p, 'streams') !== undefined ? parseStreams(str(p, 'streams')!) : undefined;
  // The bulk channel's listener (migration/wire/protocol.ts "Bulk channel"): on unless --bulk off.
  const bulk = str(p, 'bulk', 'on')!;
  if (bulk !== 'on' && bulk !== 'off') throw new UsageError(`--bulk "${bulk}" is invalid (expected on or off)`);
  // A fixed bulk port (firewalled clusters); sources dial it on the host they reach --listen at,
  // so HOST is that host or a wildcard (0.0.0.0, [::]). Absent: --listen's host, a free port.
  const bulkListenText = str(p, 'bulk-listen');
  const bulkListen = bulkListenText === undefined ? undefined : hostPort(address(bulkListenText, '--bulk-listen'));
  if (bulkListen && bulk === 'off') throw new UsageError('--bulk-listen cannot be used with --bulk off (no bulk listener runs)');
  // The switchover journal (services/node-agent/outcome-journal.ts): a restarted agent still answers its sources.
  const stateDir = str(p, 'state-dir') ?? defaultStateDir(nodeId);
  checkStateDir(stateDir);
  // How long a direct migration's source asks the target what it did after a broken Complete
  // before it holds the VM paused for the operator (drover vm resume).
  const outcomeWaitMs = duration(p, 'outcome-wait');
  if (outcomeWaitMs !== undefined && outcomeWaitMs <= 0) throw new UsageError(`--outcome-wait "${str(p, 'outcome-wait')}" must be positive`);
  const server = new NodeAgentServer({ nodeId, hypervisor, capacity: { memBytes, vcpus }, ...(storage.length ? { storage } : {}), log: (e) => {
    // pino writes `msg` and the child's `node` binding itself: keep each key once per line
    const { msg, node: _node, ...fields } = e;
    log.info(fields, String(msg ?? ''));
  }, tls: tls.mode === 'tls' ? tls.source : undefined, ...(streams ? { streams } : {}), bulk: bulk === 'on', ...(bulkListen ? { bulkListen } : {}), stateDir, ...(outcomeWaitMs ? { outcomeWaitMs } : {}) });
  if (tls.mode === 'tls' && tls.source instanceof CertificateReloader) reloadOnHangup(tls.source, log);
  const bound = await server.start(listen).catch((err: unknown) => {
    // A port in use (or a host not of this machine) is the operator's to fix: one line naming the flag, exit 2.
    if (bulkListen && err instanceof BulkListenError) throw new UsageError(`--bulk-listen "${bulkListenText}": cannot listen (${err.reason})`);
    throw err;
  });
  if (server.bulkAddress) process.stdout.write(`drover agent ${nodeId} bulk channel on ${server.bulkAddress}\n`);
  // Tests and `drover up` read this line to learn the port.
  process.stdout.write(`drover agent ${nodeId} listening on ${bound}\n`);
  const metrics = metricsListen ? await startMetricsServer(metricsListen, undefined, { tls: files }) : undefined;
  if (metrics) process.stdout.write(`drover agent ${nodeId} metrics on ${metrics.address}\n`);
  let registration: { stop(): Promise<void> | void } | undefined;
  const etcd = str(p, 'etcd') ?? process.env.DROVER_ETCD_AGENT;
  if (etcd) {
    // Loaded only with --etcd: a standalone agent needs no etcd client.
    const reg = await import('../../services/node-agent/registration');
    const r = reg.startRegistration({ etcdUrl: etcd, nodeId, address: bound, info: async () => server.nodeInfo(), log, tls: files?.paths });
    server.attachCluster(r); // protocol 2: the target records ownership itself (migration/wire/protocol.ts)
    registration = r;
  }
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log.info('stopping');
  await registration?.stop();
  await server.stop();
  await metrics?.close();
  return 0;
}

/** The host (brackets of an IPv6 literal removed) and port of a checked HOST:PORT. */
function hostPort(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(':');
  return { host: text.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(text.slice(at + 1)) };
}

/** SIGHUP re-reads the certificates: new connections use them, running migrations keep theirs. */
function reloadOnHangup(reloader: CertificateReloader, log: Logger): void {
  process.on('SIGHUP', () => {
    const r = reloader.reload();
    if (r.ok) log.info({ cert: reloader.paths.cert, notAfter: r.files.notAfter.toISOString() }, 'certificates reloaded');
    else log.error({ cert: reloader.paths.cert, error: r.error.message }, 'certificate reload refused; keeping the previous certificates');
  });
}
