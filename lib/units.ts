/**
 * Strict parsing and formatting of the sizes, rates and durations users type:
 * `512MiB`, `1GiB`, `4096` (bytes), `1Gbit` / `800Mbit` / `100MB/s` (rates), `5ms`, `2s`.
 * Anything else is rejected with an error naming the text and what was expected.
 */
import { invalidArgument } from './errors';

const SIZE_UNITS: Record<string, number> = {
  '': 1, B: 1,
  KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4,
  KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12,
  K: 1024, M: 1024 ** 2, G: 1024 ** 3,
};

const RATE_UNITS: Record<string, number> = {
  // bits per second, expressed in bytes per second
  bit: 1 / 8, Kbit: 1e3 / 8, Mbit: 1e6 / 8, Gbit: 1e9 / 8, Tbit: 1e12 / 8,
  'B/s': 1, 'KB/s': 1e3, 'MB/s': 1e6, 'GB/s': 1e9,
  'KiB/s': 1024, 'MiB/s': 1024 ** 2, 'GiB/s': 1024 ** 3,
};

const DURATION_UNITS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };

const NUMBER_AND_UNIT = /^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z/]*)$/;

function split(text: string, what: string, example: string): [number, string] {
  const m = NUMBER_AND_UNIT.exec(text.trim());
  if (!m) throw invalidArgument(`${what} "${text}" is not a number with a unit (e.g. ${example})`);
  return [Number(m[1]), m[2]];
}

/** Parses a byte size such as `512MiB`, `1GiB`, `64KiB` or a plain integer of bytes. */
export function parseSize(text: string, what = 'size'): number {
  const [n, unit] = split(text, what, '512MiB, 1GiB');
  const mult = SIZE_UNITS[unit];
  if (mult === undefined) throw invalidArgument(`${what} "${text}" has an unknown unit "${unit}" (use B, KiB, MiB, GiB, TiB, KB, MB, GB)`);
  const bytes = n * mult;
  if (!Number.isSafeInteger(bytes)) throw invalidArgument(`${what} "${text}" is not a whole number of bytes`);
  return bytes;
}

/** Parses a transfer rate into bytes per second: `1Gbit`, `800Mbit`, `100MB/s`, `0` (= unlimited). */
export function parseRate(text: string, what = 'rate'): number {
  if (text.trim() === '0' || text.trim() === 'unlimited') return 0;
  const [n, unit] = split(text, what, '1Gbit, 800Mbit, 100MB/s');
  const mult = RATE_UNITS[unit];
  if (mult === undefined) throw invalidArgument(`${what} "${text}" has an unknown unit "${unit}" (use bit, Kbit, Mbit, Gbit, B/s, MB/s, GB/s, MiB/s)`);
  const v = n * mult;
  if (!Number.isFinite(v)) throw invalidArgument(`${what} "${text}" is not a finite rate`);
  return v;
}

/** Parses a duration into milliseconds: `5ms`, `2s`, `250us`, `1m`. */
export function parseDuration(text: string, what = 'duration'): number {
  const [n, unit] = split(text, what, '5ms, 2s');
  const mult = DURATION_UNITS[unit];
  if (mult === undefined) throw invalidArgument(`${what} "${text}" needs a unit: us, ms, s, m or h`);
  const ms = n * mult;
  if (!Number.isFinite(ms)) throw invalidArgument(`${what} "${text}" is not a finite duration`);
  return ms;
}

/** Formats bytes in binary units with three significant digits: `1.50 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

/** Formats a rate in bytes per second as `MB/s`/`GB/s` (decimal, as links are quoted). */
export function formatRate(bytesPerSec: number): string {
  if (bytesPerSec >= 1e9) return `${(bytesPerSec / 1e9).toFixed(2)} GB/s`;
  if (bytesPerSec >= 1e6) return `${(bytesPerSec / 1e6).toFixed(1)} MB/s`;
  return `${(bytesPerSec / 1e3).toFixed(1)} kB/s`;
}

/** Formats milliseconds: `850 us`, `12.3 ms`, `4.20 s`. */
export function formatMs(ms: number): string {
  if (ms < 1) return `${Math.round(ms * 1000)} us`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}
