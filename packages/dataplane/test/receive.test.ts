import { parseIpv4, parseIpv6, parseMac } from '@weft/core';
import {
  ArpOperation,
  arp,
  EtherType,
  IpProtocol,
  ipv4,
  ipv4FillChecksum,
  ipv6,
  VIRTIO_NET_HDR_BYTES,
  vxlan,
  writeEthernetHeader,
} from '@weft/encap';
import { describe, expect, it } from 'vitest';
import {
  type Backend,
  type CounterSnapshot,
  UdpBackend,
  VxlanBackend,
  type VxlanBackendOptions,
} from '../src/index.js';
import { type StandInIo, standInBackendIo, writeTcp4 } from '../src/testing.js';

/*
 * What a peer sends cannot fool or exhaust a node: each case over stand-in I/O, datagrams put
 * straight into the socket's ring as the kernel would hand them over.
 */

const MAC_A = parseMac('02:00:00:00:01:01');
const MAC_B = parseMac('02:00:00:00:02:01');
const B = parseIpv4('198.18.0.2');
const STRANGER = parseIpv4('198.18.0.3');
const ip = parseIpv4;

function vxlanNode(extra: VxlanBackendOptions = {}, node: object = {}) {
  const { queue, socket, io } = standInBackendIo({ port: 8472 });
  const backend = VxlanBackend.overIo(io, {
    vtepAddress: '10.244.1.0',
    vtepMac: '02:00:00:00:01:01',
    network: '10.244.0.0/16',
    ...extra,
  });
  backend.setNodes([
    {
      subnet: '10.244.2.0/24',
      subnet6: 'fd00:0:0:2::/64',
      publicIp: '198.18.0.2',
      vtepMac: '02:00:00:00:02:01',
      ...node,
    },
  ]);
  return { backend, queue, socket };
}

function udpNode(extra: { checkInnerSource?: boolean; offload?: boolean } = {}) {
  const { queue, socket, io } = standInBackendIo({ port: 8285, mtu: 1472 });
  const backend = UdpBackend.overIo(io, {
    network: '10.244.0.0/16',
    nodeAddress: '10.244.1.0',
    ...extra,
  });
  backend.setNodes([{ subnet: '10.244.2.0/24', publicIp: '198.18.0.2' }]);
  return { backend, queue, socket };
}

/** Puts datagrams into the socket's ring, from `from`, and runs one batch. */
function receive(socket: StandInIo, datagrams: Buffer[], from = B, gso = 0): void {
  const ring = socket.ring;
  datagrams.forEach((d, i) => {
    d.copy(ring.slab, ring.slotOffset(i));
    ring.lengths[i] = d.length;
    ring.families[i] = 4;
    ring.addrs[i * 4] = from;
    ring.ports[i] = socket.port;
    ring.gso[i] = gso;
  });
  socket.onBatch(datagrams.length);
}

/** The packets the backend wrote to its device in the last batch. */
function delivered(queue: StandInIo, header = 0): Buffer[] {
  return queue.sentPackets().map((p) => p.subarray(header));
}

/** A UDP/IPv4 packet from `src` to 10.244.1.7 carrying `text`. */
function udp4(src: string, text = 'hello', dst = '10.244.1.7'): Buffer {
  const body = Buffer.from(text);
  const p = Buffer.alloc(28 + body.length);
  ipv4.emit(
    {
      src: ip(src),
      dst: ip(dst),
      protocol: IpProtocol.udp,
      ttl: 64,
      payloadLength: 8 + body.length,
    },
    p,
  );
  p.writeUInt16BE(40000, 20);
  p.writeUInt16BE(7777, 22);
  p.writeUInt16BE(8 + body.length, 24);
  body.copy(p, 28);
  return p;
}

/** An IPv6/UDP packet from `src`. */
function udp6(src: string, text = 'hello6'): Buffer {
  const body = Buffer.from(text);
  const p = Buffer.alloc(48 + body.length);
  ipv6.emit(
    {
      src: parseIpv6(src),
      dst: parseIpv6('fd00:0:0:1::7'),
      nextHeader: IpProtocol.udp,
      hopLimit: 64,
      payloadLength: 8 + body.length,
    },
    p,
  );
  p.writeUInt16BE(8 + body.length, 44);
  body.copy(p, 48);
  return p;
}

