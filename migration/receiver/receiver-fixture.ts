/** Test fixture of the receiver's and the source engine's tests: a fresh IncomingMigration beside a paused sim source, and an in-memory frame channel into a receiver. */
import { SimHypervisor } from '../../hypervisor/sim/sim-hypervisor';
import type { VmSpec } from '../../hypervisor/types';
import { DroverError } from '../../lib/errors';
import type { FrameChannel } from '../precopy/precopy-source';
import { decodeFrame, encodeFrame } from '../wire/frame-codec';
import { acks, type Ack, type Frame } from '../wire/protocol';
import { IncomingMigration, type BulkChannelOffer } from './receiver';

/** Runs `body` with a fresh incoming migration `id` of `spec` (and a paused source domain's device state); `bulk`: the bulk channel it offers. */
export async function withIncoming(spec: VmSpec, id: string, body: (m: IncomingMigration, deviceState: Buffer) => Promise<void>, tunnel = '', bulk?: BulkChannelOffer): Promise<void> {
  const hv = new SimHypervisor();
  try {
    const src = await hv.createDomain(spec);
    await src.pause();
    const device = Buffer.from(src.saveDeviceState());
    const m = new IncomingMigration(id, 'tok', await hv.createIncoming({ ...spec, name: `${spec.name}-in` }), bulk);
    m.tunnel = tunnel;
    await body(m, device);
  } finally {
    await hv.close();
  }
}

/** What `channelInto` can do beyond delivering frames in order. */
export interface InProcessChannelOptions {
  /** After this many batches the stream breaks like a dead peer (UNAVAILABLE) and delivers nothing more. */
  failAfterBatches?: number;
  /**
   * Decode every frame from one of a few reused wire buffers and overwrite the buffer with this
   * byte right after the frame's apply settled (as the agent gives a bulk socket's buffer back).
   */
  reuseWithGarbage?: number;
  /** Called with every frame the channel decoded, and whether its wire buffer carried an earlier frame. */
  onFrame?: (frame: Frame, reusedBuffer: boolean) => void;
}

/**
 * An in-memory frame channel from a source engine into receiver `target`: every frame is
 * encoded and decoded as on the wire and applied in order; Owned follows Activated (the agent's
 * part in direct mode, protocol.ts switchover); the target's own acks (post-copy's PageRequests) reach the source.
 */
export function channelInto(target: IncomingMigration, o: InProcessChannelOptions = {}): FrameChannel & { batches: number } {
  let onAck: (a: Ack) => void = () => {};
  let onError: (e: DroverError) => void = () => {};
  let chain = Promise.resolve();
  const free: Buffer[] = [];
  target.onAck = (a) => onAck(a);
  const ch = {
    batches: 0,
    write(f: Frame | Buffer) {
      const bytes = encodeFrame(f);
      let held: Buffer | undefined;
      let reused = false;
      if (o.reuseWithGarbage !== undefined) {
        held = free.pop();
        reused = !!held && held.length >= bytes.length;
        if (!held || !reused) held = Buffer.allocUnsafe(Math.max(bytes.length, 2 ** 21));
        bytes.copy(held);
      }
      const frame = decodeFrame(held ? held.subarray(0, bytes.length) : bytes);
      o.onFrame?.(frame, reused);
      if (frame.kind === 'batch' && ++ch.batches > (o.failAfterBatches ?? Infinity)) {
        queueMicrotask(() => onError(new DroverError('UNAVAILABLE', 'peer went away')));
        return true;
      }
      chain = chain.then(async () => {
        try {
          const out = frame.kind === 'start' ? [target.start(frame)] : await target.apply(frame);
          for (const a of out) { onAck(a); if (a.kind === 'activated') onAck(acks.owned(false)); }
        } catch (err) {
          onError(DroverError.from(err));
        } finally {
          if (held) { held.fill(o.reuseWithGarbage!); free.push(held); } // applied: the buffer carries the next frame
        }
      });
      return true;
    },
    drained: () => Promise.resolve(),
    end: () => undefined,
    onAck: (a: (x: Ack) => void, e: (x: DroverError) => void) => { onAck = a; onError = e; },
  };
  return ch;
}
