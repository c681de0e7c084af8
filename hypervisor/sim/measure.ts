/**
 * Prints, for each profile, a 1 GiB sim VM's boot time, measured dirty rate, touched RAM, CPU,
 * heartbeat cadence and pause latency.
 *
 *   node dist/hypervisor/sim/measure.js [memMiB=1024] [vcpus=1] [seconds=1.5]
 */

import { PROFILE_NAMES } from '../types';
import { resolveProfile } from './profiles';
import { SimHypervisor } from './sim-hypervisor';

const MiB = 1024 * 1024;
const nap = new Int32Array(new SharedArrayBuffer(4));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function main(): Promise<void> {
  const memMiB = Number(process.argv[2] ?? 1024);
  const vcpus = Number(process.argv[3] ?? 1);
  const seconds = Number(process.argv[4] ?? 1.5);
  const hv = new SimHypervisor();
  console.log(`sim measure: ${memMiB} MiB, ${vcpus} vCPU(s), ${seconds} s window`);
  console.log('profile   | boot ms | fill MiB | wss MiB | target MiB/s | measured MiB/s | cpu  | beats/s | pause p50/p99/max ms | resume->beat ms');
  for (const profile of PROFILE_NAMES) {
    const spec = { name: `m-${profile}`, memBytes: memMiB * MiB, vcpus, profile, seed: 7 };
    const r = resolveProfile(spec);
    const t0 = performance.now();
    const d = await hv.createDomain(spec);
    const boot = performance.now() - t0;
    const b0 = d.bytesWritten();
    const h0 = d.heartbeat().beats;
    const w0 = performance.now();
    await new Promise((res) => setTimeout(res, seconds * 1000));
    const dt = (performance.now() - w0) / 1000;
    const rate = (d.bytesWritten() - b0) / dt / MiB;
    const beats = (d.heartbeat().beats - h0) / dt;
    const cpu = d.stats().cpu;
    const lat: number[] = [];
    const wake: number[] = [];
    for (let i = 0; i < 200; i++) {
      const p0 = performance.now();
      await d.pause();
      lat.push(performance.now() - p0);
      const before = d.heartbeat().beats;
      const r0 = performance.now();
      await d.resume();
      // Poll by sleeping 20 us at a time: a spinning main thread delays the worker's wake-up
      // (the scheduler queues the woken vCPU behind its waker), which would skew the figure.
      while (d.heartbeat().beats === before && performance.now() - r0 < 100) Atomics.wait(nap, 0, 0, 0.02);
      wake.push(performance.now() - r0);
      await new Promise((res) => setTimeout(res, 2));
    }
    const check = await d.guestCheck();
    await d.destroy();
    const target = Number.isFinite(r.dirtyRateBytesPerSec) ? (r.dirtyRateBytesPerSec / MiB).toFixed(0) : 'unlimited';
    console.log(
      `${profile.padEnd(9)} | ${boot.toFixed(0).padStart(7)} | ${(r.fillBytes / MiB).toFixed(0).padStart(8)} | ${(r.wssBytes / MiB).toFixed(0).padStart(7)} | ${target.padStart(12)} | ${rate.toFixed(1).padStart(14)} | ${cpu.toFixed(2)} | ${beats.toFixed(0).padStart(7)} | ${pct(lat, 50).toFixed(3)}/${pct(lat, 99).toFixed(3)}/${Math.max(...lat).toFixed(3)} | ${pct(wake, 50).toFixed(3)}${check.ok ? '' : '  CHECK FAILED: ' + check.detail}`,
    );
  }
  await hv.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
