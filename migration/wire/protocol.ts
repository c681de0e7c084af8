/**
 * Drover's migration protocol, version 2: one documented module (after Cloud Hypervisor's
 * vm-migration/src/protocol.rs). The wire form is in proto/drover/v1/migration.proto; the
 * codec that turns frames into bytes is frame-codec.ts.
 *
 * Switchover (version 2: "target decides, fenced intent, lease fencing"). Before the migration
 * the migrator writes the VM record `vms/<vm>` state `migrating` (fenced CAS); that write's mod
 * revision is the intent. The fence {vmRevision, job, attempt} travels MigrateVm -> source agent
 * -> Start -> target. Every migration (cluster and direct) sends Complete(activate=true): the
 * target verifies, resumes at once and replies Verified + Activated; no etcd and no migrator in
 * the pause (downtime = source pause -> Activated). Then the target records ownership itself in
 * one etcd txn `if mod_revision(vms/<vm>) == fence.vmRevision and owned/<source>/<vm> holds no
 * resume record of this attempt then put owned/<target>/<vm> = {job, attempt, vmRevision, at}`
 * and sends Owned (direct mode, no etcd: Owned right after Activated). The migrator folds the
 * record: one txn CAS on vms/<vm> (== intent revision) node=to, state running, delete
 * owned/<to>/<vm> (and any stale owned/<from>/<vm>).
 *
 * Two records decide, and etcd makes them exclude each other (services/node-agent/switchover.ts):
 * a source that cannot learn the outcome resumes only after its own txn `if mod_revision(vms/<vm>)
 * == fence.vmRevision and owned/<target>/<vm> holds no record of this attempt then put
 * owned/<source>/<vm> = {..., sourceResumed: true}` (the resume record). Whichever lands first
 * runs the VM; the other side gives its copy up. The migrator's settle (VM stays node=from,
 * running) deletes the resume record in the same txn that puts vms/<vm> back.
 *
 * Fault table (after Complete is sent; before it every failure rolls back: the source resumes):
 *
 * | fault                                             | target                                  | source                                  | etcd ends with       |
 * |---------------------------------------------------|-----------------------------------------|-----------------------------------------|----------------------|
 * | digest mismatch / device state refused            | discards, refuses (stream error)        | explicit refusal: resumes               | node=from            |
 * | intent changed (fence CAS fails)                  | destroys its copy, refuses FAILED_PRECONDITION "fenced" | explicit refusal: resumes | node=from (whoever changed it) |
 * | target cannot record within its record window     | destroys its copy, refuses "fenced"     | resumes                                 | node=from            |
 * |   (sooner of last keepalive + TTL and Complete's arrival + TTL, minus a margin: services/node-agent/switchover-timing.ts; etcd unreachable) | | |     |
 * | stream breaks, Owned not seen, cluster mode       | owns (record written) or fenced itself  | stays paused; polls etcd: target's record of this attempt, or vms/<vm> folded to <to> => destroys; alive/<to> gone, or TTL + 2 margins passed => resume txn (below) | folded by migrator |
 * | agent link cut after Complete, target still on    | its record txn fails on the resume      | resume txn lands: resumes (a lost txn:   | node=from; settle deletes |
 * |   etcd but its record late (past the source bound)  | record: destroys its copy, "fenced"     |   re-read, the target's record => 'owned') | the resume record    |
 * | source's resume txn and target's record race      | exactly one txn lands (each compares the other's key): that side runs the VM, the other gives it up | | the winner's record |
 * | etcd unreachable for the source after Complete    | as above                                | stays paused, retries within TTL beyond its bound, then 'unknown' (paused) | whichever landed |
 * | intent changed while the source resolves          | its txn cannot land (fence)             | vms/<vm> node=<to> => 'owned'; else resumes without a record | the migrator's write |
 * | stream breaks, direct mode (no etcd)              | answers SwitchoverOutcome from its book or the migration in progress (below) | asks with backoff (services/node-agent/direct-outcome.ts): owned => destroys; not_owned => resumes; pending / no answer => asks again | n/a |
 * | stream breaks, direct mode, target agent restarted (same address, same state dir, same boot) | answers for its dead process from its journal (services/node-agent/outcome-journal.ts): never resumed => not_owned; resumed => lost | not_owned => resumes; lost => reports DATA_LOSS ("VM ... is LOST") and destroys its stale copy | n/a |
 * | stream breaks, direct mode, target silent 30 s (--outcome-wait), or restarted without its journal (another state dir, a reboot), or a QEMU tunnel | unknown (it cannot tell what its earlier process did) | stays PAUSED and HELD (vm show names the migration; no new migration of it); `drover vm resume` asks again: not_owned => resumes, owned => releases its copy, lost => discards; still unknown => refuses unless --force (the operator says the target is gone) | n/a |
 * | target killed after Complete                      | gone                                    | lease expiry (TTL): resume txn => resumes | migrator: node=from (resume record deleted) |
 * | migrator killed during the migration              | unaffected (needs no migrator)          | unaffected                              | takeover folds from owned/ or restores from |
 * | source killed after Complete                      | owns (record) and runs the VM           | gone                                    | folded: node=to      |
 * | QEMU tunnel: target QEMU does not run / no beats  | kills its QEMU, refuses ABORTED         | `cont` if still postmigrate and no post-copy | node=from       |
 * | QEMU tunnel: fence CAS fails / lease deadline     | kills its resumed QEMU, refuses "fenced" | `cont` as above (post-copy started: DATA_LOSS) | node=from      |
 * | QEMU tunnel: stream breaks after Complete         | as for a page stream (owns or fenced)   | stays paused (postmigrate), resolves from etcd as above | as above |
 *
 * Switchover outcome (direct mode: no etcd to arbitrate). MigrationReceiver.SwitchoverOutcome
 * (migration id, token) asks the target what it did: `owned` (it resumed and keeps the VM),
 * `not_owned` (it gave its copy up: discarded, fenced), `lost` (post-copy failed there),
 * `pending` (Complete arrived and activation runs: ask again) or `unknown` (no record). A
 * migration still short of Complete is discarded by the question itself, so a `not_owned`
 * answer can never turn into a resume on the target later. The target keeps the outcomes of its
 * last 1024 migrations in memory (services/node-agent/switchover-outcomes.ts), and journals
 * each Start and each first resume to its state directory before it happens, so a restarted
 * agent still answers for its earlier process (outcome-journal.ts); the token (only the source
 * has it) is checked in constant time, a wrong one is PERMISSION_DENIED.
 *
 * A target never keeps a resumed VM it could not record before its lease could expire, and a
 * source resumes only on an explicit refusal or once its resume record landed, which excludes the
 * target's record: the VM runs on exactly one node, the one etcd will record.
 *
 * ```text
 *  source agent                                   target agent
 *  ------------                                   ------------
 *  PrepareIncoming(version, spec) --------------> reserve memory, check disk, empty paused domain
 *                       <------------------------ migration_id, one-time token, max frame size
 *  Transfer stream:
 *  Start(version, id, token, page geometry, fence) -> check version, token (consumed), geometry
 *                       <------------------------ Accepted(window)
 *  Round(1, pages)  ----------------------------> (informational)
 *  PageBatch(seq, ranges, zero ranges, checksum, payload) ...
 *                       <------------------------ BatchAck(seq)  (flow control window)
 *  Round(n) ... PageBatch ... (pages dirtied during round n-1)
 *  -- source pauses the VM (stop-and-copy) --
 *  PageBatch ... (the last dirty pages)
 *  Complete(image digest, device state, activate=true) -> load the vCPU/device state, compare the
 *                                                 digest with the image it holds, resume
 *                       <------------------------ Verified(digest), Activated(resumed_at)
 *  -- downtime ends --                            etcd txn: intent unchanged => owned/<me>/<vm>
 *                       <------------------------ Owned(at)   (or a refusal: "fenced", copy destroyed)
 *  source discards its copy
 * ```
 *
 * Receiver states (a frame not allowed in the current state is rejected with
 * FAILED_PRECONDITION and the migration aborted):
 *
 * ```text
 *  Prepared --Start--> Receiving --Complete(device state)--> DeviceLoaded -> Verified --> Active --(recorded)--> Owned
 *     |                 |  ^ Round/PageBatch          |                         |
 *     +-----------------+--+--------------------------+-------------------------+--> Aborted
 *                   (Abort frame, stream error, bad frame, source gone, timeout: target discards)
 *
 *  post-copy: DeviceLoaded --Complete(postcopy)--> Postcopy (running, pages missing) --Complete(digest)--> Verified -> Active
 *             Postcopy --(stream dropped)--> Postcopy, detached --Start(resume)--> Postcopy (see "Post-copy recovery")
 *             Postcopy --(a bad frame, an Abort, no reconnection within POSTCOPY_RECOVER_WAIT_MS)--> Aborted:
 *               the VM is lost (logged "VM LOST", drover_migration_postcopy_vms_lost_total)
 * ```
 *
 * QEMU tunnel (hypervisor `qemu`): QEMU tracks and sends pages itself, so the agents carry its
 * migration stream as opaque bytes over the same authenticated, versioned Transfer stream
 * (qemu-tunnel.ts, qemu-source.ts, qemu-target.ts). The stream is bidirectional because QEMU's
 * return path (post-copy page requests, its acks) flows back from the target:
 *
 * ```text
 *  source agent (+ source QEMU)                   target agent (+ target QEMU, -incoming defer)
 *  PrepareIncoming(version, spec) --------------> reserve, start an empty QEMU (-incoming defer)
 *                       <------------------------ migration_id, one-time token
 *  Start(version, id, token, geometry, tunnel="qemu")
 *                                  ------------>  check version, token, geometry, tunnel kind;
 *                                                 migrate-incoming unix:<its socket>, connect to it
 *                       <------------------------ Accepted(postcopy = target has userfaultfd)
 *  source agent listens on a unix socket; source QEMU `migrate unix:<that socket>` with the
 *  engine's policy (downtime-limit, max-bandwidth, post-copy/throttle decision, deadline)
 *  StreamData(bytes)  ... ---------------------->  written to the target QEMU's socket
 *                       <------------------------ StreamData(bytes) ... (return path)
 *                       <------------------------ BatchAck(0, bytes taken by the target QEMU)
 *                                                 (credit: <= window_bytes unacknowledged)
 *  StreamData(eof) when the source QEMU closes    (either side may half-close with eof)
 *  Complete(activate=true, no digest, fence in Start) -> after source QEMU reports "completed": wait
 *                                                 until the target QEMU runs and its guest heartbeat grows
 *                       <------------------------ Verified(empty digest), Activated(first beat)
 *                                                 etcd txn: intent unchanged => owned/<me>/<vm> (switchover.ts)
 *                       <------------------------ Owned(at)  (or a refusal: target QEMU killed)
 *  source destroys its (postmigrate) QEMU; on a refusal it resumes it (`cont`)
 * ```
 *
 * QEMU native (Start.qemu_transport = "tls"; "tcp" only between --insecure agents): the same
 * Start/Accepted/Complete/Verified/Activated/Owned exchange on the Transfer stream, but QEMU's
 * bytes go straight from QEMU to QEMU. The target agent makes its QEMU listen on its advertised
 * host, port 0 (`migrate-incoming tcp:HOST:0`) with tls-creds-x509 (endpoint=server,
 * verify-peer=on) from its node certificate and a tls-authz accepting only the DN of the
 * certificate the source agent presented on this Transfer call; Accepted(qemu_transport="tls",
 * qemu_listen="HOST:PORT"). The source QEMU migrates to tcp:HOST:PORT with its own node
 * certificate (endpoint=client) and tls-hostname=HOST. While QEMU migrates the source sends an
 * empty StreamData every few seconds (keepalive: a stream that breaks still discards the
 * target). A target that cannot listen (not configured, QEMU without TLS, its certificate not
 * valid for HOST) answers Accepted without qemu_listen: the tunnel, on this same stream.
 *
 * Tunnel receiver states: Prepared --Start(tunnel)--> Tunnel --Complete--> Verified --> Active --(recorded)--> Owned;
 * any failure before Active (stream error, bad frame, source gone, QEMU failed) -> Aborted: the
 * target kills its QEMU; the source QEMU keeps running (migrate_cancel / failed stream). Once
 * post-copy has started the target owns the VM: cancel is refused, and a broken stream then is
 * DATA_LOSS (QEMU's postcopy-paused), not a silent rollback. PageBatch frames are
 * refused in a tunnel, StreamData frames outside one.
 *
 * Parallel streams (Start.stream_count = N > 1, page streams only): stream 0 carries Start,
 * Round, Complete, Abort and every ack but batch acks of the other streams; streams 1..N-1 carry
 * only PageBatch. Each stream is its own connection with its own HTTP/2 flow-control window.
 *
 * ```text
 *  stream 0:  Start(index 0, count N, token) ---> token consumed; join token minted
 *                       <------------------------ Accepted(window, join_token)
 *  stream i:  Start(index i, count N, join_token) -> same source identity (TLS) as the reservation,
 *             (i = 1..N-1, each once)             join token matches, index unused, state Receiving
 *                       <------------------------ Accepted(window)          (on stream i)
 *  any stream: PageBatch(seq) ...   (distinct seqs; a stream's own seqs increase)
 *                       <------------------------ BatchAck(seq) on the stream that carried seq
 *                                                 (cumulative per stream, not across streams)
 *  stream 0:  Complete(batches = last seq) -----> waits until every batch 1..last seq was applied,
 *                                                 from whichever stream, then verifies as above
 * ```
 *
 * A page is never in flight on two streams: a round's pages are distinct and a round ends only
 * when every batch of it was acknowledged, so batches of one round may land in any order. Any
 * stream failing (closed, cancelled, a bad frame, a frame other than PageBatch on a secondary)
 * fails the whole migration on both sides: the target discards, the source rolls back.
 *
 * Bulk channel (Start.bulk = "tls" | "tcp", page streams only; libvirt's lesson: the RPC daemon's
 * tunnel is the slow path, native TLS migration the fast one). The Transfer call stays the
 * contract and the control stream; only page batches and their acks move to raw sockets, which
 * carry the same encoded frames and acks, each prefixed by its length (u32 big-endian; at most
 * MAX_FRAME_BYTES), with the socket's own backpressure (migration/transport/bulk-socket.ts).
 * Every agent runs one bulk listener beside its gRPC server (bulk-listener.ts; `--bulk off`: none),
 * a node:tls server with the node certificate that requires a client certificate from the
 * cluster CA ("tcp" only between --insecure agents). The source offers it in stream 0's Start; a
 * target that listens in the same mode answers with the port and a join token, and the migration
 * then runs over 1 + N streams (N = the streams asked for): stream 0 on gRPC, sockets 1..N.
 *
 * ```text
 *  gRPC stream 0: Start(index 0, count N, token, bulk="tls") -> token consumed; join token minted;
 *                                                 the migration's streams: 1 + N
 *                       <------------------------ Accepted(window, join_token, bulk_port)
 *  socket i (i = 1..N), TLS to the host of the Transfer call, bulk_port; the source's node certificate:
 *             Start(index i, count N+1, join_token, bulk="tls") -> same source identity (TLS) as the
 *                                                 reservation, join token, index unused, state Receiving
 *                       <------------------------ Accepted(window)          (on socket i)
 *  socket i:  PageBatch(seq) ...                  (every batch of every round, the final round's too)
 *                       <------------------------ BatchAck(seq)  on the socket that carried seq
 *  gRPC stream 0: Round, Complete(batches = last seq), Abort ---> waits for every batch 1..last seq,
 *                                                 verifies, resumes, as on one stream
 *                       <------------------------ Verified, Activated, Owned, PageRequest (post-copy)
 * ```
 *
 * Control stays on gRPC because the switchover's outcome must travel where its refusal codes,
 * deadlines and the fault table above already hold; it costs the switchover nothing: the final
 * round's few batches go over the sockets and Complete over stream 0 right behind them, and the
 * target's wait for "every batch up to last seq" (the same as for parallel streams) costs at most
 * one socket's delivery latency, already paid by the batch acks. Post-copy pins its batches to
 * stream 0 (gRPC), as with parallel streams.
 *
 * Fallback: a target that answers without bulk_port (it runs with --bulk off, or in another TLS
 * mode) runs the Transfer streams it was asked for, as before. An unknown Start.bulk value is
 * INVALID_ARGUMENT (the version rule below). A socket that fails before its Accepted (no route, refused port, failed
 * handshake, refused join) is replaced by a Transfer stream of the same index with the same join
 * token (`--transport auto`, the default), or fails the migration (`--transport bulk`; the VM
 * keeps running on the source). A socket that fails after it joined fails the migration on both
 * sides like any stream: the target discards, the source rolls back with its dirty bits folded
 * back. A socket refused at join (a wrong join token, another identity, a stream-0 Start on a
 * socket, another mode) is closed without an answer; the migration it names is not touched.
 *
 * Compression: the target's Accepted lists the payload encodings it decodes (`encodings`, a bit
 * per PayloadEncoding); the source may then send any batch LZ4-encoded (PAYLOAD_LZ4) and decides
 * per batch whether to (precopy/batch-compressor.ts: only where it pays on the measured link).
 * A batch's checksum is over its decoded pages, so an encoded batch verifies exactly as a raw one.
 * Post-copy (sim page streams, stream 0 only; the target offers it with Accepted.postcopy, which
 * keeps any join_token beside it). The source pauses, stops its dirty log and sends the hot pages
 * (the guest's header and index) and then the switch; the rest of the final dirty set stays
 * behind, named in the switch. Protocol 2's switchover (Activated, the fenced ownership record,
 * Owned) is unchanged; after the switch cancel is refused and any failure is DATA_LOSS: the source
 * never resumes, the VM is reported lost on both sides.
 *
 * ```text
 *  -- source pauses, stops its dirty log --
 *  PageBatch ... (hot pages)
 *  Complete(postcopy=true, missing=range table, device state) -> load state, mark missing, resume
 *                       <------------------------ Activated, then Owned (as above)
 *  (a target vCPU touching a missing page waits on its page word)
 *                       <------------------------ PageRequest(ranges)   (answered ahead of the push)
 *  PageBatch ... (requested pages first, the rest in the background; each page once, a few MiB
 *                 unacknowledged at most)
 *  Complete(postcopy=false, image digest) ------> every missing page came; compare the digest
 *                       <------------------------ Verified(digest), PostcopyDone(page waits)
 *  source discards its copy
 * ```
 *
 * Post-copy recovery (as QEMU's postcopy-recover): once the switch came, a dropped stream
 * (connection reset, cancelled call, a partition the source noticed) is not a failure. The
 * target keeps the migration (present pages, digest so far, the VM running; a vCPU touching a
 * missing page waits, and the time the stream was down is reported as `stalled_ms`) and waits
 * POSTCOPY_RECOVER_WAIT_MS for the source. The source keeps its post-copy state (its frozen
 * copy and digest) and reconnects over a new Transfer stream (one stream, whatever Start's
 * stream_count was) with the same migration id and token, every POSTCOPY_RECONNECT_BACKOFF_MS
 * doubling up to POSTCOPY_RECONNECT_MAX_BACKOFF_MS, within POSTCOPY_RECONNECT_BUDGET_MS of the
 * drop. The target's present bitmap is the truth: pages in flight at the drop may or may not
 * have landed, so the source re-sends exactly the pages Resumed names (each is still sent once
 * to the target: a present page stays refused), requested ones first.
 *
 * A link that goes silent without a reset (a partition, a dead path: the connection stays
 * open, only gRPC's keepalive would call it dead ~15 s later) is a drop too, noticed within
 * POSTCOPY_STALL_MS by a stall detector on each side, only after the switch (pre-copy waits a
 * silence out): the target drops the stream when a vCPU waits on a page request and no byte
 * came from the source for that long (the stall counts from the last byte); the source gives
 * the stream up and reconnects when batches it pushed wait for acks and no ack or request came
 * for that long. Either side alone suffices: a resume also replaces a still attached stream.
 *
 * ```text
 *  -- stream 1 drops during post-copy (after the switch) --
 *  target: detaches the stream, keeps Postcopy;    source: keeps its copy, retries with backoff
 *  Transfer stream 2:
 *  Start(version, id, token, geometry, resume=n) -> same source identity (TLS); the migration is
 *                                                 in Postcopy (a still attached stream 1 is dropped)
 *                       <------------------------ Resumed(missing bitmap, last batch seq, resumed_at)
 *                       <------------------------ PageRequest(pages vCPUs wait for), Owned (if recorded)
 *  PageBatch(seq = last + 1 ...) ... (requested pages first, then the background push of the rest)
 *  Complete(postcopy=false, image digest) ------> as above: Verified, PostcopyDone(stalled_ms, recoveries)
 * ```
 *
 * A resume is refused, and the VM is lost, when the target no longer holds the migration
 * (NOT_FOUND: it gave up after POSTCOPY_RECOVER_WAIT_MS, or was restarted), the token or the
 * source identity is wrong (PERMISSION_DENIED), the migration is not in post-copy or resume
 * is 0 (FAILED_PRECONDITION), or Resumed names a page that was not missing at the switch
 * (the source refuses it: DATA_LOSS). One exception: a source that never got Activated asks the
 * target what it did (SwitchoverOutcome, or etcd in cluster mode); an explicit not_owned (the
 * switch never reached it and it discarded its copy, so the guest never ran there) resumes the
 * source instead. A source agent that is gone (killed) never reconnects: the
 * target loses the VM after POSTCOPY_RECOVER_WAIT_MS and says so (log, metric). Cancel stays
 * refused during the recovery. A target that already verified the final Complete answers
 * Resumed(done) and repeats Verified and PostcopyDone.
 *
 * Version rule: a peer speaks exactly one protocol version; PrepareIncoming and Start carry the
 * source's. A target that speaks another refuses with FAILED_PRECONDITION naming both versions
 * ("source speaks protocol 2, this target speaks 1"). Unknown frame kinds, unknown payload
 * encodings and unknown fields' values are rejected, never ignored (Start.bulk: "", "tls" or
 * "tcp"; a joining Start on a bulk socket must carry the listener's mode and an index > 0).
 *
 * Invariants: page ranges are in bounds and never cross a memory slot; a batch's checksum
 * folds its pages' hashes (page-hash.ts); the image digest at Complete must equal the target's
 * own digest of what it applied, else nothing resumes there and the source resumes.
 */
