/**
 * Which storage endpoints a VM's disk may name on this agent. A disk URI makes the agent (and
 * the hypervisor) connect to its host and port, so it must be one of the endpoints the agent was
 * configured with (DROVER_STORAGE, comma-separated HOST:PORT; `drover agent --storage`). With
 * none configured, only loopback endpoints are allowed (local NBD servers, as tests and
 * `drover up` use them).
 */
import { failedPrecondition } from '../../lib/errors';

/** Environment variable listing the allowed storage endpoints (HOST:PORT, comma-separated). */
export const STORAGE_ENV = 'DROVER_STORAGE';

/** True for 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(h);
}

/** The storage endpoints a VM's disk may name. */
export class StoragePolicy {
  private readonly allowed: ReadonlySet<string>;

  constructor(endpoints: readonly string[]) {
    this.allowed = new Set(endpoints.map((e) => e.trim().toLowerCase()).filter((e) => e !== ''));
  }

  /** The policy of DROVER_STORAGE (unset: loopback only). */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): StoragePolicy {
    return new StoragePolicy((env[STORAGE_ENV] ?? '').split(','));
  }

  /** The configured endpoints (empty: loopback only). */
  get endpoints(): string[] {
    return [...this.allowed];
  }

  /** Throws FAILED_PRECONDITION unless `disk` (nbd://HOST:PORT/EXPORT, or none) names an allowed endpoint. */
  check(disk: string | undefined, vm: string): void {
    if (disk === undefined || disk === '') return;
    const m = /^[a-z]+:\/\/([^/]+?):([0-9]+)\//i.exec(disk);
    const host = m?.[1] ?? '', endpoint = m ? `${host}:${m[2]}`.toLowerCase() : '';
    if (this.allowed.size === 0) {
      if (m && isLoopbackHost(host)) return;
      throw failedPrecondition(`VM ${vm}: disk ${disk} is not on an allowed storage endpoint: no storage endpoints are configured (${STORAGE_ENV} / --storage), so only loopback ones (127.0.0.0/8, ::1, localhost) are allowed`);
    }
    if (!this.allowed.has(endpoint)) throw failedPrecondition(`VM ${vm}: disk ${disk} is not on an allowed storage endpoint (allowed: ${this.endpoints.join(', ')})`);
  }
}
