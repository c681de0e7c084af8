/**
 * Post-copy against pre-copy only, in one run with one agent pair (two `drover agent` processes
 * on loopback, sim driver): the figures of the convergence work. For each case the same guest
 * migrates with the engine's policy (`--postcopy auto`, the default) and with `--postcopy never`
 * (pre-copy, throttling when it stalls), each verified (image digest, then the guest's own check
 * on the target), each row printed beside its aims with met / missed:
 *  - mmuncher, loopback: downtime ≤ 2 ms, no throttle, ≤ 1.2x non-zero RAM sent, page-wait p99;
 *  - mmuncher at a 1 Gbit/s cap: completes, time to the last page ≤ 1.3x (non-zero RAM / link
 *    rate), downtime ≤ 5 ms;
 *  - db at 200 MiB/s: the policy's choice and why, with both options' cost to the guest (time
 *    throttled, or page waits; `--postcopy always` measures post-copy's when the policy chose pre-copy).
 * "total" is the engine's start-to-resume; "complete" adds post-copy's resume-to-all-present.
 * "non-zero RAM" is the engine's nonzeroBytes (every page sent with content, counted once).
 *
 *   node dist/bench/postcopy-bench.js [--mem 1GiB | --quick] [--bandwidth 1Gbit] [--db-dirty-rate 200MiB/s] [--only cap|loopback|mmuncher|db] [--json]
 *
 * `--quick`: 256 MiB guests; `--only`: the cases of one link or guest (e.g. `--only cap`: the
 * capped mmuncher rows alone, for A/B runs of the rate control).
 */
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { startAgents, stopAgents, type LocalAgent } from '../services/node-agent/local-agents';
import { formatBytes, formatMs, parseRate, parseSize } from '../lib/units';
import type { MigrationResult, PostcopyMode } from '../migration/types';
import type { ProfileName, VmSpec } from '../hypervisor/types';

/** Guest warm-up before each migration (its boot fill done, its working set hot), as `drover bench`. */
const WARMUP_MS = 2000;
/** The guest runs this long on the target before its own check (its heartbeat must advance). */
const RUN_AFTER_MS = 1000;
/** Issue 14's aims. */
const AIM = { loopbackDowntimeMs: 2, sentOverNonzero: 1.2, capDowntimeMs: 5, capOverLinkTime: 1.3 } as const;

/** One migration to run: a guest, a link, the post-copy mode asked for. */
interface Case {
  guest: ProfileName;
  link: 'loopback' | 'cap';
  postcopy: PostcopyMode;
}

/** One aim of the issue and whether the row met it. */
interface Aim {
  aim: string;
  value: string;
  met: boolean;
}

/** One row: the case, the engine's result (or the error), what the guest saw, and the aims. */
interface Row extends Case {
  r?: MigrationResult;
  error?: string;
  /** Start to the last page present on the target (post-copy), else start to resume, ms. */
  completeMs: number;
  /** completeMs / (non-zero RAM / link rate); NaN without a cap. */
  overLinkTime: number;
  /** The guest's non-zero RAM (MigrationResult.nonzeroBytes), bytes. */
  nonzeroRam: number;
  guestCheckOk: boolean;
  verified: boolean;
  aims: Aim[];
}

/** The cases, in the order they run: each guest's engine-policy run next to its pre-copy-only run. */
const CASES: Case[] = [
  { guest: 'mmuncher', link: 'loopback', postcopy: 'auto' },
  { guest: 'mmuncher', link: 'loopback', postcopy: 'never' },
  { guest: 'mmuncher', link: 'cap', postcopy: 'auto' },
  { guest: 'mmuncher', link: 'cap', postcopy: 'never' },
  { guest: 'db', link: 'loopback', postcopy: 'auto' },
  { guest: 'db', link: 'loopback', postcopy: 'never' },
  { guest: 'db', link: 'loopback', postcopy: 'always' },
];