import { DroverError, invalidArgument } from '../../lib/errors';

/**
 * The one protocol version this build speaks. 2: the target decides the switchover (fenced
 * intent, Owned). 3: the bulk channel (Start.bulk, Accepted.bulk_port), post-copy recovery
 * (Start.resume, Resumed) and SwitchoverOutcome; a protocol-2 peer would refuse their fields as
 * unknown, so the version says it first, naming both.
 */
export const PROTOCOL_VERSION = 3;
/** Largest payload in one batch: 1 MiB amortises per-frame costs and fits grpc-js' writes. */
export const MAX_BATCH_PAYLOAD_BYTES = 1024 * 1024;
/** Largest encoded frame a receiver accepts (payload + range tables + headers). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Bytes of page payload a sender may have in flight, unacknowledged (flow control window). */
export const DEFAULT_WINDOW_BYTES = 64 * 1024 * 1024;
/** A prepared reservation with no Start within this time is released (the source went away). */
export const RESERVATION_TTL_MS = 60_000;
/** A started migration that receives no frame (on any of its streams) within this time is aborted by the target; DROVER_RECEIVE_IDLE_TIMEOUT_MS shortens it in tests. */
export const RECEIVE_IDLE_TIMEOUT_MS = Number(process.env.DROVER_RECEIVE_IDLE_TIMEOUT_MS) || 30_000;
/**
 * Post-copy recovery, source: how long after the drop the source keeps reconnecting. A link
 * flap or a restarted proxy heals within seconds; beyond this the source gives the VM up.
 */
