import { UdpBackend, VxlanBackend } from '@weft/dataplane';
import {
  COUNTER_COUNT,
  GatherCoalescer,
  segmentTcp4,
  standInBackendIo,
  TcpCoalescer,
  TcpSegmenter,
} from '@weft/dataplane/testing';
import { EtherType, IpProtocol, ipv4, ipv4FillChecksum, vxlanEncapInPlace } from '@weft/encap';
import { allocSlab, type PacketRing, SendTable } from '@weft/tun';
import type { MicroCase, MicroSuite } from './suite.js';

/**
 * One pump iteration over a synthetic batch, with no system calls: the backend runs over
 * stand-in I/O whose reads are driven by the benchmark and whose sends return at once. It
 * measures weft's own per-packet work (checks, lookups, headers, descriptors).
 */
const BATCH = 64;
const PACKET_BYTES = 1400;

/** Fills every slot of `ring` with a 1400-byte TCP packet from 10.244.1.5 to 10.244.2.(i). */
function fillPackets(ring: PacketRing): void {
  for (let i = 0; i < ring.slots; i++) {
    ring.lengths[i] = PACKET_BYTES;
    ipv4.emit(
      {
        src: 0x0af40105,
        dst: 0x0af40200 + (i % 250) + 1,
        protocol: IpProtocol.tcp,
        ttl: 64,
        payloadLength: PACKET_BYTES - 20,
        identification: i,
      },
      ring.slab,
      ring.slotOffset(i),
    );
  }
}

function resetTtl(ring: PacketRing): void {
  for (let i = 0; i < ring.slots; i++) {
    const off = ring.slotOffset(i);
    ring.slab[off + 8] = 64;
    ipv4FillChecksum(ring.slab, off);
  }
}

const remoteNode = {
  subnet: '10.244.2.0/24',
  publicIp: '198.18.0.2',
  vtepMac: '02:00:00:00:02:01',
};
const cases: MicroCase[] = [];

{
  const { queue, socket, io: backendIo } = standInBackendIo();
  const backend = VxlanBackend.overIo(backendIo, {
    vtepAddress: '10.244.1.0',
    vtepMac: '02:00:00:00:01:01',
    network: '10.244.0.0/16',
  });
  backend.setNodes([remoteNode]);
  fillPackets(queue.ring);
  cases.push({
    name: 'vxlan outbound: 64 packets TUN -> UDP (per packet)',
    opsPerCall: BATCH,
    fn: () => queue.onBatch(BATCH),
  });

  // Inbound: the same packets, encapsulated as node b would send them, from b's address.
  const rx = socket.ring;
  for (let i = 0; i < BATCH; i++) {
    const off = rx.slotOffset(i);
    ipv4.emit(
      {
        src: 0x0af40205,
        dst: 0x0af40100 + (i % 250) + 1,
        protocol: IpProtocol.tcp,
        ttl: 64,
        payloadLength: PACKET_BYTES - 20,
      },
      rx.slab,
      off + 22,
    );
    vxlanEncapInPlace(rx.slab, off + 22, 1, 0x020000000101, 0x020000000201, EtherType.ipv4);
    rx.lengths[i] = PACKET_BYTES + 22;
    rx.families[i] = 4;
    rx.addrs[i * 4] = 0xc6120002;
  }
  cases.push({
    name: 'vxlan inbound: 64 datagrams UDP -> TUN (per packet)',
    opsPerCall: BATCH,
    fn: () => socket.onBatch(BATCH),
  });
}

{
  const { queue, socket, io: backendIo } = standInBackendIo();
  const backend = UdpBackend.overIo(backendIo, {
    nodeAddress: '10.244.1.0',
    network: '10.244.0.0/16',
  });
  backend.setNodes([remoteNode]);
  fillPackets(queue.ring);
  cases.push({
    name: 'udp outbound: 64 packets TUN -> UDP, TTL reset included',
    opsPerCall: BATCH,
    fn: () => {
      resetTtl(queue.ring);
      queue.onBatch(BATCH);
    },
  });
  const rx = socket.ring;
  fillPackets(rx);
  for (let i = 0; i < BATCH; i++) {
    rx.families[i] = 4;
    rx.addrs[i * 4] = 0xc6120002;
  }
  cases.push({
    name: 'udp inbound: 64 datagrams UDP -> TUN, TTL reset included',
    opsPerCall: BATCH,
    fn: () => {
      resetTtl(rx);
      socket.onBatch(BATCH);
    },
  });
}

{
  // Offloads: a 64 KiB TSO super-packet cut into 1386-byte segments (VXLAN prefix room left), and
  // the segments coalesced back, per segment.
  const payload = 64_000;
  const superPacket = Buffer.alloc(20 + 32 + payload, 0x5a);
  ipv4.emit(
    {
      src: 0x0af40105,
      dst: 0x0af40207,
      protocol: IpProtocol.tcp,
      ttl: 64,
      payloadLength: 32 + payload,
    },
    superPacket,
  );
  superPacket[20 + 12] = 8 << 4;
  superPacket[20 + 13] = 0x10;
  const out = Buffer.alloc(90_000);
  const first = segmentTcp4(superPacket, 0, superPacket.length, 1386, out, 0, 22, false)!;
  cases.push({
    name: 'offload: cut a 64 KiB super-packet (per segment)',
    opsPerCall: first.count,
    fn: () => segmentTcp4(superPacket, 0, superPacket.length, 1386, out, 0, 22, false),
  });
  const segments = Buffer.alloc(first.count * 1438);
  segmentTcp4(superPacket, 0, superPacket.length, 1386, segments, 0, 0, false);
  const staging = Buffer.alloc(70_000);
  let emitted = 0;
  const coalescer = new TcpCoalescer(staging, () => emitted++);
  cases.push({
    name: 'offload: coalesce segments into a super-packet (per segment)',
    opsPerCall: first.count,
    fn: () => {
      coalescer.reset();
      for (let k = 0; k < first.count; k++)
        coalescer.push(segments, k * 1438, segments.readUInt16BE(k * 1438 + 2));
      coalescer.flush();
    },
  });

  // The same by gathering (what the udp and vxlan backends do): headers to staging, payload
  // checksums summed by the addon, payloads left where they are.
  const source = allocSlab(superPacket.length);
  superPacket.copy(source);
  const segmenter = new TcpSegmenter(allocSlab(64 * 160), 64);
  cases.push({
    name: 'offload, gathering: cut a 64 KiB super-packet (per segment)',
    opsPerCall: first.count,
    fn: () => {
      segmenter.cut(source, 0, source.length, 1386, 0, 22, false);
      segmenter.finish(source);
    },
  });
  const received = allocSlab(segments.length);
  segments.copy(received);
  const table = new SendTable(2 * first.count + 2);
  const gatherer = new GatherCoalescer(
    allocSlab(130 * (first.count + 1)),
    table,
    table.capacity,
    3,
    1,
    new Float64Array(COUNTER_COUNT),
    first.count,
  );
  cases.push({
    name: 'offload, gathering: coalesce segments into a super-packet (per segment)',
    opsPerCall: first.count,
    fn: () => {
      gatherer.reset();
      for (let k = 0; k < first.count; k++)
        gatherer.add(4, received, k * 1438, received.readUInt16BE(k * 1438 + 2));
      gatherer.finish(received);
    },
  });
}

export const pumpSuite: MicroSuite = { name: 'pump', cases };
