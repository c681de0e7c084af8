/**
 * Incoming migration strategy: how a target takes a migration into a prepared domain, chosen by
 * how the domain migrates (hypervisor/types.ts MigrationCapability), never by the driver's name.
 *   pages  → the receiver (IncomingMigration) applies the page stream itself;
 *   stream → the receiver checks Start (a tunnel Start of the hypervisor's stream kind), then
 *            QemuTunnelTarget hands the frames to the target hypervisor's own stream.
 */
import { DroverError, failedPrecondition } from '../../lib/errors';
import { PAGE_SIZE, type Domain, type PagedDomain } from '../../hypervisor/types';
import type { StreamMigration } from '../../hypervisor/stream-migration';
import { IncomingMigration, type BulkChannelOffer, type ReceiverState } from '../receiver/receiver';
import { QemuTunnelTarget } from '../qemu/qemu-target';
import type { MessageStream } from '../qemu/qemu-tunnel';
import type { Ack, Frame } from '../wire/protocol';

/**
 * The receiver's view of a domain whose hypervisor takes its own stream: geometry and life cycle
 * only. In a tunnel the receiver checks Start and then hands every frame to the tunnel, so none of
 * the page operations is reached; each refuses, naming the step, if one ever were.
 */
function tunnelReceiverDomain(d: Domain, s: StreamMigration): PagedDomain {
  const refuse = (what: string): never => {
    throw failedPrecondition(`${what}: ${d.spec.name} migrates through its hypervisor's own ${s.tunnelKind} stream, not page by page`);
  };
  const pageCount = d.spec.memBytes / PAGE_SIZE;
  return {
    spec: d.spec, pageCount, slotPages: pageCount,
    state: () => d.state(), pause: () => d.pause(), resume: () => d.resume(), destroy: () => d.destroy(), stats: () => d.stats(),
    guestCheck: () => d.guestCheck(), heartbeat: () => d.heartbeat(), resetHeartbeatGap: () => d.resetHeartbeatGap(),
    startDirtyLog: () => refuse('startDirtyLog'), stopDirtyLog: () => refuse('stopDirtyLog'),
    getAndClearDirtyLog: () => refuse('getAndClearDirtyLog'), peekDirtyLog: () => refuse('peekDirtyLog'),
    markDirty: () => refuse('markDirty'), pageView: () => refuse('pageView'), populatedBitmap: () => refuse('populatedBitmap'),
    isZeroPage: () => refuse('isZeroPage'), saveDeviceState: () => refuse('saveDeviceState'), loadDeviceState: () => refuse('loadDeviceState'),
  };
}

/** One incoming migration on a target: the receiver, plus the hypervisor's stream when the domain has one. */
export class IncomingSession {
  /** The receiver: Start checks (token, version, geometry, stream kind) and the page stream. */
  readonly receiver: IncomingMigration;
  private tunnel: QemuTunnelTarget | undefined;
  /** Start's qemu_transport: the native transport the source asked for ('' = the tunnel). */
  private requestedTransport = '';
  /** Start's qemu_multifd_channels (QEMU native only; 0 = one stream). */
  private requestedMultifd = 0;
  /**
   * Date.now() when Complete arrived (its bytes reached the agent; 0 = not yet): the target's copy
   * may run from then on, so its record window counts from it (services/node-agent/switchover-timing.ts).
   */
  completeArrivedAtMs = 0;

  /** `bulk`: the bulk channel the node offers (its listener), absent = none. */
  constructor(id: string, token: string, readonly domain: Domain, bulk?: BulkChannelOffer) {
    const m = domain.migration;
    if (m.kind === 'pages') {
      this.receiver = new IncomingMigration(id, token, m.pages, bulk);
    } else {
      this.receiver = new IncomingMigration(id, token, tunnelReceiverDomain(domain, m.stream), bulk);
      this.receiver.tunnel = m.stream.tunnelKind; // expect a tunnel Start of this stream kind
    }
  }

  /** The migration id. */
  get migrationId(): string { return this.receiver.migrationId; }
  /** The receiver's state. */
  get state(): ReceiverState { return this.receiver.state; }
  /** The switchover's fenced intent from Start (undefined = direct migration). */
  get fence(): import('../wire/protocol').Fence | undefined { return this.receiver.fence; }
  /** True for a hypervisor-stream (QEMU tunnel) migration. */
  get isTunnel(): boolean { return !!this.receiver.tunnel; }
  /** When the reservation was made (Date.now()). */
  get createdAt(): number { return this.receiver.createdAt; }

  /** True when `token` is this migration's token. */
  tokenMatches(token: string): boolean { return this.receiver.tokenMatches(token); }

  /** Handles Start: the receiver's checks (token, version, geometry, stream kind). Returns the ack to send unless a tunnel opens. */
  start(frame: Extract<Frame, { kind: 'start' }>): Ack {
    const ack = this.receiver.start(frame);
    this.requestedTransport = frame.qemuTransport ?? '';
    this.requestedMultifd = frame.qemuMultifdChannels ?? 0;
    return ack;
  }

  /**
   * After Start: for a tunnel, connects to the target hypervisor's own stream (its failures go to
   * `onError`) and returns the Accepted ack to send instead of Start's; undefined for a page stream.
   */
  async openTunnel(stream: MessageStream, onError: (e: DroverError) => void): Promise<Ack | undefined> {
    if (this.receiver.state !== 'tunnel') return undefined;
    const t = await QemuTunnelTarget.open(this.receiver, this.domain, stream, onError, this.requestedTransport, undefined, this.requestedMultifd);
    this.tunnel = t.target;
    return t.accepted;
  }

  /**
   * Handles a frame after Start; returns the acks to send. A page stream keeps no view of the
   * frame's bytes once the promise settled (receiver.ts apply); a tunnel does (QEMU takes the
   * bytes when its socket can), so only page streams' buffers may be reused.
   */
  apply(frame: Frame): Promise<Ack[]> {
    return this.tunnel ? this.tunnel.onFrame(frame) : this.receiver.apply(frame);
  }

  /** Breaks the hypervisor's stream, if any (failure or cancel). */
  closeTunnel(): void {
    this.tunnel?.close();
  }

  /** The target gives the migration up (discard); the receiver takes no more frames. */
  markAborted(): void {
    this.receiver.markAborted();
  }
}
