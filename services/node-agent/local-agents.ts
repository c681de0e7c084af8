/**
 * Node agents as separate local processes on loopback, each with a client: what `drover bench`,
 * the benchmarks and the tests start. The agents are the same `drover agent` operators run.
 */
import { startAgent, type AgentProcess } from './agent-process';
import { AgentClient } from './client/agent-client';

/** A running local agent and a client of it. */
export interface LocalAgent {
  proc: AgentProcess;
  client: AgentClient;
  address: string;
}

/** Starts `n` agents named `${prefix}-i` with extra `drover agent` flags; stop them with `stopAgents`. */
export async function startAgents(n: number, prefix = 'node', extra: string[] = []): Promise<LocalAgent[]> {
  const out: LocalAgent[] = [];
  for (let i = 0; i < n; i++) {
    const proc = await startAgent(`${prefix}-${i}`, extra);
    const client = new AgentClient(proc.address);
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