/** VXLAN (VNI 1) + inner Ethernet to our VTEP MAC + `payload`; `tag` inserts an 802.1Q tag. */
function vxlanFrame(payload: Buffer, type: number, tag?: { tci: number }): Buffer {
  const eth = tag ? 18 : 14;
  const f = Buffer.alloc(8 + eth + payload.length);
  vxlan.emit({ vni: 1 }, f);
  writeEthernetHeader(f, 8, MAC_A, MAC_B, tag ? EtherType.vlan : type);
  if (tag) {
    f.writeUInt16BE(tag.tci, 8 + 14);
    f.writeUInt16BE(type, 8 + 16);
  }
  payload.copy(f, 8 + eth);
  return f;
}

/** An ARP request over VXLAN, broadcast, asking for `target`, from `sender` at `senderMac`. */
function arpFrame(sender: number, senderMac: number, target = ip('10.244.1.0')): Buffer {
  const f = Buffer.alloc(8 + 14 + 28);
  vxlan.emit({ vni: 1 }, f);
  writeEthernetHeader(f, 8, 0xffffffffffff, senderMac, EtherType.arp);
  arp.emit(
    {
      operation: ArpOperation.request,
      senderMac,
      senderIp: sender,
      targetMac: 0,
      targetIp: target,
    },
    f,
    22,
  );
  return f;
}

function drops(backend: Backend): Record<string, number> {
  const d = (backend.counters() as CounterSnapshot).drops;
  return Object.fromEntries(Object.entries(d).filter(([, v]) => v !== 0));
}

describe('inner 802.1Q frames (RFC 7348 6.1)', () => {
  it('TUN mode: a tagged frame is dropped and counted, never parsed at the tag', () => {
    const { backend, queue, socket } = vxlanNode();
    // Read from the tag on, these bytes are a valid IPv6 packet from node b's subnet that was
    // never in the frame: the tag (0x6000) and the EtherType (0x86dd) begin its header, and what
    // the frame carries behind the tag (version 0) is the rest of it.
    const ghost = udp6('fd00:0:0:2::5', '');
    const tagged = vxlanFrame(ghost.subarray(4), EtherType.ipv6, { tci: 0x6000 });
    receive(socket, [tagged, vxlanFrame(udp4('10.244.2.5'), EtherType.ipv4, { tci: 5 })]);
    expect(drops(backend)).toEqual({ vlanTagged: 2 });
    expect(backend.counters().rxPackets).toBe(0);
    expect(queue.sent).toBe(0);
  });

  it("TUN mode with innerVlan 'accept': the packet behind one tag, exactly; a second tag is still dropped", () => {
    const { backend, queue, socket } = vxlanNode({ innerVlan: 'accept' });
    const real = udp4('10.244.2.5', 'behind a tag');
    const double = vxlanFrame(Buffer.concat([Buffer.from([0, 7, 8, 0]), real]), EtherType.vlan, {
      tci: 5,
    });
    receive(socket, [vxlanFrame(real, EtherType.ipv4, { tci: 5 }), double]);
    expect(delivered(queue)).toEqual([real]);
    expect(drops(backend)).toEqual({ vlanTagged: 1 });
  });

  it('TAP mode: tagged frames are dropped each way unless accepted, then carried as they are', () => {
    for (const innerVlan of ['drop', 'accept'] as const) {
      const { queue, socket, io } = standInBackendIo({ port: 4789 });
      const backend = VxlanBackend.overIo(io, { mode: 'tap', vni: 1, port: 4789, innerVlan });
      backend.setNodes([{ publicIp: '198.18.0.2' }]);
      const frame = vxlanFrame(udp4('10.99.0.2'), EtherType.ipv4, { tci: 42 });
      receive(socket, [frame]);
      // Outbound: the same tagged frame from the TAP.
      const ring = queue.ring;
      frame.copy(ring.slab, ring.slotOffset(0), 8);
      ring.lengths[0] = frame.length - 8;
      queue.onBatch(1);
      if (innerVlan === 'drop') {
        expect(drops(backend)).toEqual({ vlanTagged: 2 });
        expect(queue.sent + socket.sent).toBe(0);
      } else {
        expect(drops(backend)).toEqual({});
        expect(delivered(queue)).toEqual([frame.subarray(8)]);
        expect(socket.sent).toBe(1);
      }
      backend.close();
    }
  });
});