/** What --only may name: a link or a guest of CASES. */
const ONLY = ['cap', 'loopback', 'mmuncher', 'db'];

/** The usage text (--help). */
const USAGE = `usage: node dist/bench/postcopy-bench.js [--mem SIZE | --quick] [--bandwidth RATE] [--db-dirty-rate RATE] [--only ${ONLY.join('|')}] [--json]
  --mem SIZE            guest memory (default 1GiB; --quick: 256MiB)
  --bandwidth RATE      the capped rows' link rate (default 1Gbit)
  --db-dirty-rate RATE  the db guest's dirty rate (default 200MiB/s)
  --only WHICH          only the rows of one link (cap, loopback) or guest (mmuncher, db)
  --json                one JSON line per row instead of the table`;

/** Bench options from the command line. */
interface Options {
  mem: number;
  capBytesPerSec: number;
  dbDirtyRate: number;
}

/** Creates the case's VM on a, migrates it to b with verification, runs it there and lets the guest check itself. */
async function once(a: LocalAgent, b: LocalAgent, c: Case, o: Options, i: number): Promise<Row> {
  const spec: VmSpec = { name: `pc-${c.guest}-${c.link}-${c.postcopy}-${i}`, memBytes: o.mem, vcpus: 1, profile: c.guest, ...(c.guest === 'db' ? { dirtyRateBytesPerSec: o.dbDirtyRate } : {}) };
  await a.client.createVm(spec);
  try {
    await sleep(WARMUP_MS);
    const bandwidthBytesPerSec = c.link === 'cap' ? o.capBytesPerSec : 0;
    const r = await a.client.migrateVm(spec.name, b.address, { verify: true, bandwidthBytesPerSec, postcopy: c.postcopy });
    if (r.outcome !== 'succeeded') return failedRow(c, `${r.outcome}: ${r.errorCode} ${r.error}`);
    const beatsAt = (await b.client.getVm(spec.name)).heartbeatBeats;
    await sleep(RUN_AFTER_MS);
    const check = await b.client.verifyVm(spec.name);
    const guestCheckOk = check.ok && check.heartbeatBeats > beatsAt;
    const nonzeroRam = r.nonzeroBytes;
    const completeMs = r.totalMs + (r.mode === 'postcopy' ? r.allPresentMs ?? 0 : 0);
    const overLinkTime = c.link === 'cap' && nonzeroRam > 0 ? completeMs / ((nonzeroRam / o.capBytesPerSec) * 1000) : NaN;
    const row: Row = { ...c, r, completeMs, overLinkTime, nonzeroRam, guestCheckOk, verified: r.verified && guestCheckOk, aims: [] };
    row.aims = aimsOf(row);
    return row;
  } catch (err) {
    return failedRow(c, (err as Error).message);
  } finally {
    await b.client.destroyVm(spec.name).catch(() => undefined);
    await a.client.destroyVm(spec.name).catch(() => undefined);
  }
}

/** A row for a migration that did not succeed: every aim missed. */
function failedRow(c: Case, error: string): Row {
  return { ...c, error, completeMs: NaN, overLinkTime: NaN, nonzeroRam: NaN, guestCheckOk: false, verified: false, aims: [{ aim: 'completes, verified', value: error, met: false }] };
}