export const POSTCOPY_RECONNECT_BUDGET_MS = 15_000;
/** Post-copy recovery, source: the first pause between reconnection attempts (doubling). */
export const POSTCOPY_RECONNECT_BACKOFF_MS = 100;
/** Post-copy recovery, source: the longest pause between attempts (a healed link waits at most this). */
export const POSTCOPY_RECONNECT_MAX_BACKOFF_MS = 2_000;
/**
 * Post-copy recovery, target: how long a post-copy migration whose stream dropped waits for the
 * source. Longer than the source's whole reconnection budget plus one backoff step and a margin
 * for a slow TLS handshake (a source that still tries always finds the migration held), and no
 * longer: a sim source keeps its pages in its agent's memory, so a source gone longer than that
 * is gone for good and the target says the VM is lost instead of leaving it stalled.
 */
export const POSTCOPY_RECOVER_WAIT_MS = POSTCOPY_RECONNECT_BUDGET_MS + POSTCOPY_RECONNECT_MAX_BACKOFF_MS + 3_000;
/**
 * Post-copy stall detection, both sides: a link that carries nothing for this long while the
 * guest needs it is taken as dead and the stream dropped for a reconnection, instead of waiting
 * out gRPC's keepalive (10 s + 5 s, lib/grpc-channel.ts) or the idle timeouts while the target's
 * vCPUs wait for missing pages. The target drops when a vCPU waits on a page request and no
 * byte came from the source for this long; the source when batches it pushed wait for acks and
 * no ack or request came for this long. A healthy post-copy link brings a frame far sooner: the
 * largest (a 1 MiB push batch) takes under 1.5 s down to ~0.7 MiB/s, and post-copy over a slower
 * link makes no sense (a false stall costs one reconnection, not the VM). 1.5 s: a few round
 * trips of a loaded host's event loop above noise, an order below the keepalive.
 */