describe('the inner source check', () => {
  it('udp: a packet from a known node whose inner source is outside its subnet is dropped as spoofedInner', () => {
    const { backend, queue, socket } = udpNode();
    receive(socket, [udp4('8.244.2.77'), udp4('10.244.1.9'), udp4('10.244.2.5', 'fine')]);
    expect(drops(backend)).toEqual({ spoofedInner: 2 });
    expect(delivered(queue).map((p) => p.subarray(28).toString())).toEqual(['fine']);
  });

  it('udp: checkInnerSource false lets them through (as flannel does)', () => {
    const { backend, queue, socket } = udpNode({ checkInnerSource: false });
    receive(socket, [udp4('8.244.2.77')]);
    expect(drops(backend)).toEqual({});
    expect(delivered(queue)).toHaveLength(1);
  });

  it('udp with offloads: the same, per datagram of a GRO batch', () => {
    const { backend, queue, socket } = udpNode({ offload: true });
    const size = 28 + 5;
    const gro = Buffer.concat([udp4('10.244.2.5'), udp4('8.8.8.8'), udp4('10.244.2.6')]);
    receive(socket, [gro], B, size);
    expect(drops(backend)).toEqual({ spoofedInner: 1 });
    expect(delivered(queue, VIRTIO_NET_HDR_BYTES).map((p) => p.subarray(12, 16).join('.'))).toEqual(
      ['10.244.2.5', '10.244.2.6'],
    );
  });

  it("vxlan: IPv4 and IPv6 inner sources outside the sending node's subnets are dropped; inside pass", () => {
    const { backend, queue, socket } = vxlanNode();
    receive(socket, [
      vxlanFrame(udp4('8.244.2.77'), EtherType.ipv4),
      vxlanFrame(udp4('10.244.3.1'), EtherType.ipv4),
      vxlanFrame(udp6('fd00:0:0:3::1'), EtherType.ipv6),
      vxlanFrame(udp4('10.244.2.8', 'v4 ok'), EtherType.ipv4),
      vxlanFrame(udp6('fd00:0:0:2::8', 'v6 ok'), EtherType.ipv6),
    ]);
    expect(drops(backend)).toEqual({ spoofedInner: 3 });
    expect(delivered(queue)).toHaveLength(2);
  });

  it('vxlan: checkInnerSource false lets them through', () => {
    const { backend, queue, socket } = vxlanNode({ checkInnerSource: false });
    receive(socket, [vxlanFrame(udp4('8.244.2.77'), EtherType.ipv4)]);
    expect(drops(backend)).toEqual({});
    expect(delivered(queue)).toHaveLength(1);
  });

  it('a node holding two leases on one address may send from both subnets', () => {
    const { backend, queue, socket } = udpNode();
    backend.addNode({ subnet: '10.244.9.0/24', publicIp: '198.18.0.2' });
    receive(socket, [udp4('10.244.2.5'), udp4('10.244.9.5'), udp4('10.244.3.5')]);
    expect(drops(backend)).toEqual({ spoofedInner: 1 });
    expect(delivered(queue)).toHaveLength(2);
  });
});

describe('neighbor learning from ARP over VXLAN', () => {
  it("learns only senders inside the sending node's subnet; others are spoofedInner and not learned", () => {
    const { backend, socket } = vxlanNode();
    receive(socket, [
      arpFrame(ip('10.244.2.5'), parseMac('02:00:00:00:02:05')),
      arpFrame(ip('10.244.7.7'), parseMac('02:00:00:00:07:07')),
      arpFrame(ip('8.8.8.8'), parseMac('02:00:00:00:08:08')),
    ]);
    const learned = backend.neighbors.dump().filter((n) => n.learned);
    expect(learned.map((n) => n.ip)).toEqual(['10.244.2.5']);
    expect(drops(backend)).toEqual({ spoofedInner: 2 });
    expect(backend.counters()).toMatchObject({ arpReceived: 1, arpReplies: 1 });
  });

  it('60,000 ARPs with random senders from a known node leave a bounded table, overflow counted', () => {
    // A node with a large subnet, so that every sender is in it and learnable.
    const { backend, socket } = vxlanNode({ maxLearnedNeighbors: 500 }, { subnet: '10.128.0.0/9' });
    const batch: Buffer[] = [];
    let seed = 1;
    for (let k = 0; k < 60_000; k++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      batch.push(
        arpFrame(ip('10.128.0.0') + (seed & 0x7fffff), 0x020000000000 + (seed & 0xffffff)),
      );
      if (batch.length === 64) receive(socket, batch.splice(0));
    }
    expect(backend.neighbors.learnedCount).toBe(500);
    // Besides them, only what was configured: our VTEP address and the node's (IPv4 and IPv6).
    expect(backend.neighbors.size).toBe(503);
    const c = backend.counters();
    expect(c.neighborsOverflow).toBeGreaterThan(50_000);
    expect(backend.fdb.learnedCount).toBeLessThanOrEqual(4096);
    expect(c.fdbOverflow).toBeGreaterThan(50_000);
  });

  it('refuses bad neighbor limits and VLAN policies with a WeftError', () => {
    const { io } = standInBackendIo();
    for (const bad of [
      { maxLearnedNeighbors: 0 },
      { neighborAgeingMs: -1 },
      { innerVlan: 'strip' },
    ]) {
      expect(() =>
        VxlanBackend.overIo(io, { vtepAddress: '10.244.1.0', ...(bad as VxlanBackendOptions) }),
      ).toThrow(expect.objectContaining({ code: 'ERR_DATAPLANE_BAD_OPTION' }));
    }
  });
});

