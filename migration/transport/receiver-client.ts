/**
 * The source agent's client of a target's MigrationReceiver: PrepareIncoming, and the Transfer
 * stream wrapped as the engine's FrameChannel. Frames are encoded by frame-codec.ts (batches
 * arrive already encoded); acks are decoded here. Every unary call has a deadline.
 */
import * as grpc from '@grpc/grpc-js';
import { clientConstructor, type ServiceClient } from '../../proto/load';
import { deadlineIn, fromServiceError } from '../../lib/grpc-status';
import { DroverError } from '../../lib/errors';
import type { VmSpec } from '../../hypervisor/types';
import { specToWire } from '../wire/spec-codec';
import { CHANNEL_OPTIONS } from '../../lib/grpc-channel';
import type { FrameChannel } from '../precopy/precopy-source';
import { decodeAck, encodeFrame } from '../wire/frame-codec';
import { PROTOCOL_VERSION, type Ack, type DataTransport, type Frame } from '../wire/protocol';
import { MultiStreamChannel } from './multi-stream';
import { hostOf, type BulkDialer } from './bulk-socket';

/** The Transfer method's codecs: raw frames in on the server (decoded by the handler, so a bad
 * frame gets INVALID_ARGUMENT rather than grpc-js' INTERNAL), encoded acks out. */
export const TRANSFER_CODECS = {
  Transfer: {
    serializeRequest: (f: Frame | Buffer) => encodeFrame(f),
    deserializeRequest: (b: Buffer) => b,
    serializeResponse: (b: Buffer) => b,
    deserializeResponse: (b: Buffer) => b,
  },
};

/** The MigrationReceiver client with TRANSFER_CODECS: Transfer takes frames (or encoded frames) and yields raw acks. */
type ReceiverStub = Omit<ServiceClient<'MigrationReceiver'>, 'Transfer'> & {
  Transfer(options?: grpc.CallOptions): grpc.ClientDuplexStream<Frame | Buffer, Buffer>;
};

const ReceiverClient = clientConstructor<'MigrationReceiver', ReceiverStub>('MigrationReceiver', TRANSFER_CODECS);

/** The receiver channel's options: batches under 8 MiB; the SNI every node certificate carries (agent-client.ts TLS_SERVER_NAME). */
const RECEIVER_CHANNEL_OPTIONS: grpc.ChannelOptions = { ...CHANNEL_OPTIONS, 'grpc.max_send_message_length': 8 * 1024 * 1024, 'grpc.ssl_target_name_override': 'drover' };

/** A reservation on the target. */
export interface Reservation {
  migrationId: string;
  token: string;
  protocolVersion: number;
  maxFrameBytes: number;
}

/** Client of one target agent's MigrationReceiver. */
export class ReceiverClientConn {
  private readonly client: ReceiverStub;
  /** Clients of streams 1..streams-1, each its own connection (made when a multi-stream channel opens). */
  private readonly extra: ReceiverStub[] = [];
  /** The page stream's channel once opened (which transport its batches took). */
  private channel: MultiStreamChannel | undefined;
  /** The client of the latest post-copy reconnection (reopen). */
  private recovery: ReceiverStub | undefined;