export const POSTCOPY_STALL_MS = 1_500;
/** How often the post-copy stall detectors look (a stall is noticed within POSTCOPY_STALL_MS + this). */
export const POSTCOPY_STALL_CHECK_MS = 250;
/** Most range-table entries a Round frame announces (beyond that it announces none). */
export const MAX_ROUND_RANGES = 131072;

/** Most streams one migration may use (Start.stream_count); more would only add per-stream overhead on any host we know. */
export const MAX_STREAMS = 8;
/** The policy's `streams` value asking the source agent to pick the count itself (from its cores; see autoStreams). */
export const STREAMS_AUTO = 0xffff;
/** Cores one stream's packing and TLS keep busy; auto uses one stream per so many cores, at least one. */
const CORES_PER_STREAM = 1;
/** The most streams auto picks: beyond 4 a loopback or 10 GbE link gains nothing more on hosts we measured. */
const AUTO_MAX_STREAMS = 4;

/** The stream count `requested` means on a host with `cores` cores: STREAMS_AUTO picks from the cores; 0 means one. */
export function autoStreams(requested: number | undefined, cores: number): number {
  if (requested === STREAMS_AUTO) return Math.max(1, Math.min(AUTO_MAX_STREAMS, Math.floor(cores / CORES_PER_STREAM)));
  if (!requested) return 1;
  if (!Number.isInteger(requested) || requested < 1 || requested > MAX_STREAMS) throw invalidArgument(`streams must be 1..${MAX_STREAMS} or auto, got ${requested}`);
  return requested;
}

