/**
 * The PKI of a local cluster (`drover up`, `drover demo`, LocalCluster): a CA in DIR/pki (reused
 * when present, so `drover pki issue --dir DIR/pki ...` adds identities to that cluster) and one
 * identity per process, each issued once and reused while it is valid:
 *
 * | file | identity (CN) | used by |
 * |---|---|---|
 * | `<node-id>.crt` | node.<node-id>, SAN 127.0.0.1 | the agent: gRPC server and client, etcd, /metrics |
 * | `migrator-N.crt`, `scheduler-N.crt` | controller.<name>, SAN 127.0.0.1 | the control-plane replicas |
 * | `admin.crt` | admin.admin | the CLI (DIR/drover.env), the launcher; etcd's root user |
 * | `monitor.crt` | monitor.monitor | Prometheus (DIR/prometheus.yml) |
 * | `etcd.crt` | no Drover identity, SAN 127.0.0.1 / localhost | etcd's client and peer URLs |
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CA_CERT_FILE, CA_KEY_FILE, initCa } from '../lib/pki/ca';
import { issueIdentity, issueServerCertificate } from '../lib/pki/issue';
import { commonNameOf, type Role } from '../lib/pki/identity';
import { loadTlsFiles, type TlsFilePaths } from '../lib/pki/tls-files';
import type { LocalEtcdTls } from '../cluster/local-etcd';
import type { EtcdIdentities } from '../cluster/etcd-rbac';

/** Hosts every local identity serves on. */
const LOCAL_HOSTS = ['127.0.0.1'];

/** The identities of a local cluster, as file paths. */
export interface LocalPki {
  dir: string;
  caFile: string;
  admin: TlsFilePaths;
  monitor: TlsFilePaths;
  etcd: LocalEtcdTls;
  /** The identity of process `name` (a node id, `migrator-N`, `scheduler-N`). */
  of(name: string): TlsFilePaths;
  /** The etcd users and roles of these identities (cluster/etcd-rbac.ts). */
  etcdIdentities: EtcdIdentities;
}

/** True when `name`'s files exist, load, match the CA and are valid for at least a day. */
function usable(paths: TlsFilePaths, needsIdentity: boolean): boolean {
  if (!fs.existsSync(paths.cert) || !fs.existsSync(paths.key)) return false;
  try {
    loadTlsFiles(paths, { requireIdentity: needsIdentity, now: new Date(Date.now() + 86_400_000) });
    return true;
  } catch {
    return false;
  }
}

/** Creates (or completes) DIR's PKI for `nodes`, `controllers` (process names) and the fixed identities. */
export async function ensureLocalPki(dir: string, nodes: string[], controllers: string[]): Promise<LocalPki> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caFile = path.join(dir, CA_CERT_FILE);
  if (!fs.existsSync(caFile) || !fs.existsSync(path.join(dir, CA_KEY_FILE))) await initCa(dir);
  const files = (name: string): TlsFilePaths => ({ ca: caFile, cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) });
  const ensure = async (role: Role, name: string, hosts: string[] = LOCAL_HOSTS): Promise<TlsFilePaths> => {
    const p = files(name);
    if (!usable(p, true)) await issueIdentity(dir, { role, name, hosts, force: true });
    return p;
  };
  for (const n of nodes) await ensure('node', n);
  for (const c of controllers) await ensure('controller', c);
  const admin = await ensure('admin', 'admin', []);
  const monitor = await ensure('monitor', 'monitor', []);
  const etcdFiles = files('etcd');
  if (!usable(etcdFiles, false)) await issueServerCertificate(dir, 'etcd', { hosts: ['127.0.0.1', 'localhost'], force: true });
  return {
    dir, caFile, admin, monitor,
    etcd: { caFile, certFile: etcdFiles.cert, keyFile: etcdFiles.key, clientCertFile: admin.cert, clientKeyFile: admin.key },
    of: files,
    etcdIdentities: {
      admin: commonNameOf({ role: 'admin', name: 'admin' }),
      controllers: controllers.map((name) => commonNameOf({ role: 'controller', name })),
      monitors: [commonNameOf({ role: 'monitor', name: 'monitor' })],
      nodes: nodes.map((nodeId) => ({ cn: commonNameOf({ role: 'node', name: nodeId }), nodeId })),
    },
  };
}
