/** Writing and reading the PKI's PEM files: keys readable by their owner only, no silent overwrites. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DroverError, invalidArgument, notFound } from '../errors';

/** Fails with ALREADY_EXISTS naming the first of `files` that exists, unless `force`. */
export function refuseOverwrite(files: string[], force: boolean | undefined, hint: string): void {
  if (force) return;
  const present = files.find((f) => fs.existsSync(f));
  if (present) throw new DroverError('ALREADY_EXISTS', `${present} already exists (${hint})`);
}

/** Writes a certificate (mode 0644) and its key (mode 0600), creating the folder (0700). */
export function writeCertAndKey(certPath: string, certPem: string, keyPath: string, keyPem: string): void {
  fs.mkdirSync(path.dirname(certPath), { recursive: true, mode: 0o700 });
  writeFile(keyPath, keyPem, 0o600);
  writeFile(certPath, certPem, 0o644);
}

function writeFile(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode, flag: 'wx' });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}

/** Reads a PEM file; NOT_FOUND / INVALID_ARGUMENT name the file and what it should hold. */
export function readPem(file: string, what: string, label: RegExp): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw notFound(`${what} ${file} does not exist`);
    throw invalidArgument(`cannot read ${what} ${file}: ${(err as Error).message}`, err);
  }
  if (!label.test(text)) throw invalidArgument(`${what} ${file} is not PEM (no ${label.source.replace(/\\/g, '')} block)`);
  return text;
}

/** The PEM label of a certificate. */
export const CERT_LABEL = /-----BEGIN CERTIFICATE-----/;
/** The PEM labels of a private key (PKCS#8, SEC1 EC or PKCS#1 RSA). */
export const KEY_LABEL = /-----BEGIN (?:EC |RSA |ENCRYPTED )?PRIVATE KEY-----/;
