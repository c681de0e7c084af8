/**
 * Cost-model bench: for each profile (idle, web, db, mmuncher) at two link rates (uncapped
 * loopback and a 1 Gbit/s cap), the prediction of `drover analyze` (the agent's AnalyzeVm
 * observation, then migration/policy/cost-model.ts) against a real migration between two agent
 * processes: total time, bytes and downtime, with the error. The link is learned as the cluster's
 * migrator learns it (services/scheduler/move-cost.ts foldLink): calibration migrations of an
 * idle VM and of a web VM (its later rounds measure the per-round cost, roundMs, which an idle
 * VM's single round cannot), then every uncapped migration of the table folded in after its row
 * (a capped one measures the cap, not the link); each row is predicted with the link learned before it,
 * LZ4's ratio on guest pages included (the record's lz4Ratio, from the batches compression auto
 * sampled: cost-model.ts compressionRatio, which matters under the cap).
 *
 *   node dist/bench/analyze-bench.js [--mem 256MiB] [--window 2s] [--profiles idle,web] [--json]
 */
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { startAgents, stopAgents, type LocalAgent } from '../services/node-agent/local-agents';
import { cpuBoundWriteRate, predictMigration, type CostPrediction } from '../migration/policy/cost-model';
import { DEFAULT_ROUND_MS, foldLink } from '../services/scheduler/move-cost';
import type { LinkRecord } from '../cluster/keyspace';
import { parseDuration, parseSize } from '../lib/units';
import type { MigrationResult } from '../migration/types';
import type { ProfileName } from '../hypervisor/types';

const MiB = 2 ** 20;
/** The capped link of the table: 1 Gbit/s. */
const CAP_BYTES_PER_SEC = 1e9 / 8;
/** Time a new VM runs before it is observed: its boot fill is done and its working set warm. */
const WARMUP_MS = 1500;

/** One row of the table. */
interface Row {
  profile: string;
  link: string;
  predicted: { totalMs: number; bytes: number; downtimeMs: number; converges: boolean; policy: string; throttlePercent: number; rounds: number };
  /** rounds: pre-copy rounds, as the model counts them (the result's less the stop-and-copy). */
  actual: { totalMs: number; bytes: number; downtimeMs: number; converged: boolean; throttlePercent: number; stopReason: string; rounds: number };
  errorTotal: number;
  errorBytes: number;
  /** The learned link the row was predicted with: bytes/s, set-up ms, migrations folded in. */
  learned: { bytesPerSec: number; setupMs: number; roundMs: number; samples: number };
}

const rel = (a: number, p: number) => (p > 0 ? (a - p) / p : NaN);

