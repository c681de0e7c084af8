/**
 * Registers a node agent in etcd: a persistent `nodes/<id>` record (address, capacity) and a
 * heartbeat `alive/<id>` under a lease, refreshed every second with load and the VM list (per-VM
 * dirty rate, CPU, touched RAM, and the last AnalyzeVm observation while recent: the cost model's input). When the agent stops or hangs, the lease expires, the heartbeat vanishes and
 * the scheduler marks the node's VMs unknown (it never restarts them elsewhere on its own).
 *
 * Each heartbeat carries the revision of this process's `nodes/<id>` write (`registrationRev`): a
 * restarted agent is a new registration, and the scheduler reports at once the VMs placed on the
 * node before it that the new process does not hold.
 *
 * Tuning for tests: DROVER_NODE_TTL_SEC (lease TTL, default 5), DROVER_HEARTBEAT_MS (default 1000).
 */
import type { Etcd3, Lease } from 'etcd3';
import { connectEtcd } from '../../cluster/etcd';
import { keys, type NodeHeartbeat, type NodeRecord } from '../../cluster/keyspace';
import { makeLogger, type Logger } from '../../cluster/log';
import type { NodeInfo } from './client/agent-codec';
import type { TlsFilePaths } from '../../lib/pki/tls-files';
import { recentObservation } from './analyze-vm';

/** The part of a pino logger registration uses (methods, so any pino logger fits). */
export interface PinoLike {
  info(obj: object, msg?: string): void;
  warn?(obj: object, msg?: string): void;
}

/** What a node agent registers in etcd and how it heartbeats. */
export interface RegistrationOptions {
  etcdUrl: string;
  nodeId: string;
  /** host:port other nodes and the control plane use to reach this agent. */
  address: string;
  info: () => Promise<NodeInfo>;
  ttlSec?: number;
  heartbeatMs?: number;
  /** A Drover logger function, or a pino-style logger (its `info`/`warn` are used). */
  log?: Logger | PinoLike;
  /** The node's identity towards an https etcd (its etcd RBAC user is the certificate's CN); default DROVER_CA/CERT/KEY. */
  tls?: TlsFilePaths;
}

/** A running registration (heartbeats until stopped). */
export interface Registration {
  /** Resolves once the node is registered (rejects if etcd cannot be reached). */
  ready: Promise<void>;
  /** Stops the heartbeat and revokes the lease (the node shows as unknown at once). */
  stop(): Promise<void>;
  /**
   * The lease's deadline and the etcd client: the node's lease cannot expire before
   * `deadlineMs` (last successful grant or keepalive + TTL, Date.now() clock; 0 = no lease).
   */
  lease(): { deadlineMs: number; ttlMs: number; etcd: Etcd3 | undefined };
}

/** The heartbeat value of a node. */
export function heartbeatOf(nodeId: string, address: string, info: NodeInfo, registrationRev?: string): NodeHeartbeat {
  return {
    id: nodeId, address, memTotalBytes: info.memTotalBytes, memUsedBytes: info.memUsedBytes,
    vcpusTotal: info.vcpusTotal, vcpusUsed: info.vcpusUsed, at: Date.now(), ...(registrationRev ? { registrationRev } : {}),
    vms: info.vms.map((v) => {
      const observed = recentObservation(nodeId, v.spec.name);
      return {
        name: v.spec.name, memBytes: v.spec.memBytes, vcpus: v.spec.vcpus, state: v.state,
        dirtyRateBytesPerSec: v.dirtyRateBytesPerSec, cpu: v.cpu, touchedBytes: v.touchedBytes,
        ...(observed ? { observed } : {}),
      };
    }),
  };
}

/**
 * Pause between two tries to register again after the node lease was lost: each try is one lease
 * grant (a member that does not answer fails it within the call's per-attempt deadline), and every
 * ms without a lease is a ms the scheduler may count the node dead.
 */
const REGISTER_RETRY_MS = 250;

/** Starts registering the node; returns at once (see `ready`). */
export function startRegistration(opts: RegistrationOptions): Registration {
  const given = opts.log;
  const log: Logger = typeof given === 'function' ? given
    : given ? (msg, fields) => (given.warn && /fail|lost/.test(msg) ? given.warn : given.info).call(given, { ...fields }, `registration: ${msg}`)
      : makeLogger(`registration ${opts.nodeId}`);
  const ttl = opts.ttlSec ?? (Number(process.env.DROVER_NODE_TTL_SEC) || 5);
  const every = opts.heartbeatMs ?? (Number(process.env.DROVER_HEARTBEAT_MS) || 1000);
  let etcd: Etcd3 | undefined;
  let lease: Lease | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let beating = false;
  let lastKeepalive = 0;
  /** The revision of this process's `nodes/<id>` write (every heartbeat carries it). */
  let registrationRev = '';

  const newLease = async () => {
    const l = etcd!.lease(ttl);
    const asked = Date.now();
    await l.grant();
    lastKeepalive = asked;
    lease = l;
    // The server extends the lease at most TTL from when the keepalive was sent.
    l.on('keepaliveFired', () => { const at = Date.now(); l.once('keepaliveSucceeded', () => { if (lease === l) lastKeepalive = at; }); });
    l.on('lost', () => {
      if (stopped || lease !== l) return;
      log('lease lost; registering again');
      lease = undefined;
      lastKeepalive = 0;
      const again = () => { if (!stopped) newLease().then(beat).catch(() => setTimeout(again, REGISTER_RETRY_MS)); };
      setTimeout(again, REGISTER_RETRY_MS);
    });
  };

  const beat = async () => {
    if (stopped || beating || !lease || !etcd) return;
    beating = true;
    try {
      const info = await opts.info();
      await lease.put(keys.alive(opts.nodeId)).value(JSON.stringify(heartbeatOf(opts.nodeId, opts.address, info, registrationRev)));
    } catch (e) {
      log('heartbeat failed', { error: (e as Error).message });
    } finally {
      beating = false;
    }
  };

  const ready = (async () => {
    etcd = await connectEtcd(opts.etcdUrl, undefined, opts.tls);
    const info = await opts.info();
    const record: NodeRecord = {
      id: opts.nodeId, address: opts.address, hypervisor: info.hypervisor, memTotalBytes: info.memTotalBytes,
      vcpusTotal: info.vcpusTotal, registeredAt: Date.now(),
    };
    registrationRev = String((await etcd.put(keys.node(opts.nodeId)).value(JSON.stringify(record))).header.revision);
    // The first heartbeat lists the VMs read after that write: a VM placed before it and not listed is not here.
    await newLease();
    await beat();
    timer = setInterval(() => void beat(), every);
    log('registered', { address: opts.address, ttlSec: ttl });
  })();
  ready.catch(() => {});

  return {
    ready,
    lease: () => ({ deadlineMs: lease && lastKeepalive ? lastKeepalive + ttl * 1000 : 0, ttlMs: ttl * 1000, etcd }),
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await ready.catch(() => {});
      await lease?.revoke().catch(() => {});
      etcd?.close();
    },
  };
}
