/**
 * The TLS flags of every process that talks to an agent: `--ca FILE --cert FILE --key FILE`
 * (env fallbacks DROVER_CA, DROVER_CERT, DROVER_KEY) or `--insecure` (plain text, one warning
 * line on stderr). Certificates load through lib/pki/tls-files.ts, whose errors name the file.
 */
import * as grpc from '@grpc/grpc-js';
import { flag, str, UsageError, type OptionSpec, type Parsed } from './args';
import { CertificateReloader, loadTlsFiles, type TlsFilePaths, type TlsFiles } from '../lib/pki/tls-files';
import { setAgentCredentials } from '../services/node-agent/client/agent-client';
import { clientCredentials, type TlsSource } from '../lib/pki/grpc-credentials';
import type { ExpectedIdentity } from '../lib/pki/identity';
import { DroverError } from '../lib/errors';

/** The flags, to spread into a command's option spec. */
export const TLS_OPTIONS = {
  ca: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, insecure: { type: 'boolean' },
} as const satisfies OptionSpec;

/** Usage fragment of the flags. */
export const TLS_USAGE = '(--ca FILE --cert FILE --key FILE | --insecure)';

/** What the flags chose: certificates (fixed or reloadable) or plain text. */
export type TlsChoice = { mode: 'tls'; source: TlsSource } | { mode: 'insecure' };

/** Options of tlsFromFlags. */
export interface TlsFlagOptions {
  /** Keep a CertificateReloader (agents: SIGHUP reloads) instead of fixed files. */
  reloadable?: boolean;
  /** With neither certificates nor --insecure: refuse (default), or run plain text with the warning. */
  whenMissing?: 'refuse' | 'insecure';
  /** Where the warning goes (tests). */
  warn?: (line: string) => void;
}

/** The warning printed whenever a process runs without TLS. */
export function insecureWarning(command: string): string {
  return `drover: --insecure: ${command} runs in plain text, no authentication`;
}

/** The three paths from flags or env; undefined when none is given; a UsageError when only some are. */
export function tlsPaths(p: Parsed, command: string, env: NodeJS.ProcessEnv = process.env): TlsFilePaths | undefined {
  const ca = str(p, 'ca') ?? env.DROVER_CA;
  const cert = str(p, 'cert') ?? env.DROVER_CERT;
  const key = str(p, 'key') ?? env.DROVER_KEY;
  if (!ca && !cert && !key) return undefined;
  const missing = [['--ca', ca], ['--cert', cert], ['--key', key]].filter(([, v]) => !v).map(([n]) => n);
  if (missing.length) throw new UsageError(`${command}: ${missing.join(' and ')} missing: TLS needs --ca, --cert and --key (or DROVER_CA, DROVER_CERT, DROVER_KEY)`);
  return { ca: ca!, cert: cert!, key: key! };
}

/**
 * Reads the TLS flags. Certificate errors become a UsageError naming the file (exit 2);
 * `--insecure` with certificates is a UsageError too (which one was meant?).
 */
export function tlsFromFlags(p: Parsed, command: string, opts: TlsFlagOptions = {}): TlsChoice {
  const warn = opts.warn ?? ((l: string) => process.stderr.write(`${l}\n`));
  const paths = tlsPaths(p, command);
  if (paths && flag(p, 'insecure')) throw new UsageError(`${command}: --insecure and certificates (--ca/--cert/--key or DROVER_CA/...) exclude each other`);
  if (!paths) {
    if (!flag(p, 'insecure') && (opts.whenMissing ?? 'refuse') === 'refuse') {
      throw new UsageError(`${command}: no certificates: give --ca, --cert and --key (or DROVER_CA, DROVER_CERT, DROVER_KEY), or --insecure for plain text`);
    }
    warn(insecureWarning(command));
    return { mode: 'insecure' };
  }
  try {
    const source = opts.reloadable ? new CertificateReloader(paths, { requireIdentity: true }) : loadTlsFiles(paths, { requireIdentity: true });
    return { mode: 'tls', source };
  } catch (err) {
    throw new UsageError(`${command}: ${DroverError.from(err).message}`);
  }
}

/** Channel credentials to an agent for a choice: TLS expecting a node identity (any node unless named), or plain text. */
export function agentChannelCredentials(choice: TlsChoice, expect: ExpectedIdentity = { role: 'node' }): grpc.ChannelCredentials {
  return choice.mode === 'tls' ? clientCredentials(choice.source, expect) : grpc.credentials.createInsecure();
}

/** The fixed TLS files of a choice (the current set of a reloader), undefined in plain text. */
export function tlsFilesOf(choice: TlsChoice): TlsFiles | undefined {
  if (choice.mode !== 'tls') return undefined;
  return choice.source instanceof CertificateReloader ? choice.source.current() : choice.source;
}

/** Makes every AgentClient of this process present `source` and expect a node identity (the named node's when given). */
export function useAgentIdentity(source: TlsSource): void {
  setAgentCredentials((node) => clientCredentials(source, node ? { role: 'node', name: node } : { role: 'node' }));
}
