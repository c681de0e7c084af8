/**
 * The hypervisor boundary: what a node agent and the migration engine need from a driver.
 *
 * Two drivers implement it: `sim` (userspace VMs, the default, page-level access: the engine
 * does the dirty tracking rounds itself) and `qemu` (real QEMU over QMP, where QEMU's own
 * migration stream does the page work and the engine sets its policy).
 *
 * Capabilities: every domain has a life cycle (DomainLifecycle) and a guest probe (GuestProbe);
 * how it migrates is the driver's and the domain declares it in `Domain.migration`:
 *   { kind: 'pages', pages }   the engine copies pages itself over PageAccess (sim);
 *   { kind: 'stream', stream } the hypervisor sends its own stream (QEMU; stream-migration.ts).
 * The migration core (migration/strategy/) picks the engine from that, never from the driver's name.
 *
 * Memory is addressed in 4 KiB pages by page frame number (pfn). A page range never crosses a
 * memory slot boundary (`slotPages`), so a range can always be viewed as one contiguous buffer.
 */

import type { StreamMigration } from './stream-migration';

/** Size of a guest page in bytes (x86 small pages, as KVM's dirty log). */
export const PAGE_SIZE = 4096;

/** The workload a sim guest runs; see hypervisor/sim/profiles.ts for each one's defaults. */
export type ProfileName = 'idle' | 'web' | 'db' | 'mmuncher';

/** Every profile name, in the order they are shown to users. */
export const PROFILE_NAMES: readonly ProfileName[] = ['idle', 'web', 'db', 'mmuncher'];

/** What a VM is: enough for a target node to build an empty domain of the same shape. */
export interface VmSpec {
  /** Unique VM name within the cluster: [a-z0-9][a-z0-9-]{0,62}. */
  name: string;
  /** Guest RAM in bytes, a multiple of PAGE_SIZE, 16 MiB to 64 GiB. */
  memBytes: number;
  /** Number of virtual CPUs (each a worker thread in the sim driver). */
  vcpus: number;
  /** Workload profile the guest runs. */
  profile: ProfileName;
  /** Writable working set in bytes; 0 or absent = the profile's default. */
  wssBytes?: number;
  /** Bytes the guest dirties per second; 0 or absent = the profile's default. */
  dirtyRateBytesPerSec?: number;
  /** Bytes of RAM the guest fills with non-zero data at boot; absent = the profile's default. */
  fillBytes?: number;
  /** Shared disk URI (nbd://host:port/export), or absent for a diskless VM. */
  disk?: string;
  /** Seed for the guest's pseudo-random choices (makes runs repeatable). */
  seed?: number;
}

/** Life-cycle state of a domain on one node. */
export type DomainState = 'running' | 'paused' | 'incoming' | 'destroyed';

/** What the guest found when it checked its own memory (and disk, when it has one). */
export interface GuestCheckResult {
  /** True when every page the guest ever wrote holds the version its index records. */
  ok: boolean;
  /** Pages checked. */
  pagesChecked: number;
  /** Pages whose content disagreed with the index (first few listed in `detail`). */
  badPages: number;
  /** Human-readable description of the first failures, empty when ok. */
  detail: string;
  /** Disk check: undefined without a disk; true when no acknowledged write was lost or torn. */
  diskOk?: boolean;
  /** Disk check verdict in words (names the export and the first bad record); undefined without a disk. */
  diskDetail?: string;
  /** Highest acknowledged WAL record of the guest's disk log; undefined without a disk. */
  diskAckedSeq?: number;
}

/** Guest-observed time, read from the heartbeat the guest keeps in its own memory. */
export interface HeartbeatReading {
  /** Wall-clock ms (performance.timeOrigin + now) of the guest's last heartbeat. */
  lastBeatMs: number;
  /** Largest gap between two consecutive heartbeats since the last `resetHeartbeatGap`. */
  maxGapMs: number;
  /** Heartbeats so far (proves the guest is running when it grows). */
  beats: number;
  /**
   * Gap of the first heartbeat after the latest resume: for a migrated VM, the source's last beat
   * to the target's first (the guest-observed blackout). Absent when the driver does not measure it.
   */
  resumeGapMs?: number;
}

/** Runtime statistics of a domain, published in node heartbeats and metrics. */
export interface DomainStats {
  /** Pages written by the guest per second over the last second, in bytes/s. */
  dirtyRateBytesPerSec: number;
  /** Pages the guest has written at least once (its touched RAM), in bytes. */
  touchedBytes: number;
  /** Approximate vCPU utilisation, 0..vcpus. */
  cpu: number;
}

/**
 * Life cycle: what every driver's domain does. The agent needs nothing else to host a VM.
 */
export interface DomainLifecycle {
  /** The VM this domain hosts. */
  readonly spec: VmSpec;
  /** Current life-cycle state. */
  state(): DomainState;
  /** Stops every vCPU at an instruction boundary; resolves once none runs. */
  pause(): Promise<void>;
  /** Starts (or restarts) the vCPUs. */
  resume(): Promise<void>;
  /** Stops the vCPUs for good and releases guest memory. Safe to call twice. */
  destroy(): Promise<void>;
  /** Runtime statistics. */
  stats(): DomainStats;
}