async function once(a: LocalAgent, b: LocalAgent, name: string, profile: ProfileName, mem: number, windowMs: number, link: { bytesPerSec: number; setupMs: number; roundMs: number; compressionRatio?: number }, cap: number): Promise<{ p: CostPrediction; r: MigrationResult }> {
  await a.client.createVm({ name, memBytes: mem, vcpus: 1, profile });
  await sleep(WARMUP_MS);
  const o = await a.client.analyzeVm(name, windowMs);
  const p = predictMigration({
    memBytes: mem, nonzeroBytes: Number(o.nonzeroBytes), dirtyRateBytesPerSec: o.dirtyRateBytesPerSec,
    wss: (o.wss ?? []).map((w) => ({ windowMs: Number(w.windowMs), bytes: Number(w.bytes) })),
    // Capped, the link is the cap, as `drover analyze --bandwidth 1Gbit` takes it (the loopback rate learned under load says nothing about the capped path).
    linkBytesPerSec: cap > 0 ? cap : link.bytesPerSec, capBytesPerSec: cap, maxDowntimeMs: 5, setupMs: link.setupMs,
    roundOverheadMs: link.roundMs, guestMaxWriteBytesPerSec: cpuBoundWriteRate(o.dirtyRateBytesPerSec, o.vcpuBusy, o.vcpus),
    compressionRatio: link.compressionRatio,
  });
  const r = await a.client.migrateVm(name, b.address, cap > 0 ? { bandwidthBytesPerSec: cap } : {});
  await b.client.destroyVm(name).catch(() => {});
  await a.client.destroyVm(name).catch(() => {});
  if (r.outcome !== 'succeeded') throw new Error(`${name}: migration ${r.outcome}: ${r.error}`);
  return { p, r };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mem: { type: 'string' }, window: { type: 'string' }, profiles: { type: 'string' }, json: { type: 'boolean' } } });
  const mem = parseSize(values.mem ?? '256MiB', '--mem');
  const windowMs = parseDuration(values.window ?? '2s', '--window');
  const profiles = (values.profiles ?? 'idle,web,db,mmuncher').split(',') as ProfileName[];
  const agents = await startAgents(2, 'ab');
  const rows: Row[] = [];
  try {
    const [a, b] = agents;
    // Calibration: the link as the migrator learns it (throughput, and the time outside sending and downtime).
    const cal = (await once(a, b, 'cal', 'idle', mem, 200, { bytesPerSec: 1e9, setupMs: 0, roundMs: 0 }, 0)).r;
    let learned: LinkRecord | undefined = foldLink(undefined, cal, Date.now());
    if (!learned) throw new Error(`the calibration migration (${cal.bytesSent} bytes) is no link sample`);
    const busy = (await once(a, b, 'cal-web', 'web', mem, 200, { bytesPerSec: learned.bytesPerSec, setupMs: 0, roundMs: 0 }, 0)).r;
    learned = foldLink(learned, busy, Date.now()) ?? learned;
    if (!values.json) console.log(`  link: learned as the migrator learns links/<from>/<to> (foldLink): the calibration (idle and web ${mem / MiB} MiB migrations, ${(learned.bytesPerSec / MiB).toFixed(0)} MiB/s, set-up ${learned.setupMs!.toFixed(0)} ms, ${learned.roundMs === undefined ? `no round cost measured (${DEFAULT_ROUND_MS} ms assumed)` : `round cost ${learned.roundMs.toFixed(1)} ms`}), then each uncapped row's migration after its row; capped rows take the cap as the link; LZ4 ratio ${learned.lz4Ratio?.toFixed(2) ?? 'unknown'} from its sampled batches`);
    for (const [label, cap] of [['loopback', 0], ['1Gbit', CAP_BYTES_PER_SEC]] as const) {
      for (const profile of profiles) {
        const link = { bytesPerSec: learned.bytesPerSec, setupMs: learned.setupMs ?? 0, roundMs: learned.roundMs ?? DEFAULT_ROUND_MS, compressionRatio: learned.lz4Ratio };
        const { p, r } = await once(a, b, `${profile}-${label.toLowerCase()}`, profile, mem, windowMs, link, cap);
        const row: Row = {
          profile, link: label,
          predicted: { totalMs: p.predictedTotalMs, bytes: p.predictedBytes, downtimeMs: p.predictedDowntimeMs, converges: p.converges, policy: p.policy, throttlePercent: p.throttlePercent, rounds: p.rounds },
          actual: { totalMs: r.totalMs, bytes: r.bytesSent, downtimeMs: r.downtimeMs, converged: !r.throttlePercent && r.stopReason === 'converged', throttlePercent: r.throttlePercent ?? 0, stopReason: r.stopReason, rounds: r.rounds - 1 },
          errorTotal: rel(r.totalMs, p.predictedTotalMs), errorBytes: rel(r.bytesSent, p.predictedBytes),
          learned: { bytesPerSec: link.bytesPerSec, setupMs: link.setupMs, roundMs: link.roundMs, samples: learned.samples },
        };
        if (cap === 0) learned = foldLink(learned, r, Date.now()) ?? learned;
        rows.push(row);
        if (values.json) console.log(JSON.stringify(row));
      }
    }
  } finally {
    await stopAgents(agents);
  }
  if (values.json) return;
  const pct = (x: number) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(0)}%`;
  console.log(`  ${'profile'.padEnd(9)}${'link'.padEnd(9)}${'total pred/actual (err)'.padEnd(28)}${'MiB pred/actual (err)'.padEnd(26)}${'downtime ms pred/actual'.padEnd(25)}${'link MiB/s'.padEnd(12)}${'round ms'.padEnd(10)}verdict pred/actual`);
  for (const x of rows) {
    const verdict = (c: boolean, t: number) => (c ? 'converges' : `throttle ${t}%`);
    console.log(`  ${x.profile.padEnd(9)}${x.link.padEnd(9)}${`${x.predicted.totalMs.toFixed(0)}/${x.actual.totalMs.toFixed(0)} ms (${pct(x.errorTotal)})`.padEnd(28)}`
      + `${`${(x.predicted.bytes / MiB).toFixed(1)}/${(x.actual.bytes / MiB).toFixed(1)} (${pct(x.errorBytes)})`.padEnd(26)}`
      + `${`${x.predicted.downtimeMs.toFixed(2)}/${x.actual.downtimeMs.toFixed(2)}`.padEnd(25)}${(x.link === 'loopback' ? `${(x.learned.bytesPerSec / MiB).toFixed(0)} (${x.learned.samples})` : `${(CAP_BYTES_PER_SEC / MiB).toFixed(0)} (cap)`).padEnd(12)}${x.learned.roundMs.toFixed(1).padEnd(10)}${verdict(x.predicted.converges, x.predicted.throttlePercent)} / ${verdict(x.actual.converged, x.actual.throttlePercent)} (${x.actual.stopReason}; pre-copy rounds ${x.predicted.rounds}/${x.actual.rounds})`);
  }
}

main().catch((e) => { console.error(`analyze-bench: ${(e as Error).message}`); process.exitCode = 1; });
