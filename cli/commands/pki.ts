/**
 * `drover pki init|issue|show`: the cluster CA and identity certificates (lib/pki; the
 * certificate profile is documented in lib/pki/issue.ts and deploy/pki.md).
 */
import * as fs from 'node:fs';
import { parse, required, int, flag, str, UsageError, type Parsed } from '../args';
import { initCa } from '../../lib/pki/ca';
import { issueIdentity } from '../../lib/pki/issue';
import { describeCertificate, type CertificateSummary } from '../../lib/pki/describe';
import { isRole, ROLES } from '../../lib/pki/identity';
import { KEY_TYPES, type KeyType } from '../../lib/pki/keys';
import { notFound } from '../../lib/errors';

/** Usage of `drover pki`. */
export const PKI_USAGE = `drover pki init --dir D [--days 3650] [--key-type ecdsa-p256|ed25519] [--force]
       drover pki issue --dir D --role ${ROLES.join('|')} --name NAME [--host IP_OR_DNS]... [--days 365] [--force]
       drover pki show FILE [--json]`;

function days(p: Parsed): number | undefined {
  const d = int(p, 'days');
  if (d !== undefined && (d < 1 || d > 36500)) throw new UsageError(`--days "${d}" must be from 1 to 36500`);
  return d;
}

async function init(argv: string[]): Promise<number> {
  const p = parse(argv, { dir: { type: 'string' }, days: { type: 'string' }, 'key-type': { type: 'string' }, force: { type: 'boolean' } }, 'pki init');
  if (p.positionals.length) throw new UsageError(`pki init: unexpected argument "${p.positionals[0]}"`);
  const keyType = str(p, 'key-type', 'ecdsa-p256')!;
  if (!(KEY_TYPES as readonly string[]).includes(keyType)) throw new UsageError(`--key-type "${keyType}" is not one of ${KEY_TYPES.join(', ')}`);
  const ca = await initCa(required(p, 'dir', 'pki init'), { days: days(p), keyType: keyType as KeyType, force: flag(p, 'force') });
  console.log(`CA ${ca.subject.replace(/\n/g, ', ')} (${ca.keyType}) until ${ca.notAfter.toISOString()}: ${ca.certPath}, ${ca.keyPath}`);
  return 0;
}

async function issue(argv: string[]): Promise<number> {
  const p = parse(argv, {
    dir: { type: 'string' }, role: { type: 'string' }, name: { type: 'string' }, host: { type: 'string', multiple: true },
    days: { type: 'string' }, force: { type: 'boolean' },
  }, 'pki issue');
  if (p.positionals.length) throw new UsageError(`pki issue: unexpected argument "${p.positionals[0]}"`);
  const dir = required(p, 'dir', 'pki issue');
  const role = required(p, 'role', 'pki issue');
  if (!isRole(role)) throw new UsageError(`--role "${role}" is not one of ${ROLES.join(', ')}`);
  const hosts = (p.values.host as string[] | undefined) ?? [];
  const id = await issueIdentity(dir, { role, name: required(p, 'name', 'pki issue'), hosts, days: days(p), force: flag(p, 'force') });
  console.log(`${id.uri} (CN ${id.commonName}) until ${id.notAfter.toISOString()}: ${id.certPath}, ${id.keyPath}`);
  return 0;
}

function print(s: CertificateSummary): void {
  const lines: [string, string][] = [
    ['subject', s.subject], ['issuer', s.issuer], ['serial', s.serial],
    ['identity', s.identity ? `${s.identity.role}/${s.identity.name}` : '(none)'],
    ['sans', s.sans.map((n) => `${n.type.toUpperCase()}:${n.value}`).join(', ') || '(none)'],
    ['valid', `${s.notBefore} .. ${s.notAfter}${s.expired ? ' (EXPIRED)' : ''}`],
    ['key', s.keyType], ['ca', String(s.ca)], ['ext key usage', s.extKeyUsage.join(', ') || '(none)'], ['sha256', s.fingerprintSha256],
  ];
  for (const [k, v] of lines) console.log(`${k.padEnd(14)}${v}`);
}

function show(argv: string[]): number {
  const p = parse(argv, { json: { type: 'boolean' } }, 'pki show');
  if (p.positionals.length !== 1) throw new UsageError('pki show: expected one certificate file');
  const file = p.positionals[0];
  if (!fs.existsSync(file)) throw notFound(`pki show: ${file} does not exist`);
  const s = describeCertificate(fs.readFileSync(file, 'utf8'), file);
  if (flag(p, 'json')) console.log(JSON.stringify(s));
  else print(s);
  return 0;
}

/** Runs `drover pki ...`. */
export async function pkiCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'init': return init(rest);
    case 'issue': return issue(rest);
    case 'show': return show(rest);
    default: throw new UsageError(sub === undefined ? `pki: expected init, issue or show (${PKI_USAGE.split('\n')[0].trim()} ...)` : `pki: unknown subcommand "${sub}" (expected init, issue or show)`);
  }
}
