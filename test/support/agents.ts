/**
 * Test support: node agents as real separate processes on loopback, with clients, torn down
 * after each test. No mocks: the agents are the same `drover agent` operators run.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { DroverError } from '../../lib/errors';
import type { LocalAgent } from '../../services/node-agent/local-agents';

export { startAgents, stopAgents } from '../../services/node-agent/local-agents';

/** A running agent and a client of it. */
export type TestAgent = LocalAgent;

/** Waits until `f` returns true (polling), or throws after `timeoutMs` naming `what`. */
export async function waitFor(what: string, f: () => Promise<boolean> | boolean, timeoutMs = 15_000, everyMs = 100): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await f()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** The DroverError code of a rejected promise (fails the test if it resolves). */
export async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = DroverError.from(err);
    return { code: e.code, message: e.message };
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** The warning line every plain-text (--insecure) process prints on stderr. */
export const INSECURE_WARNING = /^drover: --insecure: .* plain text, no authentication$/;

/** stderr without its --insecure warning line (absent when the command failed before reading the TLS flags); throws if repeated. */
export function withoutInsecureWarning(stderr: string): string {
  const lines = stderr.split('\n');
  const warnings = lines.filter((l) => INSECURE_WARNING.test(l));
  if (warnings.length > 1) throw new Error(`expected at most one --insecure warning line on stderr, got ${warnings.length}: ${stderr}`);
  return lines.filter((l) => !INSECURE_WARNING.test(l)).join('\n');
}

/** Sleeps. */
export { setTimeout as sleep } from 'node:timers/promises';

/**
 * Records every line agent `proc` writes on stderr from now on, for a test that matches its log:
 * `stderrTail()` keeps only the last 4000 characters, which a busy migration's log outruns.
 * Returns the text recorded so far.
 */
export function recordStderr(proc: { child: import('node:child_process').ChildProcess }): () => string {
  let text = '';
  proc.child.stderr?.on('data', (b: Buffer) => { text += b.toString(); });
  return () => text;
}

/**
 * Asserts that VM `vm` runs on `target` only: its guest check passes there and its heartbeat
 * advances, and `source` holds no VM any more (it released its copy).
 */
export async function runsOnTargetOnly(source: TestAgent, target: TestAgent, vm: string): Promise<void> {
  const before = await target.client.getVm(vm);
  await sleep(200);
  const check = await target.client.verifyVm(vm);
  assert.equal(check.ok, true, check.detail);
  assert.ok(check.heartbeatBeats > before.heartbeatBeats, 'the guest runs on the target');
  assert.deepEqual((await source.client.listVms()).map((x) => x.spec.name), [], 'the source released its copy');
}

/** Destroys VM `vm` on every agent of `agents` that holds it (a test's clean-up: errors are ignored). */
export async function destroyEverywhere(vm: string, ...agents: TestAgent[]): Promise<void> {
  for (const a of agents) await a.client.destroyVm(vm).catch(() => undefined);
}
