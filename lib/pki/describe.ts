/** A certificate summarised for people and scripts (`drover pki show`). */
import { X509Certificate } from 'node:crypto';
import { invalidArgument } from '../errors';
import { identityOf, type Identity } from './identity';
import { x509 } from './x509-lib';

/** What a certificate says, in plain values. */
export interface CertificateSummary {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  expired: boolean;
  ca: boolean;
  sans: { type: string; value: string }[];
  identity: Identity | null;
  keyType: string;
  extKeyUsage: string[];
  fingerprintSha256: string;
}

const EKU: Record<string, string> = { '1.3.6.1.5.5.7.3.1': 'serverAuth', '1.3.6.1.5.5.7.3.2': 'clientAuth' };

/** Summarises the first certificate of a PEM text; INVALID_ARGUMENT naming `what` if it does not parse. */
export function describeCertificate(pem: string, what: string, now = new Date()): CertificateSummary {
  let cert: X509Certificate;
  let parsed: x509.X509Certificate;
  try {
    cert = new X509Certificate(pem);
    parsed = new x509.X509Certificate(cert.raw);
  } catch (err) {
    throw invalidArgument(`${what} is not a PEM certificate: ${(err as Error).message}`, err);
  }
  const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
  const eku = parsed.getExtension(x509.ExtendedKeyUsageExtension);
  const notAfter = new Date(cert.validTo);
  const key = cert.publicKey.asymmetricKeyType ?? 'unknown';
  const curve = cert.publicKey.asymmetricKeyDetails?.namedCurve;
  return {
    subject: parsed.subject,
    issuer: parsed.issuer,
    serial: cert.serialNumber.toLowerCase(),
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: notAfter.toISOString(),
    expired: now > notAfter,
    ca: cert.ca,
    sans: san ? san.names.items.map((n) => ({ type: n.type === 'url' ? 'uri' : n.type, value: n.value })) : [],
    identity: identityOf(cert) ?? null,
    keyType: curve ? `${key} ${curve}` : key,
    extKeyUsage: eku ? Array.from(eku.usages, (u) => EKU[String(u)] ?? String(u)) : [],
    fingerprintSha256: cert.fingerprint256,
  };
}
