/**
 * An agent started the way an operator starts it (`drover agent ...`, no launcher) runs with the
 * data-plane settings: it re-executes itself once, and the pair behaves as one process for
 * signals: SIGTERM stops both cleanly, SIGKILL of the outer one takes the inner one down too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DATA_PLANE_NODE_FLAGS, tunedEnv } from './process-tuning';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'drover');

/** Starts `bin/drover agent` plainly; resolves with the process once it listens. */
function startPlainAgent(nodeId: string): Promise<ChildProcess> {
  const env = { ...process.env };
  delete env.DROVER_AGENT_TUNED;
  delete env.GLIBC_TUNABLES;
  const child = spawn(process.execPath, [BIN, 'agent', '--listen', '127.0.0.1:0', '--node-id', nodeId, '--insecure'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (/listening on/.test(out)) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`agent exited with ${code} before listening: ${out}`)));
  });
}

/** Pids whose parent is `ppid` (from /proc). */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid) || fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

test('a plainly started agent re-executes itself with the data-plane flags; SIGTERM stops both with exit 0', async () => {
  const outer = await startPlainAgent('pt-term');
  const inner = childrenOf(outer.pid!);
  assert.equal(inner.length, 1, `one tuned child, found ${inner.join(',')}`);
  const cmdline = fs.readFileSync(`/proc/${inner[0]}/cmdline`, 'utf8').split('\0');
  for (const f of DATA_PLANE_NODE_FLAGS) assert.ok(cmdline.includes(f), `child runs with ${f}: ${cmdline.join(' ')}`);
  const environ = fs.readFileSync(`/proc/${inner[0]}/environ`, 'utf8');
  assert.match(environ, /GLIBC_TUNABLES=glibc\.malloc\.mmap_threshold=/);
  const exited = new Promise<number | null>((r) => outer.once('exit', (code) => r(code)));
  outer.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.ok(await waitGone(inner[0], 5000), 'the tuned child stopped too');
});

test('SIGKILL of the outer agent process takes the tuned child down (no orphaned agent)', async () => {
  const outer = await startPlainAgent('pt-kill');
  const [inner] = childrenOf(outer.pid!);
  assert.ok(inner > 0);
  outer.kill('SIGKILL');
  assert.ok(await waitGone(inner, 5000), 'the tuned child exited when its parent died');
});

test('tunedEnv keeps an operator-set GLIBC_TUNABLES and marks the process tuned', () => {
  assert.equal(tunedEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, 'glibc.malloc.arena_max=2');
  assert.match(tunedEnv({}).GLIBC_TUNABLES!, /mmap_threshold=33554432/);
  assert.equal(tunedEnv({}).DROVER_AGENT_TUNED, '1');
});