/** Start.tunnel value of the QEMU tunnel ("" = drover's page stream). */
export const TUNNEL_QEMU = 'qemu';
/** Start.qemu_transport values: QEMU's native migration between the QEMUs, TLS or (--insecure only) plain text; "" = the tunnel. */
export const QEMU_NATIVE_TLS = 'tls';
/** Start.qemu_transport of a native plain-text QEMU migration (agents run --insecure). */
export const QEMU_NATIVE_TCP = 'tcp';
/** Start.bulk: the bulk channel over mutual TLS (node certificates, as the agents' gRPC). */
export const BULK_TLS = 'tls';
/** Start.bulk: the bulk channel in plain text (only between agents that run --insecure). */
export const BULK_TCP = 'tcp';
/** The values Start.bulk may carry ("" = no bulk channel); anything else is INVALID_ARGUMENT. */
export const BULK_MODES: readonly string[] = ['', BULK_TLS, BULK_TCP];
/** How page batches travel (MigrationPolicy.transport): the bulk channel when offered, Transfer streams only, or the bulk channel or fail. */
export type DataTransport = 'auto' | 'grpc' | 'bulk';
/** The DataTransport values, in the order usage texts list them. */
export const DATA_TRANSPORTS: readonly DataTransport[] = ['auto', 'grpc', 'bulk'];

