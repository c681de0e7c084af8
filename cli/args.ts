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

/** Parses `argv` against `options`, rejecting unknown flags with a UsageError naming them. */
export function parse(argv: string[], options: OptionSpec, command: string): Parsed {
  try {
    const r = parseArgs({ args: argv, options: options as ParseArgsConfig['options'], allowPositionals: true, strict: true });
    return { values: r.values as Parsed['values'], positionals: r.positionals };
  } catch (err) {
    const msg = (err as Error).message.replace(/\. To specify a positional argument.*$/, '');
    throw new UsageError(`${command}: ${msg}`);
  }
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
  return v === undefined ? fallback : wrap(() => parseSize(v, `--${name}`));
}

/** A rate flag (`1Gbit`), parsed strictly. */
export function rate(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  return v === undefined ? fallback : wrap(() => parseRate(v, `--${name}`));
}

/** A duration flag (`5ms`), parsed strictly. */
export function duration(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  return v === undefined ? fallback : wrap(() => parseDuration(v, `--${name}`));
}

/** A positive integer flag. */
export function int(p: Parsed, name: string, fallback?: number): number | undefined {
  const v = str(p, name);
  if (v === undefined) return fallback;
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`--${name} "${v}" is not a whole number`);
  return Number(v);
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
