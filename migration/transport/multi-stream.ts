/**
 * One migration over N Transfer streams, seen by the engine as one FrameChannel (protocol.ts
 * "Parallel streams"). Stream 0 carries Start, Round, Complete, Abort and the engine's other
 * control frames; page batches go to the least-loaded stream (fewest unacknowledged bytes,
 * ties to the lowest index). Acks of every stream are merged into the cumulative form the engine's
 * BatchWindow expects: "every batch up to seq landed" is said only once each batch up to seq was
 * acknowledged on the stream that carried it. Any stream failing fails the whole channel.
 *
 * Stream 0's Accepted is held back from the engine until every secondary stream joined (with the
 * join token stream 0's Accepted carried) and was accepted, so the first batch finds all N ready.
 *
 * Bulk channel (protocol.ts "Bulk channel"): with a dialer, stream 0's Start offers it; a target
 * that answers with a bulk port gets N sockets as streams 1..N, which carry every batch while
 * stream 0 keeps the control frames (and post-copy's batches). A socket that fails before it was
 * accepted is replaced by a Transfer stream of the same index (transport auto), or fails the
 * migration (transport bulk); once accepted, any stream failing fails the migration.
 */
import type * as grpc from '@grpc/grpc-js';
import { DroverError } from '../../lib/errors';
import { fromServiceError } from '../../lib/grpc-status';
import type { FrameChannel } from '../precopy/precopy-source';
import { batchSeqOf, decodeAck } from '../wire/frame-codec';
import type { Ack, DataTransport, Frame } from '../wire/protocol';
import { dialBulk, type BulkDialer } from './bulk-socket';

/**
 * How long a broken secondary stream's error waits for stream 0's: the target's reason for
 * failing a migration travels on stream 0, and a reset socket must not hide it. Short against
 * the rollback it delays.
 */
const SECONDARY_FAILURE_GRACE_MS = 200;

/** A raw Transfer call (frames or encoded frames out, encoded acks in). */
export type TransferStream = grpc.ClientDuplexStream<Frame | Buffer, Buffer>;

/** What a lane needs of its stream: a Transfer call or a bulk socket (bulk-socket.ts). */
export interface LaneStream {
  write(frame: Frame | Buffer): boolean;
  readonly writableNeedDrain: boolean;
  on(event: 'data', listener: (b: Buffer) => void): this;
  on(event: 'error', listener: (e: Error) => void): this;
  on(event: 'end' | 'drain', listener: () => void): this;
  off(event: 'drain', listener: () => void): this;
  end(): void;
  cancel(): void;
}

/** The bulk channel a channel may offer: how to dial the target's listener, on which host, and whether a failure may fall back. */
export interface BulkOffer {
  dialer: BulkDialer;
  host: string;
  /** "bulk": no fallback (the target must offer it and every socket must join); "auto": Transfer streams instead. */
  transport: Exclude<DataTransport, 'grpc'>;
}

/** One stream of the channel and the batches it carries. */
interface Lane {
  index: number;
  call: LaneStream;
  /** A bulk socket (else a Transfer call). */
  bulk: boolean;
  /** Batches sent on this stream and not acknowledged on it: [seq, bytes] in send order. */
  queue: [number, number][];
  unacked: number;
  accepted: boolean;
}

/** A FrameChannel over `count` streams; `open(i)` opens stream i (each its own connection). */
export class MultiStreamChannel implements FrameChannel {
  private readonly lanes: Lane[] = [];
  private onAckHandler: (a: Ack) => void = () => {};
  private onErrorHandler: (e: DroverError) => void = () => {};
  private failure: DroverError | undefined;
  private ended = false;
  /** Stream 0's Accepted, held until every secondary joined. */
  private heldAccepted: Extract<Ack, { kind: 'accepted' }> | undefined;
  private start: Extract<Frame, { kind: 'start' }> | undefined;
  /** Every batch up to `low` was acknowledged; `above` holds acknowledged seqs past it. */
  private low = 0;
  private readonly above = new Set<number>();
  private appliedBytes = 0;
  /** Post-copy: every batch goes on stream 0 from now on. */
  private pinned = false;
  /** The target took the bulk channel: streams 1..count are sockets (or their fallbacks) and stream 0 carries no batches. */
  private bulkPort = 0;
  private joinToken = '';

  /** `bulk`: offer the bulk channel (absent: Transfer streams only). */
  constructor(private readonly open: (index: number) => TransferStream, readonly count: number, private readonly label: string, private readonly bulk?: BulkOffer) {
    this.addLane(0, open(0), false);
  }

