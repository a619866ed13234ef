import { closeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { isWeftError } from '@weft/core';
import { TunQueue, UdpSocket } from '@weft/tun';
import type { Backend } from './backend.js';
import type { RemoteNode } from './nodes.js';
import { UdpBackend, type UdpBackendOptions } from './udp-backend.js';
import { VxlanBackend, type VxlanBackendOptions } from './vxlan-backend.js';
import { SplitUdpIo, type WorkerSpec } from './workers.js';

/**
 * A worker thread of a backend with `workers` > 1 (see workers.ts): the same backend over one
 * queue of the device and sockets of its own, taken over from the main thread; node sets come in,
 * counters (every 250 ms) and faults go out.
 */
const spec = workerData as WorkerSpec;
const port = parentPort!;
let backend: Backend | undefined;
// Every fd handed over is this thread's to close, adopted or not.
const handedOver = [spec.device.queueFd, spec.receive.fd, spec.send.fd];
const adopted: { close(): void }[] = [];
const adopt = <T extends { close(): void }>(make: () => T): T => {
  const x = make();
  adopted.push(x);
  handedOver.shift();
  return x;
};
try {
  const queue = adopt(() => TunQueue.adopt(spec.device.queueFd, spec.device.name));
  const receive = adopt(() => UdpSocket.adopt(spec.receive.fd, spec.receive));
  const sender = adopt(() => UdpSocket.adopt(spec.send.fd, spec.send));
  const io = {
    device: {
      name: spec.device.name,
      mtu: spec.device.mtu,
      queues: [queue],
      close: () => queue.close(),
    },
    socket: new SplitUdpIo(receive, sender),
  };
  const options = { ...spec.options, workers: 1 };
  backend =
    spec.type === 'udp'
      ? UdpBackend.overIo(io, options as unknown as UdpBackendOptions)
      : VxlanBackend.overIo(io, options as unknown as VxlanBackendOptions);
  backend.setNodes(spec.nodes);
  const live = backend;
  live.onFault((err) => port.postMessage({ type: 'fault', code: err.code, message: err.message }));
  const timer = setInterval(
    () => port.postMessage({ type: 'counters', counters: live.counters() }),
    250,
  );
  port.on('message', (m: { type: string; nodes?: RemoteNode[] }) => {
    if (m.type === 'setNodes' && m.nodes) live.setNodes(m.nodes);
    else if (m.type === 'close') {
      clearInterval(timer);
      live.close();
      port.close();
    }
  });
} catch (err) {
  port.postMessage({
    type: 'error',
    message: `${isWeftError(err) ? `${err.code}: ` : ''}${(err as Error).message}`,
  });
  backend?.close();
  for (const x of adopted) x.close();
  for (const fd of handedOver) closeSync(fd);
  port.close();
}