describe('counting', () => {
  it('a GRO batch from an unknown source counts every datagram in it', () => {
    for (const make of [() => udpNode({ offload: true }), () => vxlanNode({ offload: true })]) {
      const { backend, socket } = make();
      // 32 datagrams of 313 bytes, coalesced by the kernel into one 10,016-byte read.
      receive(socket, [Buffer.alloc(32 * 313, 1)], STRANGER, 313);
      receive(socket, [Buffer.alloc(31 * 313 + 100, 1)], STRANGER, 313);
      expect(drops(backend)).toEqual({ unknownSource: 64 });
      backend.close();
    }
  });

  it('the same fault gets the same reason in both backends', () => {
    const good = udp4('10.244.2.5', 'x'.repeat(40));
    const faults: Record<string, Buffer> = {
      cut: (() => {
        const p = Buffer.from(good);
        p.writeUInt16BE(1400, 2); // a total length beyond the datagram
        ipv4FillChecksum(p, 0);
        return p;
      })(),
      shortHeader: good.subarray(0, 19),
      badIhl: (() => {
        const p = Buffer.from(good);
        p[0] = 0x43;
        return p;
      })(),
      badChecksum: (() => {
        const p = Buffer.from(good);
        p[10] ^= 0xff;
        return p;
      })(),
      lengthBelowHeader: (() => {
        const p = Buffer.from(good);
        p.writeUInt16BE(12, 2);
        ipv4FillChecksum(p, 0);
        return p;
      })(),
    };
    for (const [name, packet] of Object.entries(faults)) {
      const u = udpNode();
      receive(u.socket, [packet]);
      const v = vxlanNode();
      receive(v.socket, [vxlanFrame(packet, EtherType.ipv4)]);
      expect(drops(u.backend), name).toEqual(drops(v.backend));
      expect(Object.values(drops(u.backend)), name).toEqual([1]);
    }
    // And what each reason is.
    const reasons = Object.fromEntries(
      Object.entries(faults).map(([name, packet]) => {
        const u = udpNode();
        receive(u.socket, [packet]);
        return [name, Object.keys(drops(u.backend))[0]];
      }),
    );
    expect(reasons).toEqual({
      cut: 'truncated',
      shortHeader: 'truncated',
      badIhl: 'badHeader',
      badChecksum: 'badChecksum',
      lengthBelowHeader: 'badHeader',
    });
  });

  it('offloads: a segment with a bad TCP checksum is counted as a drop, not as received', () => {
    for (const make of [() => udpNode({ offload: true }), () => vxlanNode({ offload: true })]) {
      const { backend, queue, socket } = make();
      const seg = Buffer.alloc(40 + 100);
      writeTcp4(seg, 0, 100, { src: ip('10.244.2.5'), dst: ip('10.244.1.7') });
      seg[100] ^= 0xff;
      const wrapped = backend.type === 'udp' ? seg : vxlanFrame(seg, EtherType.ipv4);
      receive(socket, [wrapped]);
      const c = backend.counters();
      expect(c.rxPackets).toBe(0);
      expect(drops(backend)).toEqual({ badChecksum: 1 });
      expect(queue.sent).toBe(0);
      backend.close();
    }
  });
});
