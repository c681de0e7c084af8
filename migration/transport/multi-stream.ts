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
 */
import type * as grpc from '@grpc/grpc-js';
import { DroverError } from '../../lib/errors';
import { fromServiceError } from '../../lib/grpc-status';
import type { FrameChannel } from '../precopy/precopy-source';
import { batchSeqOf, decodeAck } from '../wire/frame-codec';
import type { Ack, Frame } from '../wire/protocol';

/** A raw Transfer call (frames or encoded frames out, encoded acks in). */
export type TransferStream = grpc.ClientDuplexStream<Frame | Buffer, Buffer>;

/** One stream of the channel and the batches it carries. */
interface Lane {
  index: number;
  call: TransferStream;
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

  constructor(private readonly open: (index: number) => TransferStream, readonly count: number, private readonly label: string) {
    this.addLane(0);
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
      this.lanes[0].call.write({ ...frame, streamIndex: 0, streamCount: this.count });
      return this.hasRoom();
    }
    this.lanes[0].call.write(frame);
    return this.hasRoom();
  }

  /** Resolves once some stream can take more (at once when one can). */
  drained(): Promise<void> {
    if (this.hasRoom()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => { for (const l of this.lanes) l.call.off('drain', done); resolve(); };
      for (const l of this.lanes) l.call.on('drain', done);
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

  private addLane(index: number): Lane {
    const lane: Lane = { index, call: this.open(index), queue: [], unacked: 0, accepted: false };
    this.lanes[index] = lane;
    lane.call.on('data', (b: Buffer) => {
      try {
        this.onLaneAck(lane, decodeAck(b));
      } catch (err) {
        this.fail(DroverError.from(err));
      }
    });
    lane.call.on('error', (err) => this.fail(fromServiceError(err, `target ${this.label} Transfer stream ${index} of ${this.count}`)));
    lane.call.on('end', () => {
      if (!this.ended) this.fail(new DroverError('UNAVAILABLE', `target ${this.label} closed stream ${index} of ${this.count} of the migration`));
    });
    return lane;
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

  /** Stream 0 accepted: opens streams 1..count-1 with its join token. */
  private joinSecondaries(ack: Extract<Ack, { kind: 'accepted' }>): void {
    const start = this.start;
    if (!ack.joinToken || !start) {
      throw new DroverError('FAILED_PRECONDITION', `target ${this.label} accepted the migration without a join token: it does not take ${this.count} parallel streams (run with --streams 1)`);
    }
    this.heldAccepted = ack;
    if (this.ended) return; // the engine gave up (cancel, failure) before the target answered
    for (let i = 1; i < this.count; i++) {
      const lane = this.addLane(i);
      lane.call.write({ ...start, streamIndex: i, streamCount: this.count, token: ack.joinToken });
    }
  }

  /** Passes stream 0's Accepted on once every stream was accepted. */
  private releaseAccepted(): void {
    const held = this.heldAccepted;
    if (!held || this.lanes.length < this.count || !this.lanes.every((l) => l.accepted)) return;
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
    let best = this.lanes[0];
    if (this.pinned) return best;
    for (const l of this.lanes) {
      const room = !l.call.writableNeedDrain, bestRoom = !best.call.writableNeedDrain;
      if ((room && !bestRoom) || (room === bestRoom && l.unacked < best.unacked)) best = l;
    }
    return best;
  }

  private hasRoom(): boolean {
    return this.lanes.some((l) => !l.call.writableNeedDrain);
  }

  private fail(err: DroverError): void {
    if (this.failure) return;
    this.failure = err;
    this.onErrorHandler(err);
  }
}
