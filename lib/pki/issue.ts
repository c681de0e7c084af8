/**
 * Issuing identity certificates from the cluster CA: `issueIdentity(dir, { role, name })` writes
 * `dir/<name>.crt` and `dir/<name>.key`.
 *
 * CERTIFICATE PROFILE (what Drover checks; follow it when a cert-manager, Vault or other CA
 * issues Drover's certificates instead of `drover pki`):
 *
 *   Field                 Value
 *   --------------------  -------------------------------------------------------------------
 *   Key                   ECDSA P-256 (Drover issues these; any key TLS 1.3 accepts works)
 *   Subject CN            `<role>.<name>`, e.g. `node.a`: etcd 3.4 --client-cert-auth takes the
 *                         CN as the etcd user name, so create etcd users with these names. A dot,
 *                         not a colon: etcdctl splits `user:password` on the colon. O=drover.
 *   SAN URI               exactly one `spiffe://drover/<role>/<name>`: THE identity. role is
 *                         admin | controller | node | monitor; name matches
 *                         [a-z0-9][a-z0-9-]{0,62} ("ca" is reserved). A certificate with zero or
 *                         two Drover URIs has no identity and is refused.
 *   SAN DNS / IP          one per `--host` (the addresses an agent serves on); clients do not
 *                         check them (agents are addressed by IP:port and identity is the URI),
 *                         but etcd and HTTPS clients do, so list them on server certificates.
 *   basicConstraints      critical, CA:FALSE
 *   keyUsage              critical, digitalSignature
 *   extKeyUsage           serverAuth + clientAuth for every role (nodes serve and call; giving
 *                         the others serverAuth too keeps one profile, and a client never trusts
 *                         a server for its EKU alone: it checks the role in the URI)
 *   Validity              365 days by default (`--days`); notBefore backdated 5 minutes
 *   Serial                128 random bits
 *   Issuer                the cluster CA (ca.crt): every agent, client and etcd trusts only it;
 *                         an intermediate works if the leaf file holds the chain.
 *
 * cert-manager: a Certificate with `uris: [spiffe://drover/node/a]`, `commonName: node.a`,
 * `ipAddresses`/`dnsNames` for the hosts, `privateKey: {algorithm: ECDSA, size: 256}`,
 * `usages: [server auth, client auth, digital signature]`. Vault: a PKI role with
 * `allowed_uri_sans=spiffe://drover/*`, `allow_any_name=true` for the CNs, `key_type=ec`,
 * `server_flag=true client_flag=true`, then `vault write pki/issue/drover common_name=node.a
 * uri_sans=spiffe://drover/node/a ip_sans=10.0.0.5`. See deploy/pki.md.
 */
import { isIP } from 'node:net';
import * as path from 'node:path';
import { invalidArgument } from '../errors';
import { loadCa } from './ca';
import { randomSerial, validityWindow, type ValidityOptions } from './cert-params';
import { commonNameOf, spiffeId, validateIdentity, type Identity, type Role } from './identity';
import { generateKeyPair, privateKeyPem } from './keys';
import { refuseOverwrite, writeCertAndKey } from './pem-files';
import { x509 } from './x509-lib';

/** Default identity validity: one year. */
export const IDENTITY_DAYS = 365;

/** What to issue. */
export interface IssueOptions extends ValidityOptions {
  role: Role | string;
  name: string;
  /** IPv4/IPv6 addresses and DNS names the holder serves on: SAN IP / SAN DNS entries. */
  hosts?: string[];
  /** Replace an existing `<name>.crt` / `<name>.key` (re-issuing, rotation). */
  force?: boolean;
}

/** An issued identity on disk. */
export interface IssuedIdentity extends Identity {
  certPath: string;
  keyPath: string;
  uri: string;
  commonName: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

const DNS_NAME = /^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A host as a SAN entry: `ip` for IPv4/IPv6 literals, `dns` for host names; INVALID_ARGUMENT otherwise. */
export function hostSan(host: string): { type: 'ip' | 'dns'; value: string } {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(bare)) return { type: 'ip', value: bare };
  if (DNS_NAME.test(host) && !/^[0-9.]+$/.test(host)) return { type: 'dns', value: host.toLowerCase() };
  throw invalidArgument(`host "${host}" is not an IPv4 address, an IPv6 address or a DNS name`);
}

/** Issues `<name>.crt` + `<name>.key` in `dir`, signed by the CA there (see the profile above). */
export async function issueIdentity(dir: string, opts: IssueOptions): Promise<IssuedIdentity> {
  const id = validateIdentity(opts.role, opts.name);
  const issued = await issueLeaf(dir, id.name, { cn: commonNameOf(id), ou: id.role, uri: spiffeId(id) }, opts);
  return { ...id, ...issued, uri: spiffeId(id), commonName: commonNameOf(id) };
}

/**
 * A server certificate without a Drover identity (no SAN URI; CN = `name`): etcd's own
 * certificate for its client and peer URLs. A client presenting it is no etcd user and no
 * Drover role, so it authorizes nothing.
 */
export async function issueServerCertificate(dir: string, name: string, opts: Omit<IssueOptions, 'role' | 'name'>): Promise<{ certPath: string; keyPath: string }> {
  validateIdentity('node', name); // the same file-name rule
  return issueLeaf(dir, name, { cn: name, ou: 'server' }, opts);
}

async function issueLeaf(dir: string, fileName: string, subject: { cn: string; ou: string; uri?: string }, opts: Omit<IssueOptions, 'role' | 'name'>): Promise<{ certPath: string; keyPath: string; serial: string; notBefore: Date; notAfter: Date }> {
  const sans = [...(subject.uri ? [{ type: 'url' as const, value: subject.uri }] : []), ...(opts.hosts ?? []).map(hostSan)];
  const { notBefore, notAfter } = validityWindow(opts, IDENTITY_DAYS);
  const certPath = path.join(dir, `${fileName}.crt`);
  const keyPath = path.join(dir, `${fileName}.key`);
  refuseOverwrite([certPath, keyPath], opts.force, 'use --force to issue a new certificate and key in its place');
  const ca = await loadCa(dir);
  const keys = await generateKeyPair('ecdsa-p256');
  const serial = randomSerial();
  const caCert = new x509.X509Certificate(ca.cert.raw);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: [{ CN: [subject.cn] }, { O: ['drover'] }, { OU: [subject.ou] }],
    issuer: caCert.subjectName,
    notBefore,
    notAfter,
    signingAlgorithm: ca.signingAlgorithm,
    publicKey: keys.publicKey,
    signingKey: ca.signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      ...(sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  writeCertAndKey(certPath, cert.toString('pem'), keyPath, await privateKeyPem(keys.privateKey));
  return { certPath, keyPath, serial, notBefore, notAfter };
}