/** Guest probe: the guest's own view of itself (heartbeat, self-check). */
export interface GuestProbe {
  /** Runs the guest's own integrity check (pauses the vCPUs for its duration if running). */
  guestCheck(): Promise<GuestCheckResult>;
  /** Reads the guest's heartbeat. */
  heartbeat(): HeartbeatReading;
  /** Resets the guest's max heartbeat gap (start of a measurement window). */
  resetHeartbeatGap(): void;
}

/**
 * Page access: for drivers whose guest memory the migration engine reads and writes itself
 * (the sim driver). The engine does the dirty-tracking rounds over these.
 */
export interface PageAccess {
  /** Number of guest pages (memBytes / PAGE_SIZE). */
  readonly pageCount: number;
  /** Pages per memory slot: ranges handed to pageView never cross a multiple of this. */
  readonly slotPages: number;
  /** Starts dirty logging (all pages start clean). */
  startDirtyLog(): void;
  /** Stops dirty logging. */
  stopDirtyLog(): void;
  /**
   * Returns the dirty bitmap (bit i of word i>>5 = page i) and clears it atomically, word by
   * word, like KVM_GET_DIRTY_LOG. The caller owns the result.
   */
  getAndClearDirtyLog(): Uint32Array;
  /** Peeks at the dirty bitmap without clearing it (Xen's to_skip test). */
  peekDirtyLog(): Uint32Array;
  /** Marks pages dirty again (a send failed: dirty bits are never lost). */
  markDirty(bitmap: Uint32Array): void;
  /** A live view of guest RAM for pages [pfn, pfn+count); must not cross a slot boundary. */
  pageView(pfn: number, count: number): Uint8Array;
  /**
   * Pages that may hold non-zero data (a clear bit guarantees a zero page that was never
   * touched); pre-copy's first round walks only these. Drivers that cannot tell set every bit.
   */
  populatedBitmap(): Uint32Array;
  /**
   * Optional hint: the pages of this range table (first, count pairs) are about to be written;
   * fault them in off the caller's thread. Never changes their contents.
   */
  prefault?(ranges: ArrayLike<number>): void;
  /** True when the page holds only zero bytes. */
  isZeroPage(pfn: number): boolean;
  /** Saves device state (vCPU registers, workload state); only while paused. */
  saveDeviceState(): Uint8Array;
  /** Loads device state saved by saveDeviceState on another node; only while paused/incoming. */
  loadDeviceState(state: Uint8Array): void;
  /**
   * Auto-converge (optional): the vCPUs run only (1 − fraction) of the time, so a guest that
   * dirties memory faster than the link moves it lets pre-copy converge. 0 = full speed.
   */
  setThrottle?(fraction: number): void;
  /** Post-copy (optional; the sim driver): which pages are on this node yet. */
  readonly postcopy?: PostcopyPageAccess;
}

/** Post-copy page access: the target's missing pages and its vCPUs' waits; the source's hot pages. */
export interface PostcopyPageAccess {
  /** Leading pages a post-copy switch always sends while paused (every guest write touches them). */
  readonly hotPages: number;
  /** Pages still missing. */
  readonly missingPages: number;
  /** Marks the pages of a range table (first, count pairs) missing; before the vCPUs resume. */
  markMissing(ranges: ArrayLike<number>): void;
  /** Pages [first, first + count) arrived: wakes the vCPUs waiting for them. */
  markPresent(first: number, count: number): void;
  /** True when page `pfn` is missing. */
  isMissing(pfn: number): boolean;
  /** Called with each page a vCPU waits for (once per page). */
  onFault: ((pfn: number) => void) | undefined;
  /** How long each vCPU page wait lasted, ms. */
  readonly waitsMs: number[];
}

/** A domain whose memory the engine copies page by page: life cycle, guest probe and page access. */
export type PagedDomain = DomainLifecycle & GuestProbe & PageAccess;

/** How a domain migrates: the engine copies its pages, or its hypervisor sends its own stream. */
export type MigrationCapability =
  | { readonly kind: 'pages'; readonly pages: PagedDomain }
  | { readonly kind: 'stream'; readonly stream: StreamMigration };

/** A hypervisor's own measurement of how fast the guest dirties memory. */
export interface DirtyRateMeasurement {
  /** Distinct bytes dirtied per second over the window. */
  bytesPerSec: number;
  /** How the hypervisor measured it (QEMU: its calc-dirty-rate mode, e.g. 'page-sampling'). */
  method: string;
  /** The window the hypervisor actually measured, ms (QEMU rounds to whole seconds). */
  windowMs: number;
  /** The method's precision in words (sample size; why a method was not used). */
  note: string;
}

/** One VM on one node, as a driver hosts it: life cycle, guest probe and how it migrates. */
export interface Domain extends DomainLifecycle, GuestProbe {
  /** The domain's migration capability (pages: the same domain seen with page access). */
  readonly migration: MigrationCapability;
  /** Optional: the hypervisor's own dirty-rate measurement over about `windowMs` (QEMU's calc-dirty-rate). */
  measureDirtyRate?(windowMs: number): Promise<DirtyRateMeasurement>;
}

/** A hypervisor driver: creates domains on this node. */
export interface Hypervisor {
  /** Driver name as given to `--hypervisor`. */
  readonly kind: 'sim' | 'qemu';
  /** Creates a domain and boots its guest (running when the promise resolves). */
  createDomain(spec: VmSpec): Promise<Domain>;
  /** Creates an empty paused domain to receive a migration into. */
  createIncoming(spec: VmSpec): Promise<Domain>;
  /** Releases driver resources (destroys remaining domains). */
  close(): Promise<void>;
}
