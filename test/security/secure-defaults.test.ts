/**
 * Plain text only when asked for: `drover agent`, `drover migrator` and `drover scheduler` without
 * certificates refuse to start (one line, exit 2) unless given --insecure, which prints a warning.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { droverBin } from '../../services/local-cluster';

function run(args: string[]): Promise<{ code: number; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['DROVER_CA', 'DROVER_CERT', 'DROVER_KEY', 'DROVER_AGENT_TUNED']) delete env[k];
  return new Promise((resolve) => {
    execFile(process.execPath, [droverBin(), ...args], { env, timeout: 30_000 }, (err, _out, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr: String(stderr) });
    });
  });
}

for (const args of [['agent', '--listen', '127.0.0.1:0', '--node-id', 'n1'], ['migrator', '--etcd', 'http://127.0.0.1:1'], ['scheduler', '--etcd', 'http://127.0.0.1:1']]) {
  test(`drover ${args[0]} without certificates refuses to start (exit 2, one line naming --insecure)`, async () => {
    const r = await run(args);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /no certificates: give --ca, --cert and --key .* or --insecure for plain text/);
  });
}

test('drover migrator --insecure runs in plain text with the warning line (here: then fails to reach etcd)', async () => {
  const r = await run(['migrator', '--etcd', 'http://127.0.0.1:1', '--insecure']);
  assert.match(r.stderr, /--insecure: migrator runs in plain text, no authentication/);
  assert.match(r.stderr, /cannot reach etcd/);
});
