/**
 * Shared etcd access for the control plane: connecting (with a clear error when etcd is
 * unreachable), JSON values with their revisions, and one consistent snapshot of the cluster.
 */
import { circuitBreaker, ConsecutiveBreaker, handleWhen } from 'cockatiel';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { DroverError, failedPrecondition, invalidArgument, unavailable } from '../lib/errors';
import { loadTlsFiles, tlsPathsFromEnv, type TlsFilePaths } from '../lib/pki/tls-files';
import {
  keys, idOf, DEFAULT_CONFIG, PREFIX,
  type NodeRecord, type NodeHeartbeat, type NodeMark, type VmRecord, type JobRecord,
  type Admission, type ClusterConfig, type NodeState, type OwnershipClaim,
} from './keyspace';

/** A value read from etcd with the mod revision a fenced write compares against. */
export interface Versioned<T> {
  value: T;
  modRevision: string;
}

/** Deadline of one unary etcd call: a loopback/LAN etcd answers in ms; 5 s is an outage. */
export const ETCD_CALL_DEADLINE_MS = 5000;

/**
 * Deadline of one attempt of a unary call on one member. etcd3 then tries another member (up to
 * 3 attempts): a member cut off without a reset (its link down) swallowed the whole 5 s before, and
 * a target's ownership record, bounded by its lease, missed its window on one (chaos, link-down).
 * A healthy member answers in ms; under a loaded disk's fsync, in well under this.
 */
export const ETCD_ATTEMPT_DEADLINE_MS = 1500;

/**
 * How long a member that failed 3 calls in a row is skipped before one trial call. etcd3's 5 s
 * default kept an agent off a member for up to 5 s after its link came back, and with every
 * member skipped, off etcd (its node lease lapses meanwhile); a trial call costs nothing.
 */
export const ETCD_MEMBER_RETRY_MS = 500;

/**
 * gRPC reconnect backoff towards an etcd member, ms: grpc-js' defaults (1 s, growing to 120 s)
 * left a member that came back unused for seconds.
 */
const ETCD_RECONNECT_BACKOFF = { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 1000 };

/**
 * Opens a client of the etcd at `url` (comma-separated endpoints) and checks it answers.
 * `https://` endpoints need a client certificate (etcd runs with --client-cert-auth and takes the
 * etcd user from its CN): `tls`, else DROVER_CA / DROVER_CERT / DROVER_KEY. `http://` is plain text.
 */
export async function connectEtcd(url: string, timeoutMs = 3000, tls?: TlsFilePaths): Promise<Etcd3> {
  const hosts = url.split(',').map((h) => h.trim()).filter(Boolean);
  if (hosts.length === 0) throw unavailable('no etcd address given (use --etcd URL or set DROVER_ETCD)');
  const secure = hosts.filter((h) => h.startsWith('https://')).length;
  if (secure && secure !== hosts.length) throw invalidArgument(`etcd endpoints ${url} mix https:// and plain ones`);
  let credentials: IOptions['credentials'];
  if (secure) {
    const paths = tls ?? tlsPathsFromEnv();
    if (!paths) throw failedPrecondition(`etcd at ${url} is https: a client certificate is needed (set DROVER_CA, DROVER_CERT and DROVER_KEY, e.g. export $(cat DIR/drover.env))`);
    const files = loadTlsFiles(paths);
    credentials = { rootCertificate: files.ca, certChain: files.cert, privateKey: files.key };
    quietIpServerNameWarning();
  }
  // Every unary call carries a deadline (a hung call becomes an error the caller retries or
  // reports); streams (watches, lease keep-alives) live as long as they are used. A member
  // that fails is skipped for ETCD_MEMBER_RETRY_MS (etcd3's per-member circuit breaker).
  // The deadline is per attempt (etcd3 resolves it for each member it tries).
  const options: IOptions = {
    hosts, dialTimeout: timeoutMs, ...(credentials ? { credentials } : {}),
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + ETCD_ATTEMPT_DEADLINE_MS }),
    faultHandling: { host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: ETCD_MEMBER_RETRY_MS, breaker: new ConsecutiveBreaker(3) }) },
    grpcOptions: ETCD_RECONNECT_BACKOFF,
  };
  const client = new Etcd3(options);
  try {
    await withTimeout(client.get(keys.config()).exec(), timeoutMs, `etcd at ${url} did not answer within ${timeoutMs} ms`);
  } catch (err) {
    client.close();
    throw unavailable(`cannot reach etcd at ${url}: ${(err as Error).message}`, err);
  }
  return client;
}

