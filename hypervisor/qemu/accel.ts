/**
 * Accelerator detection. The presence of /dev/kvm proves nothing (a PVM host exposes it, yet
 * ordinary guests do not run under it), so we boot the guest in probe mode under KVM with a
 * timeout: it prints "#ready" and exits through isa-debug-exit. Anything else means TCG.
 * The result is cached per process and QEMU binary. DROVER_QEMU_ACCEL=kvm|tcg overrides.
 */
import { spawn } from 'node:child_process';
import { ensureGuest } from './guest-image';

/** A QEMU accelerator: hardware (KVM) or the software emulator (TCG). */
export type Accel = 'kvm' | 'tcg';

/** Result of a probe, with the reason (shown in logs). */
export interface AccelProbe {
  accel: Accel;
  reason: string;
}

const cache = new Map<string, Promise<AccelProbe>>();

/** Detects the best accelerator for `binary` (cached). */
export function detectAccel(binary = 'qemu-system-x86_64', timeoutMs = 5000): Promise<AccelProbe> {
  const forced = process.env.DROVER_QEMU_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return Promise.resolve({ accel: forced, reason: 'DROVER_QEMU_ACCEL' });
  let p = cache.get(binary);
  if (!p) {
    p = probeKvm(binary, timeoutMs);
    cache.set(binary, p);
  }
  return p;
}

async function probeKvm(binary: string, timeoutMs: number): Promise<AccelProbe> {
  let kernel: string;
  try {
    kernel = await ensureGuest();
  } catch (err) {
    return { accel: 'tcg', reason: `no guest to probe with: ${(err as Error).message}` };
  }
  const args = ['-machine', 'pc', '-accel', 'kvm', '-m', '32', '-nodefaults', '-display', 'none', '-no-user-config',
    '-serial', 'stdio', '-kernel', kernel, '-append', 'probe', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4'];
  return new Promise<AccelProbe>((resolve) => {
    let out = '';
    let done = false;
    const finish = (r: AccelProbe) => { if (!done) { done = true; clearTimeout(timer); child.kill('SIGKILL'); resolve(r); } };
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => finish({ accel: 'tcg', reason: `KVM guest did not report within ${timeoutMs} ms` }), timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      if (out.includes('#ready')) finish({ accel: 'kvm', reason: 'KVM guest booted and reported' });
    });
    child.stderr.on('data', (d: string) => { out += d; });
    child.on('error', (err) => finish({ accel: 'tcg', reason: `cannot run ${binary}: ${err.message}` }));
    child.on('close', (code) => finish({ accel: 'tcg', reason: `KVM probe exited (${code}): ${out.trim().split('\n').pop() ?? ''}` }));
  });
}
