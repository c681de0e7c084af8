/**
 * The `drover` command with VM disks: `vm create --disk` against an agent process, `vm verify`
 * reporting the disk check, an unreachable export refused naming it (exit 2), and
 * `bench --json --disk auto` (bench starts its own qemu-nbd) reporting `diskVerified`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { startAgents, stopAgents, withoutInsecureWarning, type TestAgent } from '../support/agents';
import { LocalNbdServer, startQemuNbd } from '../../storage/nbd/local-nbd-servers';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');
const MiB = 1024 * 1024;

function drover(...args: string[]) {
  const direct = args[0] === 'vm'; // plain-text test agents: the direct vm form needs --insecure
  const r = spawnSync(process.execPath, [BIN, ...args, ...(direct ? ['--insecure'] : [])], { encoding: 'utf8', timeout: 180_000 });
  return { code: r.status, out: r.stdout, err: withoutInsecureWarning(r.stderr) };
}

let agents: TestAgent[] = [];
let s: LocalNbdServer;
before(async () => {
  agents = await startAgents(1, 'dcli');
  s = await startQemuNbd({ export: { name: 'cli-disk', size: 16 * MiB } });
});
after(async () => {
  await stopAgents(agents);
  await s?.dispose();
});

test('vm create --disk runs the guest on the export; vm verify reports the disk check', async () => {
  const a = agents[0].address;
  const c = drover('vm', 'create', 'dbcli', '--agent', a, '--mem', '64MiB', '--profile', 'db', '--disk', s.uri());
  assert.equal(c.code, 0, c.err);
  await new Promise((r) => setTimeout(r, 300));
  const v = drover('vm', 'verify', 'dbcli', '--agent', a);
  assert.equal(v.code, 0, v.err + v.out);
  assert.match(v.out, /guest check passed .*disk ok \(WAL acked seq [1-9][0-9]*; NBD export "cli-disk": ok/);
  const j = JSON.parse(drover('vm', 'verify', 'dbcli', '--agent', a, '--json').out);
  assert.equal(j.diskChecked, true);
  assert.equal(j.diskOk, true);
  assert.ok(j.diskAckedSeq > 0);
  assert.equal(drover('vm', 'destroy', 'dbcli', '--agent', a).code, 0);

  const gone = s.uri().replace(/cli-disk$/, 'no-such-disk');
  const bad = drover('vm', 'create', 'dbbad', '--agent', a, '--mem', '64MiB', '--profile', 'db', '--disk', gone);
  assert.equal(bad.code, 2, bad.err);
  assert.match(bad.err, /NBD export "no-such-disk"/);
});

test('bench --json --disk auto: diskVerified on the target, extra downtime measured in the same run', () => {
  const r = drover('bench', '--json', '--disk', 'auto', '--profile', 'idle', '--mem', '64MiB', '--warmup', '300ms', '--run-after', '300ms');
  assert.equal(r.code, 0, r.err + r.out);
  const lines = r.out.trim().split('\n').map((l) => JSON.parse(l));
  const runs = lines.filter((l) => l.profile);
  assert.equal(runs.length, 2);
  const [plain, disk] = runs;
  assert.equal(plain.disk, '');
  assert.equal(plain.diskVerified, false);
  assert.match(disk.disk, /^nbd:\/\/127\.0\.0\.1:[0-9]+\/drover-bench$/);
  assert.equal(disk.diskVerified, true);
  assert.equal(disk.verified, true);
  assert.ok(disk.diskAckedSeq > 0);
  const extra = lines.find((l) => l.diskExtraDowntime)?.diskExtraDowntime;
  assert.equal(extra?.profile, 'idle');
  const cost = lines.find((l) => l.diskPauseCost)?.diskPauseCost;
  assert.ok(cost && cost.quiesceMs.median >= 0 && cost.records > 0, JSON.stringify(cost));
});
