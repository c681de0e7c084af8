/** Test fixture of the receiver's tests: a fresh IncomingMigration beside a paused sim source. */
import { SimHypervisor } from '../../hypervisor/sim/sim-hypervisor';
import type { VmSpec } from '../../hypervisor/types';
import { IncomingMigration, type BulkChannelOffer } from './receiver';

/** Runs `body` with a fresh incoming migration `id` of `spec` (and a paused source domain's device state); `bulk`: the bulk channel it offers. */
export async function withIncoming(spec: VmSpec, id: string, body: (m: IncomingMigration, deviceState: Buffer) => Promise<void>, tunnel = '', bulk?: BulkChannelOffer): Promise<void> {
  const hv = new SimHypervisor();
  try {
    const src = await hv.createDomain(spec);
    await src.pause();
    const device = Buffer.from(src.saveDeviceState());
    const m = new IncomingMigration(id, 'tok', await hv.createIncoming({ ...spec, name: `${spec.name}-in` }), bulk);
    m.tunnel = tunnel;
    await body(m, device);
  } finally {
    await hv.close();
  }
}
