/**
 * Locates the Drover test guest (guest/build/drover-guest.elf) and builds it on first use with
 * guest/build.sh (gcc + binutils of this machine, no downloads).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DroverError } from '../../lib/errors';

/** The repository's guest/ directory (found by walking up from this file, so it works from dist/ too). */
export function guestDir(): string {
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(d, 'guest', 'build.sh'))) return path.join(d, 'guest');
    d = path.dirname(d);
  }
  throw new DroverError('NOT_FOUND', `guest/build.sh not found above ${__dirname}`);
}

let building: Promise<string> | undefined;

/** Returns the guest ELF path, running guest/build.sh once per process (it is a no-op when up to date). */
export function ensureGuest(): Promise<string> {
  if (!building) {
    building = new Promise<string>((resolve, reject) => {
      const dir = guestDir();
      const script = path.join(dir, 'build.sh');
      execFile('sh', [script], { timeout: 60_000 }, (err, _stdout, stderr) => {
        const elf = path.join(dir, 'build', 'drover-guest.elf');
        if (err || !fs.existsSync(elf)) {
          building = undefined;
          reject(new DroverError('FAILED_PRECONDITION', `building the guest failed: sh ${script}: ${err?.message ?? 'no ELF produced'}\n${stderr}`, { cause: err }));
        } else resolve(elf);
      });
    });
  }
  return building;
}
