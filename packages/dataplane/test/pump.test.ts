import { IpProtocol, ipv4, ipv4Check, Status, VIRTIO_NET_HDR_BYTES } from '@weft/encap';
import type { PacketRing } from '@weft/tun';
import { describe, expect, it } from 'vitest';
import { UdpBackend } from '../src/index.js';
import { standInBackendIo } from '../src/testing.js';

function udpBackend(offload: boolean) {
  const { queue, socket, io } = standInBackendIo({ mtu: 1472, port: 8285 });
  const backend = UdpBackend.overIo(io, {
    network: '10.244.0.0/16',
    nodeAddress: '10.244.1.0',
    offload,
  });
  backend.setNodes([{ subnet: '10.244.2.0/24', publicIp: '198.18.0.2' }]);
  return { backend, queue, socket };
}

/** Puts a 100-byte IPv4 packet to 10.244.2.7 in slot i (behind an empty virtio header if `h`). */
function put(ring: PacketRing, i: number, h: number): void {
  const at = ring.slotOffset(i);
  ring.slab.fill(0, at, at + h);
  ipv4.emit(
    { src: 0x0af40105, dst: 0x0af40207, protocol: IpProtocol.udp, ttl: 64, payloadLength: 80 },
    ring.slab.subarray(at + h),
  );
  ring.lengths[i] = h + 100;
}

describe('the pump over stand-in I/O', () => {
  for (const offload of [false, true]) {
    it(`offloads ${offload ? 'on' : 'off'}: a device packet cut by the read is counted, and the next one goes out`, () => {
      const { backend, queue, socket } = udpBackend(offload);
      const h = offload ? VIRTIO_NET_HDR_BYTES : 0;
      put(queue.ring, 0, h);
      queue.ring.lengths[0] = -1; // @weft/tun: longer than a slot, cut
      put(queue.ring, 1, h);
      queue.ring.lengths[2] = h; // nothing after the header (or an empty read)
      put(queue.ring, 3, h);
      queue.onBatch(4);
      expect(backend.counters().drops.truncated).toBe(2);
      expect(socket.sent).toBe(2);
      const t = socket.table;
      for (let i = socket.lastSendStart; i < socket.lastSendStart + socket.lastSendCount; i++) {
        expect(t.lengths[i]).toBe(100);
        expect(t.addrs[i * 4]).toBe(0xc6120002);
        const packet = socket.sentBytes(i);
        expect(ipv4Check(packet, 0, packet.length)).toBe(Status.ok);
        expect(packet[8]).toBe(63); // flannel's TTL step, checksum patched to match
      }
      backend.close();
    });
  }
});
