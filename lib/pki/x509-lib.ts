/**
 * The one entry point to @peculiar/x509: loads the Reflect metadata polyfill it needs
 * before loading it, and makes Node's WebCrypto its crypto provider. Every PKI module imports
 * `x509` from here, never from the package directly.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/** Node's WebCrypto (the provider @peculiar/x509 signs and hashes with). */
export const crypto = webcrypto;

/** A WebCrypto key. */
export type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(crypto);

/** The @peculiar/x509 namespace, ready to use. */
export { x509 };
