/**
 * Lease and control-loop health of the control-plane services (migrator and scheduler), recorded
 * into the process registry of lib/metrics.ts.
 *
 * | metric | type | labels | what |
 * |---|---|---|---|
 * | drover_etcd_lease_up | gauge | service | 1 while the service holds its etcd lease (migrator: claim lease; scheduler: the leader's election lease) |
 * | drover_etcd_lease_lost_total | counter | service | leases / election campaigns lost |
 * | drover_control_loop_errors_total | counter | service | scan/round failures (etcd unreachable, ...) |
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { registry } from '../lib/metrics';

/** Lease and loop health shared by the migrator and the scheduler. */
export class ControlPlaneMetrics {
  readonly leaseUp: Gauge<'service'>;
  readonly leaseLost: Counter<'service'>;
  readonly loopErrors: Counter<'service'>;
  constructor(reg: Registry) {
    const registers = [reg];
    this.leaseUp = new Gauge({ name: 'drover_etcd_lease_up', help: '1 while the service holds its etcd lease.', labelNames: ['service'], registers });
    this.leaseLost = new Counter({ name: 'drover_etcd_lease_lost_total', help: 'etcd leases or election campaigns lost.', labelNames: ['service'], registers });
    this.loopErrors = new Counter({ name: 'drover_control_loop_errors_total', help: 'Failed control-loop iterations (scan, round).', labelNames: ['service'], registers });
  }
  /** The service holds its lease (true) or lost it (false: also counted as lost). */
  lease(service: string, up: boolean): void {
    if (!up) this.leaseLost.inc({ service });
    this.leaseUp.set({ service }, up ? 1 : 0);
  }
  /** One failed control-loop iteration of `service`. */
  loopError(service: string): void { this.loopErrors.inc({ service }); }
}

let control: ControlPlaneMetrics | undefined;
/** Lease and loop health of this process's control-plane services. */
export function controlMetrics(): ControlPlaneMetrics { return (control ??= new ControlPlaneMetrics(registry)); }
