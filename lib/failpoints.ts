/**
 * Failpoints for fault tests (as etcd's gofail): named places in the code that misbehave on
 * purpose when DROVER_FAILPOINTS (a comma-separated list of names) lists them, so a test can put
 * a fault at an exact step that no external cut can hit reliably. Unset in production: then
 * every failpoint is off and costs one Set lookup.
 */

/** The environment variable that lists the active failpoints. */
export const FAILPOINTS_ENV = 'DROVER_FAILPOINTS';

/** The failpoints the code knows; an unknown name in FAILPOINTS_ENV is refused at first use. */
export const FAILPOINTS = [
  /** The target drops the stream as Complete arrives, before applying it (it never resumes the VM). */
  'target-drop-on-complete',
  /** The target drops the stream right after it resumed the VM, before sending Owned. */
  'target-drop-after-activate',
  /** The target agent dies (SIGKILL) as Complete arrives, before it resumed the VM. */
  'target-exit-on-complete',
  /** The target agent dies (SIGKILL) right after it resumed the VM, before sending Owned: the guest dies with it. */
  'target-exit-after-activate',
] as const;

/** One failpoint name. */
export type Failpoint = typeof FAILPOINTS[number];

let active: Set<string> | undefined;

/** Whether failpoint `name` is on in this process. */
export function failpoint(name: Failpoint): boolean {
  if (!active) {
    active = new Set((process.env[FAILPOINTS_ENV] ?? '').split(',').map((s) => s.trim()).filter(Boolean));
    for (const n of active) {
      if (!(FAILPOINTS as readonly string[]).includes(n)) throw new Error(`${FAILPOINTS_ENV}: unknown failpoint "${n}" (known: ${FAILPOINTS.join(', ')})`);
    }
  }
  return active.has(name);
}
