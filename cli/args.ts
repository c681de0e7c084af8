/**
 * Strict argument parsing for the `drover` command: unknown flags, missing values and
 * malformed sizes become a UsageError, which main() prints as one line and exits 2.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DroverError } from '../lib/errors';
import { parseDuration, parseRate, parseSize } from '../lib/units';

/** A usage mistake: printed as one line, exit code 2. */
export class UsageError extends DroverError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
    this.name = 'UsageError';
  }
}

/** Option spec: every flag takes a string value unless `boolean`. */
export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; default?: string | boolean; multiple?: boolean }>;

/** Parsed command line: flags by name and positional arguments. */
export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/**
 * Parses `argv` against `options`, rejecting unknown flags with a UsageError naming them, and a
 * flag given twice (unless it is `multiple`): `--mem A --mem B` is a mistake, not "B".
 */
export function parse(argv: string[], options: OptionSpec, command: string): Parsed {
  rejectDashValues(argv, options, command);
  let r;
  try {
    r = parseArgs({ args: argv, options: options as ParseArgsConfig['options'], allowPositionals: true, strict: true, tokens: true });
  } catch (err) {
    // node's messages may run over several lines; the first one names the problem
    const msg = (err as Error).message.split('\n')[0].replace(/\. To specify a positional argument.*$/, '');
    throw new UsageError(`${command}: ${msg}`);
  }
  const seen = new Set<string>();
  for (const t of r.tokens as ReadonlyArray<{ kind: string; name?: string }>) {
    if (t.kind !== 'option' || t.name === undefined || options[t.name]?.multiple) continue;
    if (seen.has(t.name)) throw new UsageError(`${command}: --${t.name} is given more than once`);
    seen.add(t.name);
  }
  return { values: r.values as Parsed['values'], positionals: r.positionals };
}

/**
 * A flag that takes a value, followed by a word that begins with a dash (`--bandwidth -1Gbit`):
 * a UsageError naming the flag, in one line (node's own message takes three). Like node, a lone
 * `-` is a value, and `--flag=-1Gbit` passes the value on to be checked.
 */
function rejectDashValues(argv: string[], options: OptionSpec, command: string): void {
  for (let i = 0; i + 1 < argv.length; i++) {
    const a = argv[i];
    if (a === '--') return;
    const long = /^--([^=]+)$/.exec(a)?.[1];
    const short = /^-([^-])$/.exec(a)?.[1];
    const name = long ?? Object.keys(options).find((k) => short !== undefined && options[k].short === short);
    const next = argv[i + 1];
    if (name === undefined || options[name]?.type !== 'string' || !(next.length > 1 && next.startsWith('-'))) continue;
    if (next.startsWith('--')) throw new UsageError(`${command}: --${name} needs a value (got the flag ${next})`);
    throw new UsageError(`${command}: --${name} needs a value and "${next}" begins with a dash (for such a value write --${name}=${next})`);
  }
}

/** Inclusive bounds of a numeric flag's value (sizes in bytes, durations in ms, rates in bytes/s). */
interface Bounds {
  min?: number;
  max: number;
  /** How the limit reads in a message. */
  text: string;
}

const GiB = 1024 ** 3;
/** Bounds of the flags that have their own; every other flag gets its kind's default below. */
export const FLAG_BOUNDS: Readonly<Record<string, Bounds>> = {
  /** A downtime target beyond a minute is no live migration. */
  'max-downtime': { max: 60_000, text: '60s' },
  /** Largest VM a node hosts. */
  mem: { min: 4096, max: 64 * GiB, text: '64GiB' },
  wss: { max: 64 * GiB, text: '64GiB' },
  fill: { max: 64 * GiB, text: '64GiB' },
  'mem-capacity': { min: 4096, max: 16 * 1024 * GiB, text: '16TiB' },
  vcpus: { min: 1, max: 1024, text: '1024' },
  nodes: { min: 1, max: 64, text: '64' },
  'max-rounds': { min: 1, max: 100_000, text: '100000' },
  timeout: { min: 1, max: 86_400, text: '86400 (a day)' },
  days: { min: 1, max: 36_500, text: '36500' },
};
/** Default bounds per kind of flag. */
const KIND_BOUNDS: Readonly<Record<'size' | 'rate' | 'duration' | 'int', Bounds>> = {
  size: { max: 16 * 1024 * GiB, text: '16TiB' },
  rate: { max: 1.25e11, text: '1Tbit' },
  duration: { max: 86_400_000, text: '24h' },
  int: { max: 2 ** 32, text: String(2 ** 32) },
};

/** `v` unless it is outside the bounds of flag `name` (of `kind`): a UsageError naming the flag and its limit. */
function bounded(name: string, kind: keyof typeof KIND_BOUNDS, text: string, v: number): number {
  const b = FLAG_BOUNDS[name] ?? KIND_BOUNDS[kind];
  if (!Number.isFinite(v) || v > b.max) throw new UsageError(`--${name} "${text}" is too large (at most ${b.text})`);
  if (v < (b.min ?? 0)) throw new UsageError(`--${name} "${text}" is too small (at least ${b.min})`);
  return v;
}

/** A string flag's value, or `fallback`. */
export function str(p: Parsed, name: string, fallback?: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : fallback;
}

/** A required string flag; a UsageError names it when absent. */
export function required(p: Parsed, name: string, command: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw new UsageError(`${command}: --${name} is required`);
  return v;
}

/** A boolean flag. */
export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** A size flag (`512MiB`), parsed strictly. */
export function size(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  return v === undefined ? fallback : bounded(name, 'size', v, wrap(() => parseSize(v, `--${name}`)));
}

/** A rate flag (`1Gbit`), parsed strictly. */
export function rate(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  return v === undefined ? fallback : bounded(name, 'rate', v, wrap(() => parseRate(v, `--${name}`)));
}

/** A duration flag (`5ms`), parsed strictly. */
export function duration(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  return v === undefined ? fallback : bounded(name, 'duration', v, wrap(() => parseDuration(v, `--${name}`)));
}

/** A whole-number flag, within its bounds (FLAG_BOUNDS). */
export function int(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  if (v === undefined) return fallback;
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`--${name} "${v}" is not a whole number`);
  return bounded(name, 'int', v, Number(v));
}

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Validates a host:port address, naming the flag when it is malformed. */
export function address(text: string, what: string): string {
  const m = /^([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})$/.exec(text);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`${what} "${text}" is not HOST:PORT`);
  return text;
}