/** The issue's aims for the row's guest and link, each with the measured value. */
function aimsOf(row: Row): Aim[] {
  const r = row.r!;
  const sent = row.nonzeroRam > 0 ? r.bytesSent / row.nonzeroRam : NaN;
  if (row.guest === 'db') {
    return [{ aim: 'policy says what and why', value: `${r.policy ?? '?'}: ${r.policyReason || '(no reason)'}`, met: Boolean(r.policy && r.policyReason) }];
  }
  if (row.link === 'cap') {
    return [
      { aim: 'completes, verified', value: row.verified ? 'yes' : 'NO', met: row.verified },
      { aim: `complete ≤ ${AIM.capOverLinkTime}x non-zero RAM / link`, value: `${row.overLinkTime.toFixed(2)}x`, met: row.overLinkTime <= AIM.capOverLinkTime },
      { aim: `downtime ≤ ${AIM.capDowntimeMs} ms`, value: formatMs(r.downtimeMs), met: r.downtimeMs <= AIM.capDowntimeMs },
    ];
  }
  return [
    { aim: `downtime ≤ ${AIM.loopbackDowntimeMs} ms`, value: formatMs(r.downtimeMs), met: r.downtimeMs <= AIM.loopbackDowntimeMs },
    { aim: 'no throttle', value: r.throttlePercent ? `${r.throttlePercent}% for ${formatMs(r.throttledMs ?? 0)}` : 'none', met: !r.throttlePercent && !r.throttledMs },
    { aim: `sent ≤ ${AIM.sentOverNonzero}x non-zero RAM`, value: `${sent.toFixed(2)}x`, met: sent <= AIM.sentOverNonzero },
    { aim: 'page-wait p99 printed', value: r.pageWaitP99Ms !== undefined ? formatMs(r.pageWaitP99Ms) : 'no post-copy', met: r.pageWaitP99Ms !== undefined },
  ];
}

/** "throttle 99% for 1.20 s", "-" when never throttled. */
function throttleCell(r: MigrationResult): string {
  return r.throttlePercent || r.throttledMs ? `${r.throttlePercent ?? 0}% for ${formatMs(r.throttledMs ?? 0)}` : '-';
}

/** "1234 (p50 0.2 ms, p99 3 ms)", "-" without post-copy. */
function waitsCell(r: MigrationResult): string {
  return r.mode === 'postcopy' ? `${r.pageWaits ?? 0} (p50 ${formatMs(r.pageWaitP50Ms ?? 0)}, p99 ${formatMs(r.pageWaitP99Ms ?? 0)})` : '-';
}

/** One table line for a row. */
function line(x: Row, linkName: string): string {
  const head = [x.guest.padEnd(9), (x.link === 'cap' ? linkName : 'loopback').padEnd(9), x.postcopy.padEnd(7)];
  if (!x.r) return [...head, `FAILED: ${x.error}`].join(' ');
  const r = x.r;
  const sent = `${formatBytes(r.bytesSent)} / ${formatBytes(x.nonzeroRam)} (${(r.bytesSent / x.nonzeroRam).toFixed(2)}x)`;
  return [
    ...head, (r.policy ?? r.mode).padEnd(9), formatMs(r.downtimeMs).padEnd(9), throttleCell(r).padEnd(20), sent.padEnd(31), waitsCell(r).padEnd(30),
    (r.mode === 'postcopy' ? formatMs(r.allPresentMs ?? 0) : '-').padEnd(10), formatMs(r.totalMs).padEnd(9),
    `${formatMs(x.completeMs)}${Number.isFinite(x.overLinkTime) ? ` (${x.overLinkTime.toFixed(2)}x)` : ''}`.padEnd(17), x.verified ? 'yes' : 'NO',
  ].join(' ');
}

/** The db summary: the policy's choice and reason, and what each option cost the guest in this run. */
function dbSummary(rows: Row[]): string[] {
  const by = (m: PostcopyMode) => rows.find((x) => x.guest === 'db' && x.postcopy === m)?.r;
  const auto = by('auto'), never = by('never'), always = by('always');
  if (!auto) return [];
  const pre = never ? `pre-copy only: ${never.throttlePercent ? `throttled ${never.throttlePercent}% for ${formatMs(never.throttledMs ?? 0)}` : 'no throttle'}, downtime ${formatMs(never.downtimeMs)}` : 'pre-copy only: not measured';
  const post = [auto, always].find((r) => r?.mode === 'postcopy');
  const pc = post ? `post-copy: ${post.pageWaits ?? 0} page waits (p50 ${formatMs(post.pageWaitP50Ms ?? 0)}, p99 ${formatMs(post.pageWaitP99Ms ?? 0)}), all present ${formatMs(post.allPresentMs ?? 0)} after resume, downtime ${formatMs(post.downtimeMs)}` : 'post-copy: not measured';
  return [
    `db: the policy chose ${auto.policy ?? auto.mode} (${auto.policyReason || 'no reason given'})`,
    `    guest's cost of each option, same run: ${pre}; ${post === always ? '--postcopy always ' : ''}${pc}`,
  ];
}

