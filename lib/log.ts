/**
 * Structured logs (pino): JSON lines on stderr, human-readable when stderr is a terminal (unless
 * DROVER_LOG_JSON is set). Every process logs the same keys: `time` (ISO 8601), `level` (a word:
 * info, warn, ...), `service` (agent, migrator, scheduler, ...), `component` (the replica or part
 * of it, control plane), `node`, `migration`, `vm` (child loggers bind them) and `msg`.
 */
import pino from 'pino';

/** The logger options every Drover process shares (`base` becomes the first keys of each line). */
function options(level: string, base: Record<string, unknown>, json: boolean): pino.LoggerOptions {
  if (!json) return { level, base };
  return { level, base, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } };
}

/** Whether logs on stderr are JSON lines (not a terminal, or DROVER_LOG_JSON set). */
function jsonOnStderr(): boolean {
  return !process.stderr.isTTY || !!process.env.DROVER_LOG_JSON;
}

/** A pino logger on stderr (JSON lines, or pretty on a terminal). */
function stderrLogger(level: string, base: Record<string, unknown>, sync: boolean): pino.Logger {
  if (!jsonOnStderr()) {
    return pino({ ...options(level, base, false), transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(options(level, base, true), pino.destination({ dest: 2, sync }));
}

/** A logger for service `name` at `level` (default from DROVER_LOG_LEVEL or info). */
export function createLogger(name: string, level = process.env.DROVER_LOG_LEVEL ?? 'info'): pino.Logger {
  return stderrLogger(level, { service: name }, false);
}

/**
 * The small logging API of the control plane (migrator, scheduler, registration): one event per
 * call, `fields` become keys of the JSON line.
 */
export type Logger = (msg: string, fields?: Record<string, unknown>) => void;

/** The service a control-plane component belongs to: `migrator-1` → migrator, `registration n1` → agent. */
export function serviceOf(component: string): string {
  const word = /^[a-z]+/.exec(component)?.[0] ?? component;
  return word === 'registration' ? 'agent' : word;
}

let shared: pino.Logger | undefined;

/**
 * A logger tagged with `component` (and its `service`); silent when DROVER_QUIET=1. Lines go to
 * stderr (stdout stays for command output), or to `out` one JSON line at a time (tests).
 */
export function makeLogger(component: string, out?: (line: string) => void): Logger {
  const level = process.env.DROVER_LOG_LEVEL ?? 'info';
  const bindings = { service: serviceOf(component), component };
  const log = out
    ? pino(options(level, bindings, true), { write: (s: string) => out(s.replace(/\n$/, '')) })
    : (shared ??= stderrLogger(level, {}, true)).child(bindings);
  return (msg, fields) => {
    if (process.env.DROVER_QUIET === '1') return;
    if (fields) log.info(fields, msg);
    else log.info(msg);
  };
}

/** A logger that drops everything. */
export const silent: Logger = () => {};
