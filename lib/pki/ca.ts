/**
 * The cluster CA: `initCa(dir)` creates `dir/ca.crt` and `dir/ca.key` (a self-signed CA,
 * ECDSA P-256 by default, 10 years), `loadCa(dir)` reads them back for issuing.
 * An existing CA is never replaced without `force`: every certificate it issued would stop
 * verifying. The CA certificate is what every agent, client and etcd trusts (`--trusted-ca-file`).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import * as path from 'node:path';
import { invalidArgument } from '../errors';
import { randomSerial, validityWindow, type ValidityOptions } from './cert-params';
import { generateKeyPair, importSigningKey, keyAlgorithm, KEY_TYPES, privateKeyPem, type KeyAlgorithm, type KeyType } from './keys';
import { CERT_LABEL, KEY_LABEL, readPem, refuseOverwrite, writeCertAndKey } from './pem-files';
import { x509, type CryptoKey } from './x509-lib';

/** Default CA validity: 10 years. */
export const CA_DAYS = 3650;

/** Default CA subject CN. */
export const CA_COMMON_NAME = 'drover-ca';

/** The CA certificate's file name inside the PKI folder. */
export const CA_CERT_FILE = 'ca.crt';
/** The CA key's file name inside the PKI folder. */
export const CA_KEY_FILE = 'ca.key';

/** Options of initCa. */
export interface InitCaOptions extends ValidityOptions {
  commonName?: string;
  keyType?: KeyType;
  force?: boolean;
}

/** Paths and facts of a CA on disk. */
export interface CaFiles {
  certPath: string;
  keyPath: string;
  subject: string;
  notAfter: Date;
  keyType: KeyType;
}

/** A CA loaded for issuing. */
export interface LoadedCa extends CaFiles {
  certPem: string;
  cert: X509Certificate;
  signingKey: CryptoKey;
  signingAlgorithm: KeyAlgorithm;
}

/** Creates a self-signed CA in `dir` (ca.crt 0644, ca.key 0600); ALREADY_EXISTS unless `force`. */
export async function initCa(dir: string, opts: InitCaOptions = {}): Promise<CaFiles> {
  const keyType = opts.keyType ?? 'ecdsa-p256';
  if (!KEY_TYPES.includes(keyType)) throw invalidArgument(`key type "${keyType}" is not one of ${KEY_TYPES.join(', ')}`);
  const commonName = opts.commonName ?? CA_COMMON_NAME;
  if (!/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/.test(commonName)) throw invalidArgument(`CA common name "${commonName}" must be 1-64 letters, digits, spaces, dots, dashes or underscores`);
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  refuseOverwrite([certPath, keyPath], opts.force, 'a CA is there already; replacing it invalidates every certificate it issued: use --force to do so');
  const { notBefore, notAfter } = validityWindow(opts, CA_DAYS);
  const keys = await generateKeyPair(keyType);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }, { O: ['drover'] }],
    notBefore,
    notAfter,
    signingAlgorithm: keyAlgorithm(keyType),
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeCertAndKey(certPath, cert.toString('pem'), keyPath, await privateKeyPem(keys.privateKey));
  return { certPath, keyPath, subject: cert.subject, notAfter, keyType };
}

/** Reads the CA of `dir` for issuing; NOT_FOUND / INVALID_ARGUMENT name the file that is missing or bad. */
export async function loadCa(dir: string): Promise<LoadedCa> {
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  const certPem = readPem(certPath, 'CA certificate', CERT_LABEL);
  const keyPem = readPem(keyPath, 'CA key', KEY_LABEL);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw invalidArgument(`CA certificate ${certPath} does not parse: ${(err as Error).message}`, err);
  }
  if (!cert.ca) throw invalidArgument(`CA certificate ${certPath} is not a CA (basicConstraints CA:FALSE or missing)`);
  const { key, type } = await importSigningKey(keyPem, `CA key ${keyPath}`);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw invalidArgument(`CA key ${keyPath} is not the key of ${certPath}`);
  return { certPath, keyPath, subject: cert.subject, notAfter: new Date(cert.validTo), keyType: type, certPem, cert, signingKey: key, signingAlgorithm: keyAlgorithm(type) };
}
