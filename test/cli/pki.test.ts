/** `drover pki init|issue|show` through the real binary; bad input is one line and exit code 2. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-cli-pki-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function drover(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('init, issue and show round trip', () => {
  const init = drover('pki', 'init', '--dir', dir, '--days', '100');
  assert.equal(init.code, 0, init.err);
  assert.match(init.out, /CA CN=drover-ca, O=drover \(ecdsa-p256\)/);
  assert.equal(fs.statSync(path.join(dir, 'ca.key')).mode & 0o777, 0o600);
  const issued = drover('pki', 'issue', '--dir', dir, '--role', 'node', '--name', 'n1', '--host', '127.0.0.1', '--host', 'n1.cluster.local', '--days', '7');
  assert.equal(issued.code, 0, issued.err);
  assert.match(issued.out, /^spiffe:\/\/drover\/node\/n1 \(CN node\.n1\)/);
  const show = drover('pki', 'show', path.join(dir, 'n1.crt'), '--json');
  assert.equal(show.code, 0, show.err);
  const s = JSON.parse(show.out);
  assert.deepEqual(s.identity, { role: 'node', name: 'n1' });
  assert.equal(s.subject, 'CN=node.n1, O=drover, OU=node');
  assert.deepEqual(s.sans.map((n: { type: string; value: string }) => `${n.type}:${n.value}`), ['uri:spiffe://drover/node/n1', 'ip:127.0.0.1', 'dns:n1.cluster.local']);
  const days = (Date.parse(s.notAfter) - Date.now()) / 86_400_000;
  assert.ok(days > 6.9 && days < 7.1, `${days}`);
  const text = drover('pki', 'show', path.join(dir, 'n1.crt'));
  assert.equal(text.code, 0);
  assert.match(text.out, /identity +node\/n1/);
  assert.match(text.out, /issuer +CN=drover-ca, O=drover/);
});

test('bad input exits 2 with one line naming the problem', () => {
  const cases: [string[], RegExp][] = [
    [['pki', 'issue', '--dir', dir, '--role', 'root', '--name', 'x'], /--role "root" is not one of admin, controller, node, monitor/],
    [['pki', 'issue', '--dir', dir, '--role', 'node', '--name', 'Bad_Name'], /name "Bad_Name" must match/],
    [['pki', 'issue', '--dir', dir, '--role', 'node', '--name', 'h', '--host', 'not a host'], /host "not a host" is not/],
    [['pki', 'issue', '--dir', dir, '--role', 'node'], /--name is required/],
    [['pki', 'issue', '--dir', dir, '--role', 'node', '--name', 'z', '--days', 'ten'], /--days "ten" is not a whole number/],
    [['pki', 'init', '--dir', dir], /ca\.crt already exists/],
    [['pki', 'init', '--dir', dir, '--key-type', 'rsa'], /--key-type "rsa" is not one of/],
    [['pki', 'show', path.join(dir, 'missing.crt')], /missing\.crt does not exist/],
    [['pki', 'show', path.join(dir, 'n1.key')], /is not a PEM certificate/],
    [['pki', 'frob'], /pki: unknown subcommand "frob"/],
    [['pki', 'init', '--dir', dir, '--colour'], /Unknown option '--colour'/],
  ];
  for (const [args, re] of cases) {
    const r = drover(...args);
    assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.err}`);
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.match(r.err, re);
  }
  assert.ok(!fs.existsSync(path.join(dir, 'x.crt')) && !fs.existsSync(path.join(dir, 'h.crt')));
});
