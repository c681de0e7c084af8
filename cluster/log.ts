/**
 * A small structured logger for the control-plane processes: one line per event,
 * `HH:MM:SS.mmm component message key=value ...`, on stderr (stdout stays for command output).
 */
export type Logger = (msg: string, fields?: Record<string, unknown>) => void;

/** A logger tagged with `component`; silent when DROVER_QUIET=1. */
export function makeLogger(component: string, out: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  return (msg, fields) => {
    if (process.env.DROVER_QUIET === '1') return;
    const t = new Date().toISOString().slice(11, 23);
    const kv = fields ? Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ') : '';
    out(`${t} ${component} ${msg}${kv ? ' ' + kv : ''}`);
  };
}

/** A logger that drops everything. */
export const silent: Logger = () => {};

/** Sleeps `ms`. */
export { setTimeout as sleep } from 'node:timers/promises';
