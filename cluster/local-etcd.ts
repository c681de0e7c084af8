/**
 * Starts a real local etcd process on free ports with its own data directory, for `drover up`
 * and the tests. No mocks: this is the etcd binary CI exercises (Debian `etcd-server`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { freePort } from '../lib/free-port';
import * as os from 'node:os';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import { unavailable } from '../lib/errors';
import { quietIpServerNameWarning } from './etcd';

/**
 * TLS for a local etcd (PEM file paths): client and peer URLs serve TLS with certificates of the
 * cluster CA and require client certificates (etcd then takes the user name from their CN).
 */
export interface LocalEtcdTls {
  /** The cluster CA: etcd trusts client and peer certificates it signed. */
  caFile: string;
  /** etcd's own certificate (server and peer; SAN 127.0.0.1) and key. */
  certFile: string;
  keyFile: string;
  /** A client identity for the readiness probe (the admin's). */
  clientCertFile: string;
  clientKeyFile: string;
}

/** etcd3 client credentials from PEM files. */
export function etcdCredentials(tls: { caFile: string; clientCertFile: string; clientKeyFile: string }): { rootCertificate: Buffer; certChain: Buffer; privateKey: Buffer } {
  return { rootCertificate: fs.readFileSync(tls.caFile), certChain: fs.readFileSync(tls.clientCertFile), privateKey: fs.readFileSync(tls.clientKeyFile) };
}

/** A running local etcd. */
export interface LocalEtcd {
  /** Client URL (http://127.0.0.1:PORT, or https:// with TLS). */
  url: string;
  dataDir: string;
  process: ChildProcess;
  /** Stops etcd (SIGTERM, then SIGKILL) and, if it made the directory, removes it. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1. */
export { freePort };

/** The etcd binary: $DROVER_ETCD_BIN, else `etcd` on PATH. */
export function etcdBinary(): string {
  if (process.env.DROVER_ETCD_BIN) return process.env.DROVER_ETCD_BIN;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, 'etcd');
    if (fs.existsSync(p)) return p;
  }
  throw unavailable('no etcd binary found on PATH (install etcd-server, or give --etcd URL of a running etcd)');
}

/** Starts etcd in `dir` (a new temp dir when absent) and waits until it serves. */
export async function startLocalEtcd(opts: { dir?: string; log?: string; tls?: LocalEtcdTls } = {}): Promise<LocalEtcd> {
  const bin = etcdBinary();
  const ownDir = !opts.dir;
  const dataDir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'drover-etcd-'));
  fs.mkdirSync(dataDir, { recursive: true });
  const clientPort = await freePort();
  const peerPort = await freePort();
  const scheme = opts.tls ? 'https' : 'http';
  const url = `${scheme}://127.0.0.1:${clientPort}`;
  const peerUrl = `${scheme}://127.0.0.1:${peerPort}`;
  const t = opts.tls;
  const tlsArgs = t ? [
    '--cert-file', t.certFile, '--key-file', t.keyFile, '--trusted-ca-file', t.caFile, '--client-cert-auth',
    '--peer-cert-file', t.certFile, '--peer-key-file', t.keyFile, '--peer-trusted-ca-file', t.caFile, '--peer-client-cert-auth',
  ] : [];
  const logFd = fs.openSync(opts.log ?? path.join(dataDir, 'etcd.log'), 'a');
  const child = spawn(bin, [
    '--name', 'drover', '--data-dir', path.join(dataDir, 'data'),
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `drover=${peerUrl}`, '--initial-cluster-state', 'new',
    '--heartbeat-interval', '50', '--election-timeout', '500', ...tlsArgs,
  ], { stdio: ['ignore', logFd, logFd], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' } });
  fs.closeSync(logFd);
  let exited = false;
  child.once('exit', () => { exited = true; });
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { child.kill('SIGKILL'); }, 3000);
        if (exited) { clearTimeout(t); resolve(); return; }
        child.once('exit', () => { clearTimeout(t); resolve(); });
      });
    }
    if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  if (t) quietIpServerNameWarning();
  const client = new Etcd3({ hosts: url, ...(t ? { credentials: etcdCredentials(t) } : {}) });
  const deadline = Date.now() + 15_000;
  try {
    for (;;) {
      if (exited) throw unavailable(`etcd exited at start (see ${path.join(dataDir, 'etcd.log')})`);
      try {
        await Promise.race([client.get('/drover-probe').exec(), new Promise((_, r) => setTimeout(() => r(new Error('timeout')), 1000))]);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw unavailable(`etcd did not start within 15 s: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  } finally {
    client.close();
  }
  return { url, dataDir, process: child, stop };
}