/** StreamData chunk the tunnel aims for: big enough to amortise per-frame costs, < MAX_FRAME_BYTES. */
export const STREAM_CHUNK_BYTES = 1024 * 1024;
/**
 * Unacknowledged tunnel bytes the source may have in flight (Accepted.window_bytes of a tunnel).
 * Small on purpose: QEMU must see the path's real rate (its downtime estimate depends on it),
 * and the last bytes before switchover must not queue behind a backlog. 2 MiB = 4 ms at 500 MB/s.
 */
export const TUNNEL_WINDOW_BYTES = Number(process.env.DROVER_TUNNEL_WINDOW) || 2 * 1024 * 1024;

/** Batch payload encoding: the pages' bytes as they are. */
export const PAYLOAD_RAW = 0;
/**
 * Batch payload encoding: one LZ4 block of the pages' bytes, prefixed by their length (u32 LE).
 * The receiver checks the prefix against the range table before it decodes anything, so no
 * frame makes it allocate more than the batch's pages. Sent only to a target whose Accepted
 * listed it (Accepted.encodings); zero pages stay flags (zero_ranges) either way.
 */
export const PAYLOAD_LZ4 = 3;
/** Accepted.encodings bit of an encoding. */
export function encodingBit(encoding: number): number {
  return 1 << encoding;
}
/** The encodings this build decodes, as Accepted.encodings announces them (RAW is always decodable). */
export const DECODABLE_ENCODINGS = encodingBit(PAYLOAD_RAW) | encodingBit(PAYLOAD_LZ4);

/** The switchover's fenced intent (empty vmRevision = direct migration, nothing recorded in etcd). */
export interface Fence {
  vmRevision: string;
  job: string;
  attempt: number;
}

/** Frames from source to target. */
export type Frame =
  | { kind: 'start'; protocolVersion: number; migrationId: string; token: string; pageSize: number; pageCount: number; streamIndex: number; streamCount: number; tunnel?: string; fence?: Fence; qemuTransport?: string; qemuMultifdChannels?: number; bulk?: string; resume?: number }
  | { kind: 'round'; round: number; pages: number; ranges: number[] }
  | { kind: 'batch'; seq: number; ranges: number[]; zeroRanges: number[]; checksum: number; payload: Buffer; encoding: number }
  | { kind: 'complete'; imageDigest: Buffer; batches: number; rounds: number; pausedAtMs: number; activate: boolean; pagesSent: number; device?: { state: Buffer; checksum: number } | null; postcopy?: boolean; missing?: number[] }
  | { kind: 'activate' }
  | { kind: 'abort'; reason: string }
  | { kind: 'stream'; data: Buffer; channel: number; eof: boolean };

