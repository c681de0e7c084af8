/**
 * Outgoing migration strategy: the engine for a domain, chosen by how it migrates
 * (hypervisor/types.ts MigrationCapability), never by the driver's name.
 *   pages  → PrecopySource over the receiver's page stream (the engine copies pages itself);
 *   stream → QemuSource: the hypervisor's own stream tunnelled over Transfer (protocol.ts "QEMU tunnel").
 */
import type { MigrationPhase, MigrationResult } from '../types';
import type { DroverError } from '../../lib/errors';
import type { Fence } from '../wire/protocol';
import { PrecopySource, type SwitchoverOutcome } from '../precopy/precopy-source';
import { QemuSource, type QemuSourceOptions } from '../qemu/qemu-source';

/** Deadline of a page stream (the whole Transfer call), ms. */
export const PAGE_STREAM_DEADLINE_MS = 10 * 60_000;

/**
 * What an outgoing migration needs, whichever engine runs it: the stream engine's options (less
 * the stream, which the capability gives), plus the switchover's fence and outcome resolver.
 */
export type OutgoingOptions = Omit<QemuSourceOptions, 'stream' | 'log' | 'fence' | 'resolveOutcome'> & {
  /** The switchover's fenced intent (cluster mode), sent to the target in Start. */
  fence?: Fence;
  /** After Complete with a broken stream: does the target own the VM (precopy-source.ts)? */
  resolveOutcome?: (cause: DroverError) => Promise<SwitchoverOutcome>;
  log: (e: Record<string, unknown>) => void;
};

/** A running outgoing migration, as the agent sees it. */
export interface OutgoingEngine {
  /** The phase it is in (cancel is refused after switchover). */
  readonly currentPhase: MigrationPhase;
  /** Runs it; resolves when the VM runs on the target. */
  run(): Promise<MigrationResult>;
  /** How long the source VM has been paused in it, ms (MigrationResult.pausedMs; read after a failure too). */
  readonly pausedMs: number;
  /** Post-copy failed after the switch: the VM is lost and the source's stale copy must go (page streams only). */
  readonly vmLost?: boolean;
  /** After Complete the outcome could not be learned: the VM stays paused on the source until resolved (page streams only). */
  readonly switchoverUnresolved?: boolean;
  /** After the switch to post-copy, until it ended: the target runs the VM with pages only this node holds (page streams only). */
  readonly inPostcopy?: boolean;
}

/** The engine for `o.domain`'s migration capability. */
export function outgoingEngine(o: OutgoingOptions): OutgoingEngine {
  const m = o.domain.migration;
  switch (m.kind) {
    case 'pages':
      return new PrecopySource({
        migrationId: o.reservation.migrationId, domain: m.pages, channel: o.conn.open(PAGE_STREAM_DEADLINE_MS), policy: o.policy, token: o.reservation.token,
        sourceName: o.sourceName, targetName: o.targetName, signal: o.signal, onProgress: o.onProgress, fence: o.fence, resolveOutcome: o.resolveOutcome,
        reconnect: () => o.conn.reopen(PAGE_STREAM_DEADLINE_MS), log: o.log,
      });
    case 'stream':
      return new QemuSource({
        migrationId: o.migrationId, domain: o.domain, stream: m.stream, conn: o.conn, reservation: o.reservation, policy: o.policy,
        sourceName: o.sourceName, targetName: o.targetName, signal: o.signal, onProgress: o.onProgress, log: o.log, fence: o.fence, resolveOutcome: o.resolveOutcome,
      });
  }
}
