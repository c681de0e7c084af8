/**
 * Key pairs for the cluster PKI: generation, PKCS#8 PEM export and import for signing.
 * ECDSA P-256 everywhere by default (every TLS stack, Go's included, accepts it); Ed25519 for a
 * CA on request.
 */
import { createPrivateKey } from 'node:crypto';
import { invalidArgument } from '../errors';
import { crypto, x509, type CryptoKey } from './x509-lib';

/** Key algorithms the PKI issues. */
export type KeyType = 'ecdsa-p256' | 'ed25519';

/** The key types, for validation and usage text. */
export const KEY_TYPES: readonly KeyType[] = ['ecdsa-p256', 'ed25519'];

/** A WebCrypto algorithm description (generation, import and signing). */
export interface KeyAlgorithm {
  name: string;
  namedCurve?: string;
  hash?: string;
}

/** The WebCrypto algorithm of a key type; also its signing algorithm (SHA-256 for ECDSA). */
export function keyAlgorithm(type: KeyType): KeyAlgorithm {
  return type === 'ed25519' ? { name: 'Ed25519' } : { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
}

/** A fresh, extractable key pair. */
export async function generateKeyPair(type: KeyType): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(keyAlgorithm(type), true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** A key pair as WebCrypto returns it. */
export interface CryptoKeyPair {
  publicKey: CryptoKey;
  privateKey: CryptoKey;
}

/** A private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** A PEM private key imported for signing, with its type; INVALID_ARGUMENT naming `what` if unusable. */
export async function importSigningKey(pem: string, what: string): Promise<{ key: CryptoKey; type: KeyType }> {
  let type: KeyType;
  let der: Buffer;
  try {
    const k = createPrivateKey(pem);
    const curve = k.asymmetricKeyDetails?.namedCurve;
    if (k.asymmetricKeyType === 'ed25519') type = 'ed25519';
    else if (k.asymmetricKeyType === 'ec' && curve === 'prime256v1') type = 'ecdsa-p256';
    else throw new Error(`unsupported key type ${k.asymmetricKeyType}${curve ? ` (${curve})` : ''}; expected ${KEY_TYPES.join(' or ')}`);
    der = k.export({ format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw invalidArgument(`${what} is not a usable private key: ${(err as Error).message}`, err);
  }
  const key = await crypto.subtle.importKey('pkcs8', der, keyAlgorithm(type), false, ['sign']);
  return { key, type };
}
