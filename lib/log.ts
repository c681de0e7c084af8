/**
 * Structured logs (pino): JSON lines on stderr, human-readable when stderr is a terminal.
 * Every line of a migration carries `migration`, `vm` and `node` (child loggers bind them).
 */
import pino from 'pino';

/** A logger for service `name` at `level` (default from DROVER_LOG_LEVEL or info). */
export function createLogger(name: string, level = process.env.DROVER_LOG_LEVEL ?? 'info'): pino.Logger {
  const pretty = process.stderr.isTTY && !process.env.DROVER_LOG_JSON;
  if (pretty) {
    return pino({ name, level, transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino({ name, level, base: { service: name } }, pino.destination({ dest: 2, sync: false }));
}
