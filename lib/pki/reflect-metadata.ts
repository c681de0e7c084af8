/**
 * The few `Reflect` metadata functions @peculiar/x509's dependency injection container
 * (tsyringe) checks for at load time: getMetadata, getOwnMetadata, defineMetadata, hasMetadata
 * and metadata. Installed only when no real polyfill (reflect-metadata, core-js) is loaded;
 * adding the `reflect-metadata` package and importing it instead makes this file unnecessary.
 * @peculiar/x509's injectable classes take no constructor parameters, so the store only ever
 * holds tsyringe's own bookkeeping.
 */

type Key = string | symbol;
type Store = Map<Key | undefined, Map<unknown, unknown>>;

const stores = new WeakMap<object, Store>();

function own(target: object, prop: Key | undefined, create: boolean): Map<unknown, unknown> | undefined {
  let store = stores.get(target);
  if (!store && create) stores.set(target, (store = new Map()));
  let entries = store?.get(prop);
  if (!entries && create && store) store.set(prop, (entries = new Map()));
  return entries;
}

function lookup(target: object, prop: Key | undefined, key: unknown): unknown {
  for (let t: object | null = target; t; t = Object.getPrototypeOf(t) as object | null) {
    const entries = own(t, prop, false);
    if (entries?.has(key)) return entries.get(key);
  }
  return undefined;
}

const shim = {
  getMetadata: (key: unknown, target: object, prop?: Key): unknown => lookup(target, prop, key),
  getOwnMetadata: (key: unknown, target: object, prop?: Key): unknown => own(target, prop, false)?.get(key),
  hasMetadata: (key: unknown, target: object, prop?: Key): boolean => lookup(target, prop, key) !== undefined,
  defineMetadata: (key: unknown, value: unknown, target: object, prop?: Key): void => { own(target, prop, true)?.set(key, value); },
  metadata: (key: unknown, value: unknown) => (target: object, prop?: Key): void => { own(target, prop, true)?.set(key, value); },
};

/** Installs the metadata functions on `Reflect` unless a polyfill already did. */
export function installReflectMetadata(): void {
  const r = Reflect as unknown as Record<string, unknown>;
  if (typeof r.getMetadata === 'function') return;
  for (const [name, fn] of Object.entries(shim)) r[name] = fn;
}

installReflectMetadata();