  /**
   * `credentials`: the source's TLS expecting the target node (clientCredentials); plain text by
   * default. `streams`: how many data streams `open` runs the page stream over. `bulk`: how to
   * dial the target's bulk listener and whether to (protocol.ts "Bulk channel"; absent or
   * transport "grpc": Transfer streams only).
   */
  constructor(readonly address: string, private readonly credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), readonly streams = 1,
    private readonly bulk?: { dialer: BulkDialer; transport: DataTransport }) {
    this.client = new ReceiverClient(address, credentials, RECEIVER_CHANNEL_OPTIONS);
  }

  /** The transport the page batches took ("grpc" unless a bulk socket joined; "" before `open`). */
  get transportUsed(): '' | 'grpc' | 'bulk' {
    return this.channel ? this.channel.transport : this.opened ? 'grpc' : '';
  }

  private opened = false;

  /** Reserves the target (PrepareIncoming). */
  prepare(spec: VmSpec, sourceNode: string, migrationId: string, protocolVersion = PROTOCOL_VERSION): Promise<Reservation> {
    return new Promise((resolve, reject) => {
      this.client.PrepareIncoming(
        { protocolVersion, spec: specToWire(spec), sourceNode, migrationId },
        { deadline: deadlineIn(60_000) },
        (err, res) => {
          if (err) reject(fromServiceError(err, `target ${this.address} PrepareIncoming`));
          else resolve(res);
        },
      );
    });
  }

  /** Releases a reservation that will not be used. */
  abort(migrationId: string, token: string): Promise<void> {
    return new Promise((resolve) => {
      this.client.AbortIncoming({ migrationId, token }, { deadline: deadlineIn(5000) }, () => resolve());
    });
  }

  /** AbortIncoming, rejecting with the target's refusal (a wrong token, another source): for tools and tests. */
  release(migrationId: string, token: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.AbortIncoming({ migrationId, token }, { deadline: deadlineIn(5000) }, (err) => {
        if (err) reject(fromServiceError(err, `target ${this.address} AbortIncoming`));
        else resolve();
      });
    });
  }

  /** Opens the raw Transfer stream (the QEMU tunnel drives it itself, see qemu-source.ts). */
  openStream(deadlineMs: number): grpc.ClientDuplexStream<Frame | Buffer, Buffer> {
    return this.client.Transfer({ deadline: deadlineIn(deadlineMs) });
  }

  /**
   * Opens the Transfer stream as a FrameChannel, over `streams` Transfer calls when more than
   * one (multi-stream.ts; each secondary its own connection). `deadlineMs` bounds the whole stream.
   */
  open(deadlineMs: number): FrameChannel & { cancel(): void } {
    this.opened = true;
    const bulk = this.bulk && this.bulk.transport !== 'grpc' ? { dialer: this.bulk.dialer, host: hostOf(this.address), transport: this.bulk.transport } : undefined;
    if (this.streams > 1 || bulk) {
      const deadline = deadlineIn(deadlineMs);
      return this.channel = new MultiStreamChannel((i) => this.streamClient(i).Transfer({ deadline }), this.streams, this.address, bulk);
    }
    return singleStream(this.client.Transfer({ deadline: deadlineIn(deadlineMs) }), this.address);
  }

  /**
   * Post-copy recovery: a new Transfer stream over a new connection (its own subchannel: the old
   * connection may be dead, and grpc-js would wait out its reconnect backoff). One stream.
   */
  reopen(deadlineMs: number): FrameChannel & { cancel(): void } {
    this.recovery?.close();
    const c = new ReceiverClient(this.address, this.credentials, { ...RECEIVER_CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
    this.recovery = c;
    return singleStream(c.Transfer({ deadline: deadlineIn(deadlineMs) }), this.address);
  }

  /**
   * SwitchoverOutcome: what the target did with migration `migrationId` after its stream broke
   * (protocol.ts "Switchover outcome"), asked over a new connection (the old one may be dead, and
   * grpc-js would wait out its reconnect backoff). Rejects when the target does not answer in time.
   */
  switchoverOutcome(migrationId: string, token: string, deadlineMs: number): Promise<string> {
    const c = new ReceiverClient(this.address, this.credentials, { ...RECEIVER_CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
    return new Promise<string>((resolve, reject) => {
      c.SwitchoverOutcome({ migrationId, token }, { deadline: deadlineIn(deadlineMs) }, (err, res) => {
        if (err) reject(fromServiceError(err, `target ${this.address} SwitchoverOutcome`));
        else resolve(res?.outcome ?? '');
      });
    }).finally(() => c.close());
  }

  /** The client of stream `i`: stream 0 uses the reservation's connection, the others one each. */
  private streamClient(i: number): ReceiverStub {
    if (i === 0) return this.client;
    // A local subchannel pool keeps grpc-js from sharing one connection among the clients.
    const c = new ReceiverClient(this.address, this.credentials, { ...RECEIVER_CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
    this.extra.push(c);
    return c;
  }

  /** Closes the channel (and every secondary stream's, and a reconnection's). */
  close(): void {
    this.client.close();
    this.recovery?.close();
    for (const c of this.extra.splice(0)) c.close();
  }
}

/** A single Transfer call as the engine's FrameChannel (acks decoded here; `address` names the target in errors). */
function singleStream(call: grpc.ClientDuplexStream<Frame | Buffer, Buffer>, address: string): FrameChannel & { cancel(): void } {
  let onAck: (a: Ack) => void = () => {};
  let onError: (e: DroverError) => void = () => {};
  let ended = false;
  call.on('data', (b: Buffer) => {
    try {
      onAck(decodeAck(b));
    } catch (err) {
      onError(DroverError.from(err));
    }
  });
  call.on('error', (err) => onError(fromServiceError(err, `target ${address} Transfer`)));
  call.on('end', () => {
    if (!ended) onError(new DroverError('UNAVAILABLE', `target ${address} closed the migration stream`));
  });
  return {
    write: (frame) => call.write(frame),
    drained: () => new Promise<void>((r) => call.once('drain', () => r())),
    end: () => {
      if (ended) return;
      ended = true;
      call.end();
    },
    onAck: (a, e) => { onAck = a; onError = e; },
    cancel: () => { ended = true; call.cancel(); },
  };
}
