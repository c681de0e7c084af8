/**
 * The control plane's logger: the structured (pino) `makeLogger` of lib/log.ts, re-exported so
 * the services' imports stay as they are.
 */
export { makeLogger, silent, type Logger } from '../lib/log';

/** Sleeps `ms`. */
export { setTimeout as sleep } from 'node:timers/promises';
