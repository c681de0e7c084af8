/**
 * Target side of the QEMU tunnel (protocol.ts, "QEMU tunnel"). After a Start with tunnel="qemu"
 * the agent hands the Transfer stream's frames here: the target QEMU (started `-incoming defer`
 * by PrepareIncoming) gets `migrate-incoming unix:<socket in its own directory>`, this module
 * connects to that socket and pumps StreamData both ways (qemu-tunnel.ts). On Complete it waits
 * until QEMU has loaded the stream and runs the guest, and the guest's heartbeat grows, then
 * answers Verified + Activated (the agent then records the ownership and sends Owned, as for a
 * page stream: services/node-agent/switchover.ts). Any failure goes to `onError`; the agent then
 * kills this QEMU. A failure to run after Complete is refused as ABORTED (an explicit refusal:
 * the source resumes its QEMU).
 *
 * Native transport (protocol.ts "QEMU native"): when Start asks for the transport this node is
 * configured for, the target QEMU listens on TCP itself (TLS: authorizing only the DN of the
 * certificate the source agent presented on this Transfer call) and Accepted names its
 * HOST:PORT; no bytes pass through here, the Transfer stream keeps the control (keepalives,
 * Complete, Verified/Activated, Owned). If the target QEMU cannot listen so (no TLS in QEMU,
 * ...), the tunnel is used instead: Accepted without qemu_listen.
 */
import * as net from 'node:net';
import { DroverError, failedPrecondition } from '../../lib/errors';
import type { Domain } from '../../hypervisor/types';
import type { StreamMigration } from '../../hypervisor/stream-migration';
import { SocketTunnel, trace, traceQmp, type MessageStream } from './qemu-tunnel';
import type { IncomingMigration } from '../receiver/receiver';
import { acks, MAX_STREAMS, TUNNEL_WINDOW_BYTES, type Ack, type Frame } from '../wire/protocol';
import { certificateDn } from '../../hypervisor/qemu/migration-tls';
import { encodeAck } from '../wire/frame-codec';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long Complete may wait for the target QEMU to run the guest (below RECEIVE_IDLE_TIMEOUT_MS). */
const RUN_WAIT_MS = 20_000;
/** How long the guest may take to beat once it runs. */
const BEAT_WAIT_MS = 5_000;


async function connectUnix(path: string, timeoutMs = 5000): Promise<net.Socket> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection(path);
        s.once('connect', () => { s.off('error', reject); resolve(s); });
        s.once('error', reject);
      });
    } catch (err) {
      if (Date.now() > end) throw err;
      await sleep(10);
    }
  }
}

/** One incoming QEMU migration carried by the tunnel. */
export class QemuTunnelTarget {
  private constructor(
    private readonly m: IncomingMigration,
    private readonly dom: Domain,
    private readonly stream: StreamMigration,
    /** The tunnel's socket pump; undefined in a native migration (QEMU to QEMU). */
    private readonly tunnel: SocketTunnel | undefined,
  ) {}

  /** The transport in use: '' = the tunnel, else the native one ('tls', 'tcp'). */
  get transport(): string {
    return this.tunnel ? '' : this.dom.migration.kind === 'stream' ? this.dom.migration.stream.nativeTransport : '';
  }

  /**
   * Makes the target QEMU listen: natively when Start asked for `requested` and this node is
   * configured for it, else on its unix socket, which this connects to (the tunnel). Returns the
   * Accepted ack to send (with `postcopy`: whether this target enabled postcopy-ram; the
   * source's capability must match; native: qemu_transport and qemu_listen).
   */
  static async open(m: IncomingMigration, dom: Domain, stream: MessageStream, onError: (e: DroverError) => void, requested = '', log?: (e: Record<string, unknown>) => void, multifdChannels = 0): Promise<{ target: QemuTunnelTarget; accepted: Ack }> {
    if (dom.migration.kind !== 'stream') throw failedPrecondition(`QEMU tunnel: ${dom.spec.name} on this target migrates page by page (its hypervisor sends no stream of its own)`);
    const qs = dom.migration.stream;
    traceQmp(qs.events, 'target');
    let failed = false;
    const report = (why: string) => {
      if (failed || m.state === 'active' || m.state === 'aborted') return;
      failed = true;
      const exit = qs.alive ? '' : `; ${qs.exitError('incoming migration').message}`;
      onError(new DroverError('ABORTED', `target QEMU of ${dom.spec.name}: ${why}${exit}`));
    };
    void qs.exited.then(() => report('QEMU exited during the migration'));
    if (requested && requested === qs.nativeTransport) {
      try {
        const authzIdentity = requested === 'tls' ? peerDn(stream) : undefined;
        // multifd: one TLS connection per channel between the QEMUs (QEMU 7.2: no post-copy with it).
        const channels = Math.min(MAX_STREAMS, multifdChannels > 1 ? multifdChannels : 0);
        const ep = await qs.startIncoming({ multifdChannels: channels, listen: { authzIdentity } });
        const tcp = ep.tcp!;
        const accepted: Ack = {
          ...acks.accepted(0), postcopy: ep.postcopy, qemuTransport: requested, qemuListen: `${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}`,
          ...(ep.multifdChannels > 1 ? { qemuMultifdChannels: ep.multifdChannels } : {}),
        } as Ack;
        log?.({ msg: 'qemu native migration listening', migration: m.migrationId, transport: requested, listen: (accepted as { qemuListen: string }).qemuListen, authz: authzIdentity, multifdChannels: ep.multifdChannels });
        return { target: new QemuTunnelTarget(m, dom, qs, undefined), accepted };
      } catch (err) {
        if (!qs.alive) throw err;
        log?.({ msg: 'qemu native migration unavailable: tunnel', migration: m.migrationId, error: DroverError.from(err).message });
      }
    }
    const ep = await qs.startIncoming({ multifdChannels: 0 }); // one stream: the tunnel has one channel
    const socket = await connectUnix(ep.socketPath);
    const tunnel = new SocketTunnel(socket, stream, true, (err) => report(`migration socket: ${err.message}`));
    tunnel.onCredit = (bytes) => stream.write(encodeAck(acks.batch(0, bytes))); // the source's window
    return { target: new QemuTunnelTarget(m, dom, qs, tunnel), accepted: { ...acks.accepted(TUNNEL_WINDOW_BYTES), postcopy: ep.postcopy } as Ack };
  }

