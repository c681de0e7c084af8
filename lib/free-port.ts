/** Free TCP ports for services a process starts itself (agents, etcd, NBD servers, Prometheus). */
import * as net from 'node:net';

/** A free TCP port on `host`, found by binding port 0 (the kernel's choice) and closing again. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
