/**
 * The three PEM files a TLS endpoint needs (the cluster CA, its own certificate, its key),
 * loaded and checked together so a mistake is reported at start-up naming the file, not as a
 * handshake failure later. `CertificateReloader` re-reads them on demand (SIGHUP, a timer) and
 * keeps the last good set when the new one is bad; it also implements grpc-js's
 * CertificateProvider interface, so a gRPC server or channel built on it picks up new files.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { DroverError, failedPrecondition, invalidArgument } from '../errors';
import { describeIdentity, identityOf, type Identity } from './identity';
import { CERT_LABEL, KEY_LABEL, readPem } from './pem-files';

/** Where the files are. */
export interface TlsFilePaths {
  ca: string;
  cert: string;
  key: string;
}

/** The loaded files: PEM bytes as TLS stacks take them, and what the certificate says. */
export interface TlsFiles {
  paths: TlsFilePaths;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** The Drover identity of `cert`, undefined if it states none (an etcd server certificate). */
  identity: Identity | undefined;
  notAfter: Date;
}

/** Options of loadTlsFiles. */
export interface LoadTlsOptions {
  /** Also require a Drover identity in the certificate (agents, controllers, CLI). */
  requireIdentity?: boolean;
  /** The clock, for tests. */
  now?: Date;
}

function parseCert(pem: string, file: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw invalidArgument(`certificate ${file} does not parse: ${(err as Error).message}`, err);
  }
}

/**
 * Reads and cross-checks CA, certificate and key: each exists and is PEM, the key is the
 * certificate's, the CA issued the certificate, and it is valid now. Errors name the file.
 */
export function loadTlsFiles(paths: TlsFilePaths, opts: LoadTlsOptions = {}): TlsFiles {
  const caPem = readPem(paths.ca, 'CA certificate', CERT_LABEL);
  const certPem = readPem(paths.cert, 'certificate', CERT_LABEL);
  const keyPem = readPem(paths.key, 'private key', KEY_LABEL);
  const ca = parseCert(caPem, paths.ca);
  const cert = parseCert(certPem, paths.cert);
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    throw invalidArgument(`private key ${paths.key} does not parse: ${(err as Error).message}`, err);
  }
  if (!matches) throw invalidArgument(`private key ${paths.key} is not the key of certificate ${paths.cert}`);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw failedPrecondition(`certificate ${paths.cert} (issuer "${cert.issuer.replace(/\n/g, ', ')}") is not issued by the CA in ${paths.ca}`);
  }
  const now = opts.now ?? new Date();
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  if (now < notBefore) throw failedPrecondition(`certificate ${paths.cert} is not valid before ${notBefore.toISOString()}`);
  if (now > notAfter) throw failedPrecondition(`certificate ${paths.cert} expired at ${notAfter.toISOString()}`);
  const identity = identityOf(cert);
  if (opts.requireIdentity && !identity) throw failedPrecondition(`certificate ${paths.cert} has ${describeIdentity(identity)} (no single spiffe://drover/<role>/<name> SAN URI)`);
  return { paths, ca: Buffer.from(caPem), cert: Buffer.from(certPem), key: Buffer.from(keyPem), identity, notAfter };
}

/** The outcome of a reload: the files now in use, and the error if the new ones were refused. */
export type ReloadResult = { ok: true; files: TlsFiles } | { ok: false; files: TlsFiles; error: DroverError };

type CaListener = (update: { caCertificate: Buffer } | null) => void;
type IdentityListener = (update: { certificate: Buffer; privateKey: Buffer } | null) => void;

/**
 * Holds the current TLS files; `reload()` re-reads them and keeps the last good set when the
 * new set fails loadTlsFiles. Pass it to serverCredentials/clientCredentials for hot reload.
 */
export class CertificateReloader {
  private files: TlsFiles;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();

  /** Loads the files once; throws (naming the file) if the first set is bad. */
  constructor(readonly paths: TlsFilePaths, private readonly opts: LoadTlsOptions = {}) {
    this.files = loadTlsFiles(paths, opts);
  }

  /** The files in use. */
  current(): TlsFiles {
    return this.files;
  }

  /** Re-reads the files; on success they replace the current set and listeners are told. */
  reload(): ReloadResult {
    try {
      this.files = loadTlsFiles(this.paths, this.opts);
    } catch (err) {
      return { ok: false, files: this.files, error: DroverError.from(err) };
    }
    for (const l of this.caListeners) l({ caCertificate: this.files.ca });
    for (const l of this.identityListeners) l({ certificate: this.files.cert, privateKey: this.files.key });
    return { ok: true, files: this.files };
  }

  /**
   * grpc-js CertificateProvider: the CA now (in a microtask: grpc-js registers its watcher only
   * after this returns, so a synchronous first update would be lost) and after each reload.
   */
  addCaCertificateListener(l: CaListener): void {
    this.caListeners.add(l);
    queueMicrotask(() => { if (this.caListeners.has(l)) l({ caCertificate: this.files.ca }); });
  }

  /** grpc-js CertificateProvider. */
  removeCaCertificateListener(l: CaListener): void {
    this.caListeners.delete(l);
  }

  /** grpc-js CertificateProvider: the certificate and key now (in a microtask) and after each reload. */
  addIdentityCertificateListener(l: IdentityListener): void {
    this.identityListeners.add(l);
    queueMicrotask(() => { if (this.identityListeners.has(l)) l({ certificate: this.files.cert, privateKey: this.files.key }); });
  }

  /** grpc-js CertificateProvider. */
  removeIdentityCertificateListener(l: IdentityListener): void {
    this.identityListeners.delete(l);
  }
}

/**
 * The process's TLS files from DROVER_CA, DROVER_CERT and DROVER_KEY (what `drover up` writes
 * into DIR/drover.env and gives each process it starts); undefined when none is set. Only some
 * set is an error naming the missing ones.
 */
export function tlsPathsFromEnv(env: NodeJS.ProcessEnv = process.env): TlsFilePaths | undefined {
  const { DROVER_CA: ca, DROVER_CERT: cert, DROVER_KEY: key } = env;
  if (!ca && !cert && !key) return undefined;
  const missing = [['DROVER_CA', ca], ['DROVER_CERT', cert], ['DROVER_KEY', key]].filter(([, v]) => !v).map(([n]) => n);
  if (missing.length) throw invalidArgument(`${missing.join(' and ')} not set: TLS needs DROVER_CA, DROVER_CERT and DROVER_KEY together`);
  return { ca: ca!, cert: cert!, key: key! };
}