/** Replies from target to source. */
export type Ack =
  | { kind: 'accepted'; protocolVersion: number; maxFrameBytes: number; windowBytes: number; postcopy?: boolean; joinToken?: string; qemuListen?: string; qemuTransport?: string; encodings?: number; qemuMultifdChannels?: number; bulkPort?: number }
  | { kind: 'batch'; seq: number; bytes: number }
  | { kind: 'verified'; imageDigest: Buffer; pages: number }
  | { kind: 'activated'; resumedAtMs: number; firstBeatMs?: number }
  | { kind: 'owned'; atMs: number; recorded: boolean }
  | { kind: 'pageRequest'; ranges: number[] }
  | { kind: 'postcopyDone'; pageWaits: number; pageWaitP50Ms: number; pageWaitP99Ms: number; allPresentMs: number; stalledMs?: number; recoveries?: number }
  | { kind: 'resumed'; missing: Buffer; batches: number; resumedAtMs: number; done: boolean }
  | { kind: 'stream'; data: Buffer; channel: number; eof: boolean };

/** Named constructors for each frame (the only way the engine builds them). */
export const frames = {
  start: (migrationId: string, token: string, pageSize: number, pageCount: number, fence?: Fence): Frame =>
    ({ kind: 'start', protocolVersion: PROTOCOL_VERSION, migrationId, token, pageSize, pageCount, streamIndex: 0, streamCount: 1, ...(fence?.vmRevision ? { fence } : {}) }),
  round: (round: number, pages: number, ranges: number[] = []): Frame => ({ kind: 'round', round, pages, ranges }),
  complete: (imageDigest: Buffer, batches: number, rounds: number, pausedAtMs: number, activate: boolean, pagesSent: number, device?: { state: Buffer; checksum: number }): Frame =>
    ({ kind: 'complete', imageDigest, batches, rounds, pausedAtMs, activate, pagesSent, ...(device ? { device } : {}) }),
  activate: (): Frame => ({ kind: 'activate' }),
  /** Post-copy's switch: device state and the pages the target still lacks; the target resumes at once. */
  postcopySwitch: (batches: number, rounds: number, pausedAtMs: number, missing: number[], device: { state: Buffer; checksum: number }): Frame =>
    ({ kind: 'complete', imageDigest: Buffer.alloc(0), batches, rounds, pausedAtMs, activate: true, pagesSent: 0, device, postcopy: true, missing }),
  /** Post-copy recovery: the `attempt`-th reconnection (>= 1) of migration `migrationId`, on a new stream. */
  resume: (migrationId: string, token: string, pageSize: number, pageCount: number, attempt: number): Frame =>
    ({ kind: 'start', protocolVersion: PROTOCOL_VERSION, migrationId, token, pageSize, pageCount, streamIndex: 0, streamCount: 1, resume: attempt }),
  abort: (reason: string): Frame => ({ kind: 'abort', reason }),
  /** Start of a QEMU tunnel (same version/token/geometry checks as a page stream). */
  startTunnel: (migrationId: string, token: string, pageSize: number, pageCount: number, fence?: Fence, qemuTransport = '', qemuMultifdChannels = 0): Frame =>
    ({ kind: 'start', protocolVersion: PROTOCOL_VERSION, migrationId, token, pageSize, pageCount, streamIndex: 0, streamCount: 1, tunnel: TUNNEL_QEMU, ...(fence?.vmRevision ? { fence } : {}), ...(qemuTransport ? { qemuTransport } : {}), ...(qemuTransport && qemuMultifdChannels > 1 ? { qemuMultifdChannels } : {}) }),
  streamEof: (channel = 0): Frame => ({ kind: 'stream', data: Buffer.alloc(0), channel, eof: true }),
  /** QEMU native: an empty StreamData on the control stream while the QEMUs migrate (the target's idle timer). */
  keepalive: (): Frame => ({ kind: 'stream', data: Buffer.alloc(0), channel: 0, eof: false }),
};

/** Named constructors for each ack. */
export const acks = {
  accepted: (windowBytes = DEFAULT_WINDOW_BYTES, joinToken = '', encodings = DECODABLE_ENCODINGS): Ack =>
    ({ kind: 'accepted', protocolVersion: PROTOCOL_VERSION, maxFrameBytes: MAX_FRAME_BYTES, windowBytes, encodings, ...(joinToken ? { joinToken } : {}) }),
  batch: (seq: number, bytes: number): Ack => ({ kind: 'batch', seq, bytes }),
  verified: (imageDigest: Buffer, pages: number): Ack => ({ kind: 'verified', imageDigest, pages }),
  activated: (resumedAtMs: number, firstBeatMs?: number): Ack => ({ kind: 'activated', resumedAtMs, ...(firstBeatMs ? { firstBeatMs } : {}) }),
  owned: (recorded: boolean): Ack => ({ kind: 'owned', atMs: Date.now(), recorded }),
  pageRequest: (ranges: number[]): Ack => ({ kind: 'pageRequest', ranges }),
  postcopyDone: (pageWaits: number, pageWaitP50Ms: number, pageWaitP99Ms: number, allPresentMs: number, stalledMs = 0, recoveries = 0): Ack =>
    ({ kind: 'postcopyDone', pageWaits, pageWaitP50Ms, pageWaitP99Ms, allPresentMs, stalledMs, recoveries }),
  /** Post-copy recovery: the pages still missing here (bitmap), the last batch applied, the switch's resume time. */
  resumed: (missing: Uint32Array, batches: number, resumedAtMs: number, done: boolean): Ack =>
    ({ kind: 'resumed', missing: Buffer.from(missing.buffer, missing.byteOffset, missing.byteLength), batches, resumedAtMs, done }),
};

