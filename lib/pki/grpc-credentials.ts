/**
 * gRPC mutual TLS for Drover: server credentials that require a client certificate from the
 * cluster CA, channel credentials that accept a server only if its certificate is from the
 * cluster CA AND states the expected Drover identity, and `peerIdentity(call)` for handlers.
 *
 * Why the hostname check is replaced: agents are addressed by IP:port taken from etcd or a
 * flag, and an address says nothing about who answers there. The identity is the SAN URI
 * `spiffe://drover/<role>/<name>`, so the client checks that instead (chain validation against
 * the cluster CA still happens: grpc-js/Node reject an unverified chain before this check).
 * A source agent streaming a VM uses `clientCredentials(files, { role: 'node', name: target })`:
 * it cannot be tricked into sending memory to anything but that node of this cluster.
 *
 * Both accept either a loaded TlsFiles (fixed) or a CertificateReloader (new certificates are
 * used for new connections after `reload()`).
 */
import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import { checkIdentity, identityOf, type ExpectedIdentity, type Identity } from './identity';
import { CertificateReloader, type TlsFiles } from './tls-files';

/** Fixed files or a reloader. */
export type TlsSource = TlsFiles | CertificateReloader;

/**
 * Server credentials: TLS with the node's certificate; a client certificate signed by the CA is
 * required (a client without one, or with one from another CA or expired, fails the handshake).
 */
export function serverCredentials(source: TlsSource): grpc.ServerCredentials {
  if (source instanceof CertificateReloader) return grpc.experimental.createCertificateProviderServerCredentials(source, source, true);
  return grpc.ServerCredentials.createSsl(source.ca, [{ cert_chain: source.cert, private_key: source.key }], true);
}

/**
 * The check that replaces the hostname check: the server's certificate must state a Drover
 * identity, and the expected role/name when given. Returns an Error naming found vs expected.
 */
export function serverIdentityCheck(expect: ExpectedIdentity = {}): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const err = checkIdentity(cert, expect);
    return err && new Error(`server identity check failed: ${err.message}`);
  };
}

/** Channel credentials presenting our certificate and checking the server's identity (see the top). */
export function clientCredentials(source: TlsSource, expect: ExpectedIdentity = {}): grpc.ChannelCredentials {
  const verify = { checkServerIdentity: serverIdentityCheck(expect) };
  if (source instanceof CertificateReloader) return grpc.experimental.createCertificateProviderChannelCredentials(source, source, verify);
  return grpc.credentials.createSsl(source.ca, source.key, source.cert, verify);
}

/** A grpc-js server call, or a server interceptor's call: whatever has getAuthContext. */
export interface CallWithAuthContext {
  getAuthContext?(): { sslPeerCertificate?: PeerCertificate } | null;
}

/**
 * The verified client certificate's Drover identity (grpc-js ≥ 1.10 `getAuthContext()`, which is
 * empty unless TLS verified the peer), or undefined for plaintext / no certificate / no identity.
 */
export function peerIdentity(call: CallWithAuthContext): Identity | undefined {
  const cert = call.getAuthContext?.()?.sslPeerCertificate;
  return cert ? identityOf(cert) : undefined;
}