/** The table: every row, its aims with met / missed, then the db summary. */
function table(rows: Row[], o: Options): string {
  const linkName = `${(o.capBytesPerSec * 8 / 1e9).toFixed(2).replace(/\.?0+$/, '')}Gbit`;
  const out = [
    `post-copy vs pre-copy only, ${formatBytes(o.mem)} sim guests, one agent pair on loopback, one run ("never" = pre-copy only, throttling when it stalls)`,
    `${'guest'.padEnd(9)} ${'link'.padEnd(9)} ${'asked'.padEnd(7)} ${'policy'.padEnd(9)} ${'downtime'.padEnd(9)} ${'throttle'.padEnd(20)} ${'sent / non-zero RAM'.padEnd(31)} ${'page waits'.padEnd(30)} ${'all pres.'.padEnd(10)} ${'total'.padEnd(9)} ${'complete (x link)'.padEnd(17)} verified`,
  ];
  for (const x of rows) {
    out.push(line(x, linkName));
    out.push(`    aims: ${x.aims.map((a) => `${a.aim}: ${a.value} ${a.met ? 'met' : 'MISSED'}`).join('; ')}`);
  }
  return [...out, '', ...dbSummary(rows)].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mem: { type: 'string' }, quick: { type: 'boolean' }, bandwidth: { type: 'string' }, 'db-dirty-rate': { type: 'string' }, only: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const only = values.only;
  if (only !== undefined && !ONLY.includes(only)) throw new Error(`--only must be one of ${ONLY.join(', ')}, got "${only}"`);
  const cases = CASES.filter((c) => only === undefined || c.link === only || c.guest === only);
  const o: Options = {
    mem: parseSize(values.mem ?? (values.quick ? '256MiB' : '1GiB'), '--mem'),
    capBytesPerSec: parseRate(values.bandwidth ?? '1Gbit', '--bandwidth'),
    dbDirtyRate: parseRate(values['db-dirty-rate'] ?? '200MiB/s', '--db-dirty-rate'),
  };
  if (o.capBytesPerSec <= 0) throw new Error('--bandwidth must be a positive rate (e.g. 1Gbit)');
  const agents = await startAgents(2, 'pcbench');
  const rows: Row[] = [];
  try {
    const [a, b] = agents;
    for (const [i, c] of cases.entries()) {
      const row = await once(a, b, c, o, i);
      rows.push(row);
      if (values.json) console.log(JSON.stringify({ bench: 'postcopy', ...c, ...(row.r ?? {}), ...(row.error ? { error: row.error } : {}), memoryVerified: row.r?.verified ?? false, completeMs: row.completeMs, overLinkTime: row.overLinkTime, nonzeroRam: row.nonzeroRam, guestCheckOk: row.guestCheckOk, verified: row.verified, aims: row.aims }));
      else console.error(`${c.guest} ${c.link} --postcopy ${c.postcopy}: ${row.r ? `${row.r.policy ?? row.r.mode}, ${formatMs(row.completeMs)}` : `FAILED: ${row.error}`}`);
    }
  } finally {
    await stopAgents(agents);
  }
  if (!values.json) console.log(table(rows, o));
  process.exitCode = rows.every((x) => x.verified) ? 0 : 1;
}

main().catch((e: unknown) => { console.error(`postcopy-bench: ${(e as Error).message}`); process.exitCode = 1; });