/**
 * Codes of a target's explicit refusal after Complete (it discarded or destroyed its copy): the
 * source resumes. Any other failure after Complete (a broken stream) leaves the outcome unknown.
 */
export const REFUSAL_CODES: ReadonlySet<string> = new Set(['DATA_LOSS', 'INVALID_ARGUMENT', 'FAILED_PRECONDITION', 'ABORTED', 'PERMISSION_DENIED']);

/** The refusal a target gives a peer of another version (names both). */
export function versionMismatch(sourceVersion: number): DroverError {
  return new DroverError('FAILED_PRECONDITION', `protocol version mismatch: source speaks protocol ${sourceVersion}, this target speaks ${PROTOCOL_VERSION}`);
}

/**
 * Checks a flat range table [first, count, ...] before any work is done with it: at most
 * MAX_ROUND_RANGES entries, (first, count) pairs, every count > 0, every range inside the
 * domain's `pageCount` pages and, when `slotPages` is given, inside one memory slot; the pages
 * named add up to at most `pageCount` (so no table makes the receiver loop longer than the
 * domain is big). Returns the pages named; INVALID_ARGUMENT naming `what` and the first
 * offending range.
 */
export function checkRangeTable(ranges: ArrayLike<number>, pageCount: number, slotPages: number | undefined, what: string): number {
  if (ranges.length > MAX_ROUND_RANGES) throw invalidArgument(`${what} has ${ranges.length} entries, more than the limit of ${MAX_ROUND_RANGES}`);
  if (ranges.length % 2 !== 0) throw invalidArgument(`${what} has an odd number of entries (${ranges.length}); expected (first_pfn, count) pairs`);
  let pages = 0;
  for (let i = 0; i < ranges.length; i += 2) {
    const first = ranges[i], count = ranges[i + 1];
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0) throw invalidArgument(`${what} range ${i / 2} is not a pair of page numbers`);
    if (count === 0) throw invalidArgument(`${what} range ${i / 2} is empty`);
    if (first + count > pageCount) throw invalidArgument(`${what} range [${first}, +${count}) is out of range (VM has ${pageCount} pages)`);
    if (slotPages !== undefined && Math.floor(first / slotPages) !== Math.floor((first + count - 1) / slotPages)) {
      throw invalidArgument(`${what} range [${first}, +${count}) crosses a memory slot boundary (every ${slotPages} pages)`);
    }
    pages += count;
    if (pages > pageCount) throw invalidArgument(`${what} names more pages (${pages} by range ${i / 2}) than the VM has (${pageCount})`);
  }
  return pages;
}

/**
 * Validates a batch's range tables against the domain geometry: pairs, non-empty, in bounds,
 * not crossing a slot, payload length = 4 KiB x data pages (for an encoded payload: the length
 * its prefix declares, checked by payload-codec.ts before decoding). Throws INVALID_ARGUMENT
 * naming the first offending range, or an encoding this build does not decode.
 */
export function validateBatch(f: Extract<Frame, { kind: 'batch' }>, pageCount: number, slotPages: number, pageSize: number): number {
  if (!Number.isInteger(f.encoding) || f.encoding < 0 || f.encoding > 30 || (DECODABLE_ENCODINGS & encodingBit(f.encoding)) === 0) throw invalidArgument(`batch ${f.seq}: unknown payload encoding ${f.encoding}`);
  const check = (ranges: number[], what: string): number => checkRangeTable(ranges, pageCount, slotPages, `batch ${f.seq}: ${what}`);
  const dataPages = check(f.ranges, 'range table');
  check(f.zeroRanges, 'zero range table');
  if (f.encoding !== PAYLOAD_RAW) return dataPages;
  if (f.payload.length !== dataPages * pageSize) {
    throw invalidArgument(`batch ${f.seq}: payload is ${f.payload.length} bytes but its ranges name ${dataPages} pages of ${pageSize} bytes (misaligned)`);
  }
  if (f.payload.length > MAX_BATCH_PAYLOAD_BYTES * 2) throw invalidArgument(`batch ${f.seq}: payload of ${f.payload.length} bytes exceeds the limit of ${MAX_BATCH_PAYLOAD_BYTES * 2}`);
  return dataPages;
}

/**
 * Checks a Resumed ack's missing bitmap against the VM's geometry: exactly the 32-bit words of
 * `pageCount` pages, no bit beyond the last page. Returns it as words (a copy: the ack's bytes
 * may be unaligned); INVALID_ARGUMENT naming what is wrong.
 */
export function missingBitmapOf(bytes: Buffer, pageCount: number): Uint32Array {
  const words = Math.ceil(pageCount / 32);
  if (bytes.length !== words * 4) throw invalidArgument(`Resumed: missing bitmap of ${bytes.length} bytes, expected ${words * 4} for ${pageCount} pages`);
  const bitmap = new Uint32Array(words);
  for (let i = 0; i < words; i++) bitmap[i] = bytes.readUInt32LE(i * 4);
  const tail = pageCount % 32;
  if (tail !== 0 && (bitmap[words - 1] >>> tail) !== 0) throw invalidArgument(`Resumed: missing bitmap names a page beyond the VM's ${pageCount} pages`);
  return bitmap;
}
