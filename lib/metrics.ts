/**
 * The metrics plumbing of Drover (prom-client): one registry per process (`registry`), the shared
 * histogram buckets, `startMetricsServer(listen)` serving `/metrics` with node:http, and generic
 * helpers over metric groups. Each service defines its group lazily on first use (`agentMetrics()`,
 * `migratorMetrics()`, `schedulerMetrics()`, `controlMetrics()`) and calls small recording
 * functions, so the hooks in the services are one-liners.
 *
 * Naming follows Prometheus conventions: base units (`_seconds`, `_bytes`), counters end in
 * `_total`, ratios in `_ratio`. Labels are bounded: no VM names or migration ids on histograms or
 * counters; the per-migration gauges carry `migration`/`vm` only while the migration is in flight
 * (the series is removed when it ends), so their cardinality is bounded by the concurrency limits.
 *
 * | metric | type | labels | what |
 * |---|---|---|---|
 * | process_*, nodejs_* | | | prom-client's default process metrics |
 *
 * The metric groups live beside the services that own them: services/node-agent/agent-metrics.ts,
 * services/migrator/migrator-metrics.ts, services/scheduler/scheduler-metrics.ts and
 * cluster/control-metrics.ts; services/metric-groups.ts lists them all (METRIC_GROUPS).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { describeIdentity, identityOf } from './pki/identity';
import { tlsServerOptions } from './pki/tls-options';
import type { TlsFiles } from './pki/tls-files';
import { Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/** The process registry every service of this process records into. */
export const registry = new Registry();

/** Downtime buckets: 0.5 ms .. 5 s. */
export const DOWNTIME_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Total migration time buckets: 0.25 s .. 10 min. */
export const DURATION_BUCKETS = [0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600];
/** Rounds per migration (the engine stops at 30). */
export const ROUND_BUCKETS = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30];
/** Bytes per migration: 1 MiB .. 64 GiB in powers of 4. */
export const BYTES_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536].map((m) => m * 2 ** 20);
/** RPC latency buckets: 0.5 ms .. 10 min (MigrateVm streams last the whole migration). */
export const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600];

/** A metric group: a class whose constructor defines its metrics in `reg`. */
export type MetricGroup = new (reg: Registry) => unknown;

let defaults = false;

/** A registry holding every metric of `groups` (e.g. METRIC_GROUPS) and the default process metrics. */
export function fullRegistry(groups: readonly MetricGroup[]): Registry {
  const reg = new Registry();
  for (const G of groups) new G(reg);
  collectDefaultMetrics({ register: reg });
  return reg;
}

/**
 * Every series name `groups` can export (histograms expanded to `_bucket`, `_sum`, `_count`),
 * computed from the metric definitions themselves.
 */
export async function exportedMetricNames(groups: readonly MetricGroup[]): Promise<Set<string>> {
  const names = new Set<string>();
  for (const m of await fullRegistry(groups).getMetricsAsJSON()) {
    const type = String(m.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) names.add(m.name + s);
    else names.add(m.name);
  }
  return names;
}

/** Metric definitions (name, type, labels) of `groups`, for docs and tests. */
export async function metricTable(groups: readonly MetricGroup[]): Promise<{ name: string; type: string; labels: string[] }[]> {
  const out: { name: string; type: string; labels: string[] }[] = [];
  const reg = new Registry();
  for (const G of groups) new G(reg);
  for (const o of reg.getMetricsAsArray()) {
    const m = o as unknown as { name: string; type: string; labelNames?: string[] };
    out.push({ name: m.name, type: String(m.type), labels: [...(m.labelNames ?? [])] });
  }
  return out;
}

/** A running /metrics endpoint. */
export interface MetricsServer {
  /** host:port it listens on. */
  address: string;
  /** Stops serving. */
  close(): Promise<void>;
}

/** Roles whose certificates may scrape /metrics over TLS. */
export const METRICS_SCRAPE_ROLES: readonly string[] = ['monitor', 'admin'];

/** Options of startMetricsServer. */
export interface MetricsServerOptions {
  /**
   * Serve HTTPS (TLS 1.3) with this identity: a client certificate of the cluster CA is required
   * at the handshake, and only monitor and admin identities get /metrics (others: 403 naming the role).
   */
  tls?: TlsFiles;
}

/** Serves `reg` (default: the process registry, with default process metrics) on http(s)://listen/metrics. */
export function startMetricsServer(listen: string, reg: Registry = registry, opts: MetricsServerOptions = {}): Promise<MetricsServer> {
  if (reg === registry && !defaults) { defaults = true; collectDefaultMetrics({ register: registry }); }
  const m = /^(.*):([0-9]+)$/.exec(listen);
  if (!m) return Promise.reject(new Error(`metrics address "${listen}" is not HOST:PORT`));
  const host = m[1].replace(/^\[(.*)\]$/, '$1');
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405).end(); return; }
    if (opts.tls) {
      const id = identityOf((req.socket as TLSSocket).getPeerCertificate?.(true)?.raw);
      if (!id || !METRICS_SCRAPE_ROLES.includes(id.role)) {
        res.writeHead(403, { 'Content-Type': 'text/plain' }).end(`${describeIdentity(id)} may not read metrics (${METRICS_SCRAPE_ROLES.join(' or ')} only)\n`);
        return;
      }
    }
    if (url === '/metrics') {
      reg.metrics().then((body) => { res.writeHead(200, { 'Content-Type': reg.contentType }); res.end(body); },
        (err) => { res.writeHead(500, { 'Content-Type': 'text/plain' }); res.end(String((err as Error).message)); });
    } else if (url === '/healthz' || url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end(url === '/' ? 'drover metrics: /metrics\n' : 'ok\n');
    } else {
      res.writeHead(404).end();
    }
  };
  const server = opts.tls ? https.createServer(tlsServerOptions(opts.tls), handler) : http.createServer(handler);
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot serve metrics on ${listen}: ${e.message}`)));
    server.listen(Number(m[2]), host, () => {
      const a = server.address() as { port: number };
      server.unref();
      resolve({
        address: `${m[1]}:${a.port}`,
        close: () => new Promise<void>((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

/** Value of one series in `reg` (tests). */
export async function valueOf(reg: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const m = (await reg.getMetricsAsJSON()).find((x) => x.name === name) as MetricObjectWithValues<MetricValue<string>> | undefined;
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => String((x.labels as Record<string, unknown>)[k]) === val));
  return v?.value;
}
