/** deploy/prometheus/: every rule file passes `promtool check rules`, the alert unit tests pass, the scrape configs parse. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoDir } from './support';

const DIR = path.join(repoDir(), 'deploy', 'prometheus');

function promtool(args: string[], cwd = DIR): string {
  try {
    return execFileSync('promtool', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    assert.fail(`promtool ${args.join(' ')} failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

test('promtool check rules: every rule file in deploy/prometheus', () => {
  const files = fs.readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f) && !/^prometheus/.test(f) && !/\.test\.ya?ml$/.test(f));
  assert.ok(files.includes('alerts.yml'), 'alerts.yml exists');
  const out = promtool(['check', 'rules', ...files]);
  assert.match(out, /SUCCESS: \d+ rules found/);
  const text = fs.readFileSync(path.join(DIR, 'alerts.yml'), 'utf8');
  for (const a of ['DroverDowntimeSLOBreached', 'DroverMigrationsFailing', 'DroverMigrationNotConverging', 'DroverDrainStuck', 'DroverNoSchedulerLeader']) {
    assert.match(text, new RegExp(`alert: ${a}\\b`), a);
  }
});

test('promtool test rules: each alert fires on its symptom and not on a healthy cluster', () => {
  assert.match(promtool(['test', 'rules', 'alerts.test.yml']), /SUCCESS/);
});

test('promtool check config: the local and the Kubernetes scrape configs', () => {
  assert.match(promtool(['check', 'config', 'prometheus-local.yml']), /SUCCESS/);
  // Debian's Prometheus is built without Kubernetes service discovery: if this promtool refuses
  // the field, check everything else of the config with a static target in its place.
  const k8s = fs.readFileSync(path.join(DIR, 'prometheus-kubernetes.yml'), 'utf8');
  assert.match(k8s, /kubernetes_sd_configs:\n\s+- role: pod/);
  let out = '';
  try {
    out = execFileSync('promtool', ['check', 'config', 'prometheus-kubernetes.yml'], { cwd: DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const msg = `${(e as { stdout?: string }).stdout ?? ''}${(e as { stderr?: string }).stderr ?? ''}`;
    assert.match(msg, /field kubernetes_sd_configs not found/, msg);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-k8s-'));
    try {
      fs.copyFileSync(path.join(DIR, 'alerts.yml'), path.join(tmp, 'alerts.yml'));
      fs.writeFileSync(path.join(tmp, 'k8s.yml'), k8s.replace(/kubernetes_sd_configs:\n(\s+)- role: pod/, "static_configs:\n$1- targets: ['127.0.0.1:9100']"));
      out = promtool(['check', 'config', 'k8s.yml'], tmp);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  assert.match(out, /SUCCESS/);
});
