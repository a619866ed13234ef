import { IpProtocol, ipv4, ipv4Check, Status, VIRTIO_NET_HDR_BYTES } from '@weft/encap';
import { type PacketRing, SendFlag, SendTable } from '@weft/tun';
import { describe, expect, it } from 'vitest';
import { UdpBackend } from '../src/index.js';
import { mergeSends } from '../src/pump.js';
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

describe('mergeSends: runs of one size to one destination become UDP GSO sends', () => {
  /** A table of single datagrams: [length, destination] each, at 100-byte offsets. */
  function table(datagrams: [number, number][]): SendTable {
    const t = new SendTable(datagrams.length + 2);
    datagrams.forEach(([len, dst], i) => {
      t.set4(i, 0, i * 100, len, dst, 8472);
    });
    return t;
  }
  /** Each packet: its GSO size and its pieces' lengths. */
  function packets(t: SendTable, n: number): string[] {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      if (t.flags[i] & SendFlag.continues) out[out.length - 1] += `+${t.lengths[i]}`;
      else out.push(`gso ${t.gso[i]}: ${t.lengths[i]}`);
    }
    return out;
  }

  it('merges by destination and size; a shorter datagram ends a run, a longer one starts the next', () => {
    const t = table([
      [100, 1],
      [100, 1],
      [100, 1],
      [60, 1],
      [100, 1],
      [100, 2],
      [100, 2],
      [120, 2],
      [50, 3],
    ]);
    mergeSends(t, 0, 9);
    expect(packets(t, 9)).toEqual([
      'gso 100: 100+100+100+60',
      'gso 0: 100',
      'gso 100: 100+100',
      'gso 0: 120',
      'gso 0: 50',
    ]);
    // Offsets, slabs and destinations are untouched: the pieces are the datagrams where they lie.
    for (let i = 0; i < 9; i++) expect(t.offsets[i]).toBe(i * 100);
  });

  it('leaves packets already in pieces or with a GSO size whole, and stops at 64 datagrams', () => {
    const t = new SendTable(200);
    t.set4(0, 0, 0, 100, 1, 8472);
    t.set4(1, 0, 100, 100, 1, 8472);
    t.append(2, 0, 200, 100); // 1 and 2 are one packet: 0 stays alone
    t.set4(3, 0, 300, 100, 1, 8472);
    t.gso[3] = 50;
    for (let i = 4; i < 4 + 70; i++) t.set4(i, 0, 0, 10, 1, 8472);
    mergeSends(t, 0, 74);
    expect(packets(t, 74)).toEqual([
      'gso 0: 100',
      'gso 0: 100+100',
      'gso 50: 100',
      `gso 10: ${Array(64).fill(10).join('+')}`,
      `gso 10: ${Array(6).fill(10).join('+')}`,
    ]);
  });

  it('keeps a run within 65,000 bytes, and only merges within the range given', () => {
    const t = table(Array.from({ length: 60 }, () => [1400, 1] as [number, number]));
    mergeSends(t, 0, 50);
    const p = packets(t, 60);
    expect(p[0].split('+').length).toBe(46);
    expect(p[1].split('+').length).toBe(4);
    expect(p.slice(2)).toEqual(Array(10).fill('gso 0: 1400'));
  });

  it('the pump merges a batch of small datagrams from the device into one send, offloads on only', () => {
    for (const offload of [false, true]) {
      const { backend, queue, socket } = udpBackend(offload);
      const h = offload ? VIRTIO_NET_HDR_BYTES : 0;
      for (let i = 0; i < 10; i++) put(queue.ring, i, h);
      queue.onBatch(10);
      const sent = socket.sentPackets();
      expect(sent.length).toBe(offload ? 1 : 10);
      expect(sent.reduce((a, p) => a + p.length, 0)).toBe(1000);
      if (offload) expect(socket.table.gso[0]).toBe(100);
      backend.close();
    }
  });
});
