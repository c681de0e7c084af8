/**
 * QEMU's native migration transport as a node configures it: TLS (tls-creds-x509 made from the
 * agent's own node certificate) or, between --insecure agents only, plain TCP; '' = none (the
 * agents' tunnel carries QEMU's stream).
 *
 * QEMU (gnutls) reads a credentials directory: ca-cert.pem plus server-cert.pem/server-key.pem
 * (target, endpoint=server, verify-peer=on) or client-cert.pem/client-key.pem (source). They are
 * symlinks to the agent's files (a certificate reload is seen by the next migration), made in
 * the QEMU's private directory. Requirements on the node certificate (lib/pki/issue.ts profile):
 * keyUsage digitalSignature (ECDSA), extKeyUsage serverAuth + clientAuth, and, on the target, a
 * SAN IP/DNS entry for the host it listens on: the source QEMU checks it (tls-hostname). A
 * certificate without it makes `nativeConfig` fall back to the tunnel, with the reason.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as path from 'node:path';
import { DroverError, invalidArgument } from '../../lib/errors';
import type { NativeTransport } from '../stream-migration';

/** Paths of the agent's node identity (the files `drover agent --ca/--cert/--key` name). */
export interface NodeTlsPaths {
  ca: string;
  cert: string;
  key: string;
}

/** A node's native migration settings (QemuHypervisorOptions.migration). */
export interface QemuNativeConfig {
  /** 'tls': certificates below; 'tcp': plain text (only for --insecure agents); '': tunnel only. */
  transport: NativeTransport;
  /** Host the target QEMU listens on (the agent's advertised host). */
  host: string;
  /** The agent's node certificate (transport 'tls'). */
  tls?: NodeTlsPaths;
}

/** What `nativeConfig` decided, and why when it fell back to the tunnel. */
export interface NativeDecision {
  config: QemuNativeConfig;
  /** Set when native migration was asked for but is off (the tunnel is used). */
  fallbackReason?: string;
}

/** Wildcard listen hosts: the source cannot dial them (it uses the agent's address host instead). */
const WILDCARD_HOSTS: ReadonlySet<string> = new Set(['0.0.0.0', '::', '[::]', '']);

/** True when `host` is a wildcard address. */
export function isWildcardHost(host: string): boolean {
  return WILDCARD_HOSTS.has(host);
}

/**
 * The native configuration of a node: `want` 'tls' needs `tls` paths whose certificate is valid
 * for `host` (SAN IP or DNS), else the tunnel (fallbackReason says why); 'tcp' is plain text.
 */
export function nativeConfig(want: NativeTransport, host: string, tls?: NodeTlsPaths): NativeDecision {
  if (want === '') return { config: { transport: '', host } };
  if (want === 'tcp') return { config: { transport: 'tcp', host } };
  if (!tls) return { config: { transport: '', host }, fallbackReason: 'no node certificate (native TLS migration needs --ca/--cert/--key)' };
  if (isWildcardHost(host)) return { config: { transport: 'tls', host, tls } };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(fs.readFileSync(tls.cert));
  } catch (err) {
    return { config: { transport: '', host }, fallbackReason: `cannot read ${tls.cert}: ${(err as Error).message}` };
  }
  const bare = host.replace(/^\[|\]$/g, '');
  const ok = isIP(bare) ? cert.checkIP(bare) !== undefined : cert.checkHost(bare, { subject: 'never' }) !== undefined;
  if (!ok) return { config: { transport: '', host }, fallbackReason: `node certificate ${tls.cert} has no SAN for ${host} (the source QEMU checks it); issue it with --host ${host}` };
  return { config: { transport: 'tls', host, tls } };
}

/** Characters a DN value may not hold here (QEMU would print them escaped; Drover names never have them). */
const DN_SPECIAL = /[,+\\"<>;=\n]/;

/**
 * A certificate's subject DN as QEMU's tls-authz sees it (gnutls: attributes in certificate
 * order, "CN=node.a,O=drover,OU=node"). INVALID_ARGUMENT for a subject with characters that
 * would need escaping or several values in one RDN.
 */
export function qemuSubjectDn(subject: string): string {
  const parts = subject.split('\n').filter((l) => l);
  for (const p of parts) {
    const eq = p.indexOf('=');
    if (eq <= 0 || DN_SPECIAL.test(p.slice(eq + 1))) throw invalidArgument(`certificate subject "${subject.replace(/\n/g, ', ')}" cannot be matched exactly by QEMU's tls-authz`);
  }
  if (!parts.length) throw invalidArgument('certificate has an empty subject');
  return parts.join(',');
}

/** The subject DN of a DER or PEM certificate, as QEMU's tls-authz sees it. */
export function certificateDn(cert: Buffer | string): string {
  return qemuSubjectDn(new X509Certificate(cert).subject);
}

/**
 * Makes `dir` a QEMU credentials directory for `endpoint` from the node's files (symlinks):
 * ca-cert.pem and server-*.pem or client-*.pem. Returns `dir`.
 */
export function linkCredentials(dir: string, endpoint: 'server' | 'client', tls: NodeTlsPaths): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const link = (target: string, name: string) => {
    const at = path.join(dir, name);
    fs.rmSync(at, { force: true });
    try {
      fs.symlinkSync(path.resolve(target), at);
    } catch (err) {
      throw new DroverError('INTERNAL', `QEMU TLS credentials: cannot link ${at} -> ${target}`, { cause: err });
    }
  };
  link(tls.ca, 'ca-cert.pem');
  link(tls.cert, `${endpoint}-cert.pem`);
  link(tls.key, `${endpoint}-key.pem`);
  return dir;
}