  /** The transport the page batches take: "bulk" once a socket joined, else "grpc". */
  get transport(): 'grpc' | 'bulk' {
    return this.lanes.some((l) => l.bulk && l.accepted) ? 'bulk' : 'grpc';
  }

  /** Streams in all: stream 0 plus the bulk sockets, or the count asked for. */
  private get total(): number {
    return this.bulkPort ? this.count + 1 : this.count;
  }

  /** The lanes batches go to: all of them, or with the bulk channel the sockets (stream 0 again once pinned). */
  private get dataLanes(): Lane[] {
    return this.bulkPort && !this.pinned ? this.lanes.slice(1) : this.lanes;
  }

  /** Unacknowledged bytes per stream (tests and diagnostics). */
  get loads(): number[] {
    return this.lanes.map((l) => l.unacked);
  }

  /** Writes a frame: batches to the least-loaded stream, everything else to stream 0. */
  write(frame: Frame | Buffer): boolean {
    if (Buffer.isBuffer(frame)) {
      const seq = batchSeqOf(frame);
      if (seq !== undefined) {
        const lane = this.pick();
        lane.queue.push([seq, frame.length]);
        lane.unacked += frame.length;
        lane.call.write(frame);
        return this.hasRoom();
      }
      this.lanes[0].call.write(frame);
      return this.hasRoom();
    }
    if (frame.kind === 'start') {
      this.start = frame;
      this.lanes[0].call.write({ ...frame, streamIndex: 0, streamCount: this.count, ...(this.bulk ? { bulk: this.bulk.dialer.mode } : {}) });
      return this.hasRoom();
    }
    this.lanes[0].call.write(frame);
    return this.hasRoom();
  }

  /** Resolves once some stream can take more (at once when one can). */
  drained(): Promise<void> {
    if (this.hasRoom()) return Promise.resolve();
    const lanes = this.dataLanes;
    return new Promise<void>((resolve) => {
      const done = () => { for (const l of lanes) l.call.off('drain', done); resolve(); };
      for (const l of lanes) l.call.on('drain', done);
    });
  }

  /** Post-copy runs on stream 0 only: batches go there from now on (its acks keep their order). */
  pinToFirstStream(): void {
    this.pinned = true;
  }

  /** Ends every stream. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const l of this.lanes) l.call.end();
  }

  /** Cancels every stream. */
  cancel(): void {
    this.ended = true;
    for (const l of this.lanes) l.call.cancel();
  }

  /** Registers the engine's handlers. */
  onAck(handler: (ack: Ack) => void, onError: (err: DroverError) => void): void {
    this.onAckHandler = handler;
    this.onErrorHandler = onError;
  }

  private addLane(index: number, call: LaneStream, bulk: boolean): Lane {
    const lane: Lane = { index, call, bulk, queue: [], unacked: 0, accepted: false };
    this.lanes[index] = lane;
    const what = () => `${bulk ? 'bulk socket' : 'Transfer stream'} ${index} of ${this.total}`;
    call.on('data', (b: Buffer) => {
      if (this.lanes[index] !== lane) return;
      try {
        this.onLaneAck(lane, decodeAck(b));
      } catch (err) {
        this.fail(DroverError.from(err));
      }
    });
    call.on('error', (err) => this.laneFailed(lane, err instanceof DroverError ? err : fromServiceError(err, `target ${this.label} ${what()}`)));
    call.on('end', () => {
      if (!this.ended) this.laneFailed(lane, new DroverError('UNAVAILABLE', `target ${this.label} closed ${what()} of the migration`));
    });
    return lane;
  }

  /**
   * A stream failed. A bulk socket that was not accepted yet (no connection, a refused handshake
   * or join) is replaced by a Transfer stream of the same index unless the bulk channel is
   * required; anything else fails the channel.
   */
  private laneFailed(lane: Lane, err: DroverError): void {
    if (this.lanes[lane.index] !== lane || this.failure) return;
    if (lane.index > 0 && lane.accepted && !this.ended) {
      // A secondary that breaks usually does because the target failed the migration and closed
      // every stream: its reason comes on stream 0, so give that a moment to arrive first.
      setTimeout(() => { if (!this.ended) this.fail(err); }, SECONDARY_FAILURE_GRACE_MS).unref();
      return;
    }
    if (!lane.bulk || lane.accepted || this.ended || this.bulk?.transport !== 'auto') {
      return this.fail(lane.bulk && !lane.accepted ? new DroverError(err.code, `the bulk channel to ${this.label} failed before it was joined (--transport bulk): ${err.message}`, { cause: err }) : err);
    }
    lane.call.cancel();
    const start = this.start!;
    const fallback = this.addLane(lane.index, this.open(lane.index), false);
    fallback.call.write({ ...start, streamIndex: lane.index, streamCount: this.total, token: this.joinToken });
  }