  /** Handles one frame after Start; returns the acks to send. */
  async onFrame(f: Frame): Promise<Ack[]> {
    switch (f.kind) {
      case 'stream':
        if (!this.tunnel) {
          // native: the source's keepalive (empty StreamData); QEMU's bytes never come this way
          if (f.data.length || f.eof || f.channel !== 0) throw failedPrecondition(`QEMU native migration ${this.m.migrationId}: StreamData with bytes on the control stream`);
          return [];
        }
        if (f.channel !== 0) throw failedPrecondition(`QEMU tunnel: channel ${f.channel} is not open (one channel; multifd is not tunnelled)`);
        this.tunnel.deliver(f.data, f.eof);
        return [];
      case 'complete':
        if (this.m.state !== 'tunnel') throw failedPrecondition(`migration ${this.m.migrationId}: Complete frame not allowed in state ${this.m.state}`);
        return this.finish(f.pausedAtMs).catch((err: unknown) => {
          // An explicit refusal (ABORTED, in REFUSAL_CODES): the agent kills this QEMU, so the source may resume its own.
          const e = DroverError.from(err);
          throw e.code === 'ABORTED' ? e : new DroverError('ABORTED', `target QEMU of ${this.dom.spec.name} did not run: ${e.message}; target discards it`, { cause: e });
        });
      case 'abort':
        throw new DroverError('ABORTED', `source aborted migration ${this.m.migrationId}: ${f.reason}`);
      default:
        throw failedPrecondition(`migration ${this.m.migrationId}: ${f.kind} frame not allowed in a QEMU tunnel (state ${this.m.state})`);
    }
  }

  /** The source QEMU completed: wait for the target QEMU to run the guest and the guest to beat. */
  private async finish(pausedAtMs: number): Promise<Ack[]> {
    const dom = this.dom;
    const qs = this.stream;
    const end = Date.now() + RUN_WAIT_MS;
    for (;;) {
      if (!qs.alive) throw qs.exitError('incoming migration');
      const st = await qs.runStatus();
      if (st === 'running') break;
      const q = await qs.incomingStatus();
      if (q.status === 'failed') throw new DroverError('ABORTED', `target QEMU failed to load the stream of ${dom.spec.name}: ${q.error ?? 'failed'}`);
      if (Date.now() > end) throw new DroverError('DEADLINE_EXCEEDED', `target QEMU of ${dom.spec.name} not running ${RUN_WAIT_MS} ms after the source completed (status ${st})`);
      await sleep(2);
    }
    const beats = dom.heartbeat().beats;
    await qs.waitBeats(beats, BEAT_WAIT_MS);
    trace(`target runs; first target beat ${qs.firstBeatMs().toFixed(1)}`);
    const verified = acks.verified(Buffer.alloc(0), this.m.domain.pageCount);
    this.m.tunnelActivated(pausedAtMs);
    const now = performance.timeOrigin + performance.now();
    return [verified, acks.activated(qs.resumedAtMs || now, qs.firstBeatMs() || now)];
  }

  /** Bytes the target QEMU received through the tunnel. */
  get bytesIn(): number {
    return this.tunnel?.stats.inBytes ?? 0;
  }

  /** Breaks the socket (failure; the agent also kills the QEMU). */
  close(): void {
    this.tunnel?.destroy();
  }
}

/**
 * The DN of the certificate the source agent presented on the Transfer call (the gRPC server
 * call's auth context): the only client the target QEMU's tls-authz lets in. PERMISSION_DENIED
 * when the call has none (a native TLS Start over a plain-text call).
 */
function peerDn(stream: MessageStream): string {
  const raw = stream.getAuthContext?.()?.sslPeerCertificate?.raw;
  if (!raw) throw new DroverError('PERMISSION_DENIED', 'QEMU native TLS migration: the source presented no certificate on the Transfer call');
  return certificateDn(raw);
}
