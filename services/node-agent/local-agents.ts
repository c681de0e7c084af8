/**
 * Node agents as separate local processes on loopback, each with a client: what `drover bench`,
 * the benchmarks and the tests start. The agents are the same `drover agent` operators run.
 * Plain text (--insecure) by default; with `tls` each agent gets a node identity issued from the
 * CA in `tls.dir` and the clients present `tls.client`.
 */
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startAgent, type AgentProcess } from './agent-process';
import { AgentClient } from './client/agent-client';
import { issueIdentity } from '../../lib/pki/issue';
import { clientCredentials } from '../../lib/pki/grpc-credentials';
import type { TlsFiles } from '../../lib/pki/tls-files';

/** A running local agent and a client of it. */
export interface LocalAgent {
  proc: AgentProcess;
  client: AgentClient;
  address: string;
}

/** Mutual TLS for local agents: a CA folder (ca.crt, ca.key) and the clients' identity. */
export interface LocalAgentsTls {
  dir: string;
  client: TlsFiles;
}

/** The `drover agent` TLS flags for node `nodeId`, issuing its certificate in `dir` (reused if it exists). */
export async function agentTlsArgs(dir: string, nodeId: string): Promise<string[]> {
  const cert = path.join(dir, `${nodeId}.crt`);
  const key = path.join(dir, `${nodeId}.key`);
  if (!fs.existsSync(cert)) await issueIdentity(dir, { role: 'node', name: nodeId, hosts: ['127.0.0.1'] });
  return ['--ca', path.join(dir, 'ca.crt'), '--cert', cert, '--key', key];
}

/** Starts `n` agents named `${prefix}-i` with extra `drover agent` flags; stop them with `stopAgents`. */
export async function startAgents(n: number, prefix = 'node', extra: string[] = [], opts: { tls?: LocalAgentsTls } = {}): Promise<LocalAgent[]> {
  const out: LocalAgent[] = [];
  for (let i = 0; i < n; i++) {
    const nodeId = `${prefix}-${i}`;
    const tlsArgs = opts.tls ? await agentTlsArgs(opts.tls.dir, nodeId) : [];
    const proc = await startAgent(nodeId, [...tlsArgs, ...extra]);
    const creds = opts.tls ? clientCredentials(opts.tls.client, { role: 'node', name: nodeId }) : grpc.credentials.createInsecure();
    const client = new AgentClient(proc.address, creds);
    await client.waitReady(10_000);
    out.push({ proc, client, address: proc.address });
  }
  return out;
}

/** Stops agents (gracefully, then by force). */
export async function stopAgents(agents: LocalAgent[]): Promise<void> {
  for (const a of agents) a.client.close();
  await Promise.all(agents.map((a) => a.proc.stop(3000)));
}
