/**
 * Who a certificate speaks for. A Drover identity is a role and a name, carried in exactly one
 * SAN URI `spiffe://drover/<role>/<name>` (the SPIFFE ID convention; the trust domain is
 * `drover`). The Subject CN repeats it as `<role>.<name>` for tools that only read the CN (etcd
 * 3.4 `--client-cert-auth` takes the CN as the user name). Drover itself only trusts the URI.
 */
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { invalidArgument } from '../errors';
import { x509 } from './x509-lib';

/** The SPIFFE trust domain of every Drover identity. */
export const TRUST_DOMAIN = 'drover';

/** The four roles of a Drover cluster, see lib/pki/authz.ts for what each may call. */
export const ROLES = ['admin', 'controller', 'node', 'monitor'] as const;

/** A role: admin, controller, node or monitor. */
export type Role = (typeof ROLES)[number];

/** A role and a name, as a certificate states them. */
export interface Identity {
  role: Role;
  name: string;
}

/** Identity names: a DNS label, lower case (so it is also a host name and an etcd user). */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** True when `s` is one of the four roles. */
export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

/** Checks a role and a name, throwing INVALID_ARGUMENT naming the bad one. */
export function validateIdentity(role: string, name: string): Identity {
  if (!isRole(role)) throw invalidArgument(`role "${role}" is not one of ${ROLES.join(', ')}`);
  if (!NAME_PATTERN.test(name)) throw invalidArgument(`name "${name}" must match [a-z0-9][a-z0-9-]{0,62}`);
  if (name === 'ca') throw invalidArgument('name "ca" is reserved for the CA files (ca.crt, ca.key)');
  return { role, name };
}

/** The SAN URI of an identity: `spiffe://drover/<role>/<name>`. */
export function spiffeId(id: Identity): string {
  return `spiffe://${TRUST_DOMAIN}/${id.role}/${id.name}`;
}

/** The Subject CN of an identity: `<role>.<name>` (etcd's user name for this certificate). */
export function commonNameOf(id: Identity): string {
  return `${id.role}.${id.name}`;
}

/** Parses a Drover SPIFFE ID; undefined for any other URI. */
export function parseSpiffeId(uri: string): Identity | undefined {
  const m = /^spiffe:\/\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(uri);
  if (!m || m[1] !== TRUST_DOMAIN || !isRole(m[2]) || !NAME_PATTERN.test(m[3])) return undefined;
  return { role: m[2], name: m[3] };
}

/** Anything a certificate arrives as: Node's X509Certificate, a TLS peer certificate, DER or PEM. */
export type CertificateInput = X509Certificate | PeerCertificate | Buffer | string;

/** DER bytes of a certificate in any of the accepted forms. */
export function certificateDer(cert: CertificateInput): Buffer {
  if (cert instanceof X509Certificate) return cert.raw;
  if (typeof cert === 'string') return new X509Certificate(cert).raw;
  if (Buffer.isBuffer(cert)) return cert;
  if (cert.raw) return cert.raw;
  throw invalidArgument('peer certificate has no raw DER bytes (an empty or unverified peer certificate)');
}

/** Every URI SAN of a certificate. */
export function uriSans(cert: CertificateInput): string[] {
  const parsed = new x509.X509Certificate(certificateDer(cert));
  const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
  return san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : [];
}

/**
 * The Drover identity a certificate states, or undefined when it states none, or more than one
 * (an ambiguous certificate speaks for nobody). Does not check the signature or validity: use it
 * on certificates TLS has already verified against the cluster CA.
 */
export function identityOf(cert: CertificateInput | undefined): Identity | undefined {
  if (cert === undefined) return undefined;
  let uris: string[];
  try {
    uris = uriSans(cert);
  } catch {
    return undefined;
  }
  const ids = uris.filter((u) => u.startsWith('spiffe://')).map(parseSpiffeId);
  return ids.length === 1 ? ids[0] : undefined;
}

/** What a peer must be: a role and optionally a name. */
export interface ExpectedIdentity {
  role?: Role;
  name?: string;
}

/** Formats an identity for messages: `node/a`, or "no Drover identity". */
export function describeIdentity(id: Identity | undefined): string {
  return id ? `${id.role}/${id.name}` : 'no Drover identity';
}

/**
 * Checks a (TLS-verified) peer certificate against what the caller expects; returns an Error
 * naming what was found and what was expected, or undefined when the peer matches.
 */
export function checkIdentity(cert: CertificateInput | undefined, expect: ExpectedIdentity): Error | undefined {
  const id = identityOf(cert);
  const wanted = `${expect.role ?? '*'}/${expect.name ?? '*'}`;
  const found = id ? `spiffe://${TRUST_DOMAIN}/${describeIdentity(id)}` : describeIdentity(id);
  if (!id) return new Error(`peer certificate has ${found} (expected ${wanted})`);
  if ((expect.role && id.role !== expect.role) || (expect.name !== undefined && id.name !== expect.name)) {
    return new Error(`peer certificate is ${found}, expected ${wanted}`);
  }
  return undefined;
}