  private onLaneAck(lane: Lane, ack: Ack): void {
    if (ack.kind === 'batch') return this.onBatchAck(lane, ack.seq, ack.bytes);
    if (ack.kind === 'accepted' && !lane.accepted) {
      lane.accepted = true;
      if (lane.index === 0) this.joinSecondaries(ack);
      else this.releaseAccepted();
      return;
    }
    if (lane.index !== 0) throw new DroverError('INTERNAL', `target ${this.label} sent a ${ack.kind} ack on secondary stream ${lane.index} (only batch acks belong there)`);
    this.onAckHandler(ack);
  }

  /** Stream 0 accepted: opens the other streams with its join token (bulk sockets when the target offered them). */
  private joinSecondaries(ack: Extract<Ack, { kind: 'accepted' }>): void {
    const start = this.start;
    if (this.bulk?.transport === 'bulk' && !ack.bulkPort) {
      throw new DroverError('FAILED_PRECONDITION', `target ${this.label} does not offer the bulk channel (--transport bulk; it runs without a bulk listener, or in another TLS mode)`);
    }
    this.bulkPort = ack.bulkPort ?? 0;
    this.heldAccepted = ack;
    if (this.total === 1) return this.releaseAccepted();
    if (!ack.joinToken || !start) {
      throw new DroverError('FAILED_PRECONDITION', `target ${this.label} accepted the migration without a join token: it does not take ${this.count} parallel streams (run with --streams 1)`);
    }
    this.joinToken = ack.joinToken;
    if (this.ended) return; // the engine gave up (cancel, failure) before the target answered
    for (let i = 1; i < this.total; i++) {
      const bulk = this.bulkPort > 0 && this.bulk !== undefined;
      const lane = this.addLane(i, bulk ? dialBulk(this.bulk!.dialer, this.bulk!.host, this.bulkPort) : this.open(i), bulk);
      lane.call.write({ ...start, streamIndex: i, streamCount: this.total, token: ack.joinToken, ...(bulk ? { bulk: this.bulk!.dialer.mode } : {}) });
    }
  }

  /** Passes stream 0's Accepted on once every stream was accepted. */
  private releaseAccepted(): void {
    const held = this.heldAccepted;
    if (!held || this.lanes.length < this.total || !this.lanes.every((l) => l.accepted)) return;
    this.heldAccepted = undefined;
    this.onAckHandler(held);
  }

  /** A stream's cumulative ack: its batches up to `seq` landed; the engine hears of the merged low-water mark. */
  private onBatchAck(lane: Lane, seq: number, bytes: number): void {
    while (lane.queue.length > 0 && lane.queue[0][0] <= seq) {
      const [s, n] = lane.queue.shift()!;
      lane.unacked -= n;
      this.above.add(s);
    }
    if (bytes > this.appliedBytes) this.appliedBytes = bytes;
    const before = this.low;
    while (this.above.delete(this.low + 1)) this.low++;
    if (this.low > before) this.onAckHandler({ kind: 'batch', seq: this.low, bytes: this.appliedBytes });
  }

  /**
   * The stream with the fewest unacknowledged bytes among those with room; ties go to the lowest
   * index. So an idle pipeline (the paused final round's few batches) uses stream 0, where
   * Complete follows them in order and the target's wait for them costs nothing, while a bulk
   * round, which keeps every stream loaded, spreads over all of them.
   */
  private pick(): Lane {
    const lanes = this.dataLanes;
    let best = lanes[0];
    if (this.pinned) return best;
    for (const l of lanes) {
      const room = !l.call.writableNeedDrain, bestRoom = !best.call.writableNeedDrain;
      if ((room && !bestRoom) || (room === bestRoom && l.unacked < best.unacked)) best = l;
    }
    return best;
  }

  private hasRoom(): boolean {
    return this.dataLanes.some((l) => !l.call.writableNeedDrain);
  }

  private fail(err: DroverError): void {
    if (this.failure) return;
    this.failure = err;
    this.onErrorHandler(err);
  }
}
