/** `drover migrate VM --from ADDR --to ADDR`: one live migration between two agents. */
import { parse, required, flag, duration, rate, int, address, UsageError } from '../args';
import { AgentClient } from '../../services/node-agent/client/agent-client';
import { ProgressLine } from '../progress';
import { formatBytes, formatMs, formatRate } from '../../lib/units';
import type { MigrationResult } from '../../migration/types';

/** Usage of the direct form. */
export const MIGRATE_USAGE = 'drover migrate VM --from ADDR --to ADDR [--max-downtime 5ms] [--bandwidth 1Gbit|0] [--max-rounds N] [--verify] [--json]';

/** Prints a result as a few human lines. */
export function printResult(r: MigrationResult): void {
  console.log(`${r.vm}: ${r.outcome} in ${formatMs(r.totalMs)}, downtime ${formatMs(r.downtimeMs)}, ${r.rounds} rounds (${r.stopReason}${r.throttlePercent ? `, guest throttled to ${100 - r.throttlePercent}% speed` : ''}), ${formatBytes(r.bytesSent)} sent at ${formatRate(r.throughputBytesPerSec)}${r.verified ? ', verified' : ''}`);
}

/** Runs the direct migrate form. */
export async function migrateDirect(argv: string[]): Promise<number> {
  const p = parse(argv, {
    from: { type: 'string' }, to: { type: 'string' }, 'max-downtime': { type: 'string' }, bandwidth: { type: 'string' },
    'max-rounds': { type: 'string' }, verify: { type: 'boolean' }, json: { type: 'boolean' }, id: { type: 'string' },
  }, 'migrate');
  if (p.positionals.length !== 1) throw new UsageError(`migrate: expected one VM name (usage: ${MIGRATE_USAGE})`);
  const vm = p.positionals[0];
  const from = address(required(p, 'from', 'migrate'), '--from');
  const to = address(required(p, 'to', 'migrate'), '--to');
  const policy = {
    maxDowntimeMs: duration(p, 'max-downtime'), bandwidthBytesPerSec: rate(p, 'bandwidth'), maxRounds: int(p, 'max-rounds'), verify: flag(p, 'verify'),
  };
  const json = flag(p, 'json');
  const src = new AgentClient(from);
  const dst = new AgentClient(to);
  try {
    await src.waitReady();
    await dst.waitReady();
    const line = new ProgressLine();
    let result: MigrationResult | undefined;
    try {
      result = await src.migrateVm(vm, to, policy, json ? undefined : (e) => line.update(e), String(p.values.id ?? ''));
    } finally {
      line.done();
    }
    if (json) console.log(JSON.stringify(result));
    else printResult(result);
    return 0;
  } finally {
    src.close();
    dst.close();
  }
}
