import { IpProtocol, ipv4, ipv4Check, Status, VIRTIO_NET_HDR_BYTES } from '@weft/encap';
import type { PacketRing, SendTable } from '@weft/tun';
import { describe, expect, it } from 'vitest';
import { type PacketIo, UdpBackend, type UdpIo } from '../src/index.js';

/** Stand-in I/O: the test fills the read ring and fires a batch; sends are recorded. */
class FakeIo implements UdpIo {
  readonly family = 4 as const;
  readonly port = 8285;
  ring!: PacketRing;
  table!: SendTable;
  onBatch!: (count: number) => void;
  slabs = new Map<number, Buffer>();
  sent: { slab: number; offset: number; length: number; dst: number }[] = [];
  registerSlab(index: number, slab: Buffer): void {
    this.slabs.set(index, slab);
  }
  setSendTable(table: SendTable): void {
    this.table = table;
  }
  startReading(ring: PacketRing, onBatch: (count: number) => void): void {
    this.ring = ring;
    this.onBatch = onBatch;
  }
  send(start: number, count: number): number {
    const t = this.table;
    for (let i = start; i < start + count; i++)
      this.sent.push({
        slab: t.slabs[i],
        offset: t.offsets[i],
        length: t.lengths[i],
        dst: t.addrs[i * 4],
      });
    return count;
  }
  onWritable(): void {}
  pause(): void {}
  resume(): void {}
  stats() {
    return undefined;
  }
  close(): void {}
}

function udpBackend(offload: boolean) {
  const queue = new FakeIo();
  const socket = new FakeIo();
  const device = { name: 'fake0', mtu: 1472, queues: [queue as PacketIo], close() {} };
  const backend = UdpBackend.overIo(
    { device, socket },
    { network: '10.244.0.0/16', nodeAddress: '10.244.1.0', offload },
  );
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
      expect(socket.sent).toHaveLength(2);
      for (const s of socket.sent) {
        expect(s).toMatchObject({ length: 100, dst: 0xc6120002 });
        const packet = socket.slabs.get(s.slab)!.subarray(s.offset, s.offset + s.length);
        expect(ipv4Check(packet, 0, packet.length)).toBe(Status.ok);
        expect(packet[8]).toBe(63); // flannel's TTL step, checksum patched to match
      }
      backend.close();
    });
  }
});
