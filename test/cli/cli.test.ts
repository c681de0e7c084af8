/**
 * The `drover` command: bad input gets one clear line and exit code 2; a migration through the
 * CLI prints the same result object as `bench --json`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { startAgents, stopAgents, withoutInsecureWarning, type TestAgent } from '../support/agents';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');

/** Runs the CLI; the direct agent forms get --insecure (these agents are plain text), whose one warning line is checked and set apart. */
function drover(...args: string[]) {
  const direct = (args[0] === 'vm' && args.includes('--agent')) || (args[0] === 'migrate' && args.includes('--from'));
  const r = spawnSync(process.execPath, [BIN, ...args, ...(direct ? ['--insecure'] : [])], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: direct ? withoutInsecureWarning(r.stderr) : r.stderr };
}

let agents: TestAgent[] = [];
before(async () => { agents = await startAgents(2, 'cli'); });
after(async () => { await stopAgents(agents); });

test('malformed sizes, unknown profiles and unknown flags exit 2 with one line naming the problem', () => {
  const cases: [string[], RegExp][] = [
    [['vm', 'create', 'x', '--agent', agents[0].address, '--mem', '12XB', '--profile', 'web'], /--mem "12XB" has an unknown unit "XB"/],
    [['vm', 'create', 'x', '--agent', agents[0].address, '--mem', 'lots', '--profile', 'web'], /--mem "lots" is not a number with a unit/],
    [['vm', 'create', 'x', '--agent', agents[0].address, '--mem', '1GiB', '--profile', 'gamer'], /unknown profile "gamer" \(expected one of: idle, web, db, mmuncher\)/],
    [['vm', 'create', 'x', '--agent', agents[0].address, '--mem', '1GiB', '--profile', 'web', '--colour', 'red'], /Unknown option '--colour'/],
    [['migrate', 'x', '--from', agents[0].address, '--to', agents[1].address, '--bandwidth', '1Gbps'], /--bandwidth "1Gbps" has an unknown unit "Gbps"/],
    [['migrate', 'x', '--from', agents[0].address, '--to', agents[1].address, '--max-downtime', '5'], /--max-downtime "5" needs a unit/],
    [['migrate', 'x', '--from', 'nowhere', '--to', agents[1].address], /--from "nowhere" is not HOST:PORT/],
    [['bench', '--profile', 'gamer'], /unknown profile "gamer"/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [args, re] of cases) {
    const r = drover(...args);
    assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.err}`);
    assert.match(r.err.split('\n')[0], re);
  }
});

test('an unreachable agent exits 2 naming its address', () => {
  const r = drover('vm', 'list', '--agent', '127.0.0.1:1');
  assert.equal(r.code, 2);
  assert.match(r.err, /cannot reach agent at 127\.0\.0\.1:1/);
  assert.equal(r.err.trim().split('\n').length, 1);
});

test('an unknown VM exits 2; create, migrate --json and list work end to end', () => {
  const [a, b] = agents;
  const missing = drover('migrate', 'ghost', '--from', a.address, '--to', b.address);
  assert.equal(missing.code, 2);
  assert.match(missing.err, /VM ghost is not on node cli-0/);
  assert.equal(drover('vm', 'create', 'c1', '--agent', a.address, '--mem', '64MiB', '--profile', 'web').code, 0);
  const dup = drover('vm', 'create', 'c1', '--agent', a.address, '--mem', '64MiB', '--profile', 'web');
  assert.equal(dup.code, 2);
  assert.match(dup.err, /already exists/);
  const m = drover('migrate', 'c1', '--from', a.address, '--to', b.address, '--max-downtime', '5ms', '--bandwidth', '0', '--verify', '--json');
  assert.equal(m.code, 0, m.err);
  const result = JSON.parse(m.out.trim());
  for (const k of ['profile', 'memBytes', 'mode', 'verified', 'downtimeMs', 'totalMs', 'rounds', 'bytesSent', 'throughputBytesPerSec']) assert.ok(k in result, `result has ${k}`);
  assert.equal(result.verified, true);
  assert.ok(typeof result.guestBlackoutMs === 'number' && result.guestBlackoutMs >= 0, `the direct result carries the guest-observed blackout: ${result.guestBlackoutMs}`);
  assert.equal(result.vm, 'c1');
  const list = JSON.parse(drover('vm', 'list', '--agent', b.address, '--json').out);
  assert.deepEqual(list.map((v: { name: string; node: string }) => [v.name, v.node]), [['c1', 'cli-1']]);
  assert.equal(drover('vm', 'verify', 'c1', '--agent', b.address).code, 0);
  assert.equal(drover('vm', 'destroy', 'c1', '--agent', b.address).code, 0);
});
