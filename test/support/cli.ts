/** Runs the real `drover` CLI (bin/drover) as a process, for tests that check what a user sees. */
import * as assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { withoutInsecureWarning } from './agents';

/** The CLI entry (bin/drover), from dist/test/support. */
export const DROVER_BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');
const run = promisify(execFile);

/** Runs `drover ARGS --insecure`; resolves with the exit code and both outputs (never rejects on a non-zero exit). */
export async function droverInsecure(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(process.execPath, [DROVER_BIN, ...args, '--insecure'], { encoding: 'utf8', timeout: 120_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

/**
 * Runs `drover ARGS` (as given: add `--insecure` where the command needs it) and asserts what a
 * user relies on for bad input: exit code 2 and one line on stderr (besides the --insecure
 * warning). Returns that line, for the caller to match.
 */
export function usageErrorLine(...args: string[]): string {
  const r = spawnSync(process.execPath, [DROVER_BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status}, stderr ${r.stderr}`);
  const lines = withoutInsecureWarning(r.stderr).trim().split('\n');
  assert.equal(lines.length, 1, `${args.join(' ')}: one line, got ${r.stderr}`);
  return lines[0];
}
