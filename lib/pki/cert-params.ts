/** Serial numbers and validity windows shared by the CA and the identities it issues. */
import { randomBytes } from 'node:crypto';
import { invalidArgument } from '../errors';

/** How far notBefore is backdated, so peers with a slightly slow clock accept a new certificate. */
export const CLOCK_SKEW_MS = 5 * 60_000;

/** A random positive 128-bit serial number, as hex. */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x01;
  return b.toString('hex');
}

/** Validity: `days` from now (backdated by CLOCK_SKEW_MS), or explicit bounds (tests, renewals). */
export interface ValidityOptions {
  days?: number;
  notBefore?: Date;
  notAfter?: Date;
}

/** The notBefore/notAfter of a certificate; INVALID_ARGUMENT for a bad day count or an empty window. */
export function validityWindow(opts: ValidityOptions, defaultDays: number, now = Date.now()): { notBefore: Date; notAfter: Date } {
  const days = opts.days ?? defaultDays;
  if (!Number.isInteger(days) || days < 1 || days > 36500) throw invalidArgument(`validity of ${days} days must be a whole number from 1 to 36500`);
  const notBefore = opts.notBefore ?? new Date(now - CLOCK_SKEW_MS);
  const notAfter = opts.notAfter ?? new Date(now + days * 86_400_000);
  if (!(notAfter.getTime() > notBefore.getTime())) throw invalidArgument(`notAfter ${notAfter.toISOString()} is not after notBefore ${notBefore.toISOString()}`);
  return { notBefore, notAfter };
}
