/** Runs the real `drover` CLI (bin/drover) as a process, for tests that check what a user sees. */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

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
