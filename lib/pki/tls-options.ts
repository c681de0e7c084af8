/**
 * Node `tls` options from the cluster's TLS files, for endpoints that are not gRPC: the metrics
 * endpoint over HTTPS (`https.createServer(tlsServerOptions(files), ...)`) and clients such as
 * etcd's (`tlsClientOptions(files)`; etcd's server certificate is checked by host name, as etcd
 * expects) or an agent's HTTPS endpoint (`tlsClientOptions(files, { role: 'node', name })`).
 */
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate, type SecureVersion, type TlsOptions } from 'node:tls';
import { checkIdentity, type ExpectedIdentity } from './identity';
import type { TlsFiles } from './tls-files';

/** Server options: our certificate, a client certificate from the cluster CA required. */
export function tlsServerOptions(files: TlsFiles, opts: { requireClientCert?: boolean; minVersion?: SecureVersion } = {}): TlsOptions {
  const require = opts.requireClientCert ?? true;
  return { ca: files.ca, cert: files.cert, key: files.key, minVersion: opts.minVersion ?? 'TLSv1.3', requestCert: require, rejectUnauthorized: require };
}

/**
 * Client options: our certificate, the cluster CA as the only trust anchor. With `expect`, the
 * server must state that Drover identity (the host name is not checked, see grpc-credentials.ts);
 * without it the usual host-name check applies (etcd, whose certificate has no Drover identity).
 */
export function tlsClientOptions(files: TlsFiles, expect?: ExpectedIdentity, minVersion: SecureVersion = 'TLSv1.2'): ConnectionOptions {
  const check = expect ? (_host: string, cert: PeerCertificate) => checkIdentity(cert, expect) : checkServerIdentity;
  return { ca: files.ca, cert: files.cert, key: files.key, minVersion, rejectUnauthorized: true, checkServerIdentity: check };
}
