/**
 * glibc malloc settings of Drover's data-plane processes (node agents), and the environment their
 * children get instead: QEMU and the NBD servers an agent starts are not Node processes moving
 * 1 MiB buffers, so the agent's own tuning must not leak into them (an operator's setting does).
 */

/**
 * glibc malloc settings for data-plane processes: keep freed bulk buffers (1 MiB frames) in
 * the heap instead of returning them to the kernel, so they are not faulted in again on every
 * use (first-touch faults cost ~4 us per 4 KiB page on this class of machine).
 */
export const BULK_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=536870912';

/** Set in the environment of a tuned agent (so it never re-executes twice). */
export const TUNED_ENV = 'DROVER_AGENT_TUNED';

/**
 * The environment for a child of an agent (QEMU, an NBD server): `base` without the agent's own
 * malloc tuning and its tuned marker. A GLIBC_TUNABLES other than the agent's (the operator's) stays.
 */
export function withoutAgentTuning(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  if (env.GLIBC_TUNABLES === BULK_MALLOC_TUNABLES) delete env.GLIBC_TUNABLES;
  delete env[TUNED_ENV];
  return env;
}