let quieted = false;

/**
 * etcd3 builds its own TLS credentials, and grpc-js then sends an IP endpoint's address as the
 * TLS server name, which Node flags once per process (DEP0123, RFC 6066) on stderr: every CLI
 * command would print it. The certificate is still verified against the IP (its SAN IP), so only
 * that one warning is dropped; every other warning is emitted as before.
 */
export function quietIpServerNameWarning(): void {
  if (quieted) return;
  quieted = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const [, type, code] = args;
    const c = typeof type === 'object' && type !== null ? (type as { code?: string }).code : code;
    if (c === 'DEP0123') return;
    emit(...args);
  }) as typeof process.emitWarning;
}

/** Rejects with UNAVAILABLE if `p` does not settle within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => { t = setTimeout(() => reject(unavailable(message)), ms); }),
  ]);
}

/** Reads one JSON value with its mod revision; undefined when absent. */
export async function getJson<T>(etcd: Etcd3, key: string): Promise<Versioned<T> | undefined> {
  const res = await etcd.get(key).exec();
  const kv = res.kvs[0];
  if (!kv) return undefined;
  return { value: JSON.parse(kv.value.toString()) as T, modRevision: String(kv.mod_revision) };
}

/** Reads every JSON value under a prefix, by the key's last segment. */
export async function getAllJson<T>(etcd: Etcd3, prefix: string): Promise<Map<string, Versioned<T>>> {
  const res = await etcd.getAll().prefix(prefix).exec();
  const out = new Map<string, Versioned<T>>();
  for (const kv of res.kvs) out.set(idOf(kv.key.toString()), { value: JSON.parse(kv.value.toString()), modRevision: String(kv.mod_revision) });
  return out;
}

/**
 * Writes `value` at `key` only if the key still has `modRevision` ('0' = must not exist).
 * Returns false when someone else wrote first (the caller re-reads and decides again).
 */
export async function casJson(etcd: Etcd3, key: string, modRevision: string, value: unknown): Promise<boolean> {
  const cmp = modRevision === '0' ? etcd.if(key, 'Create', '==', 0) : etcd.if(key, 'Mod', '==', modRevision);
  const r = await cmp.then(etcd.put(key).value(JSON.stringify(value))).commit();
  return r.succeeded;
}

/** Every JSON value under `prefix` by its full key (where the key names more than one id, as `owned/<node>/<vm>`). */
export async function getAllJsonByKey<T>(etcd: Etcd3, prefix: string): Promise<Map<string, Versioned<T>>> {
  const res = await etcd.getAll().prefix(prefix).exec();
  const out = new Map<string, Versioned<T>>();
  for (const kv of res.kvs) out.set(kv.key.toString(), { value: JSON.parse(kv.value.toString()), modRevision: String(kv.mod_revision) });
  return out;
}

/** Read-modify-write with retries on conflict; `f` returns the new value or undefined to stop. */
export async function updateJson<T>(etcd: Etcd3, key: string, f: (cur: T | undefined) => T | undefined, tries = 20): Promise<T | undefined> {
  for (let i = 0; i < tries; i++) {
    const cur = await getJson<T>(etcd, key);
    const next = f(cur?.value);
    if (next === undefined) return undefined;
    if (await casJson(etcd, key, cur?.modRevision ?? '0', next)) return next;
  }
  throw new DroverError('ABORTED', `too many concurrent updates of ${key}`);
}

/** One node as the control plane sees it. */
export interface NodeView {
  id: string;
  record: NodeRecord;
  heartbeat?: NodeHeartbeat;
  mark?: NodeMark;
  state: NodeState;
}

/** Everything the scheduler and the CLI need, read at one revision. */
export interface ClusterSnapshot {
  nodes: Map<string, NodeView>;
  vms: Map<string, Versioned<VmRecord>>;
  jobs: Map<string, Versioned<JobRecord>>;
  admission: Versioned<Admission>;
  config: ClusterConfig;
  /** The switchover records `owned/<node>/<vm>`, by their full key (withOwnership, lost-VM detection). */
  ownerships: Map<string, Versioned<OwnershipClaim>>;
}

/** Node state from its liveness and mark. */
export function nodeState(heartbeat: NodeHeartbeat | undefined, mark: NodeMark | undefined): NodeState {
  if (mark?.state === 'drained') return 'drained'; // a drained node may well be switched off
  if (!heartbeat) return 'unknown';
  return mark ? mark.state : 'ready';
}

/** Reads a snapshot of the cluster in one etcd read (one revision). */
export async function readSnapshot(etcd: Etcd3): Promise<ClusterSnapshot> {
  // Everything under the prefix except the history (which only grows), at one revision.
  const hist = keys.histories();
  const first = await etcd.getAll().inRange({ start: PREFIX, end: hist }).exec();
  const second = await etcd.getAll().inRange({ start: hist.slice(0, -1) + '0', end: prefixEnd(PREFIX) }).revision(first.header.revision).exec();
  const res = { kvs: [...first.kvs, ...second.kvs] };
  const nodes = new Map<string, NodeView>();
  const hbs = new Map<string, NodeHeartbeat>();
  const marks = new Map<string, NodeMark>();
  const vms = new Map<string, Versioned<VmRecord>>();
  const jobs = new Map<string, Versioned<JobRecord>>();
  const ownerships = new Map<string, Versioned<OwnershipClaim>>();
  let admission: Versioned<Admission> = { value: { jobs: [] }, modRevision: '0' };
  let config = { ...DEFAULT_CONFIG };
  const recs = new Map<string, NodeRecord>();
  for (const kv of res.kvs) {
    const k = kv.key.toString();
    const v = () => JSON.parse(kv.value.toString());
    const rev = String(kv.mod_revision);
    if (k.startsWith(keys.nodes())) recs.set(idOf(k), v());
    else if (k.startsWith(keys.alives())) hbs.set(idOf(k), v());
    else if (k.startsWith(keys.marks())) marks.set(idOf(k), v());
    else if (k.startsWith(keys.vms())) vms.set(idOf(k), { value: v(), modRevision: rev });
    else if (k.startsWith(keys.jobs())) jobs.set(idOf(k), { value: v(), modRevision: rev });
    else if (k.startsWith(keys.allOwnerships())) ownerships.set(k, { value: v(), modRevision: rev });
    else if (k === keys.admission()) admission = { value: v(), modRevision: rev };
    else if (k === keys.config()) config = { ...config, ...v() };
  }
  for (const [id, record] of [...recs].sort((a, b) => a[0].localeCompare(b[0], undefined, { numeric: true }))) {
    const heartbeat = hbs.get(id);
    const mark = marks.get(id);
    nodes.set(id, { id, record, heartbeat, mark, state: nodeState(heartbeat, mark) });
  }
  return { nodes, vms, jobs, admission, config, ownerships };
}

/** The end of the key range of a prefix (the prefix with its last byte incremented). */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** Reads the finished jobs, oldest first. */
export async function readHistory(etcd: Etcd3): Promise<JobRecord[]> {
  const all = await getAllJson<JobRecord>(etcd, keys.histories());
  return [...all.values()].map((v) => v.value).sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
}
