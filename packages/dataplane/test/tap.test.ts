import { parseIpv4, parseMac, WeftError } from '@weft/core';
import {
  EtherType,
  fold,
  ipv4Check,
  Status,
  TcpField,
  tcpChecksumOk4,
  tcpPseudoSum4,
  VIRTIO_NET_HDR_BYTES,
  VirtioFlag,
  VirtioGso,
  virtioRead16,
  vxlanVni,
  write16,
  writeEthernetHeader,
  writeVirtioNetHdr,
} from '@weft/encap';
import { SendFlag, TunDevice, UdpSocket } from '@weft/tun';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  type CounterSnapshot,
  type RemoteNode,
  VxlanBackend,
  type VxlanBackendOptions,
} from '../src/index.js';
import { UdpSlab } from '../src/pump.js';
import {
  putGroDatagrams,
  putSuperFrame,
  type StandInIo,
  setSource,
  standInBackendIo,
  writeTcp4,
} from '../src/testing.js';

/*
 * TAP mode (VxlanBridge) over stand-in I/O: offloads each way, head-end replication of a cut
 * frame, and the inner source check as it means on an L2 segment.
 */

const VTEP_MAC = '02:00:00:00:0a:01';
const POD_LOCAL = parseMac('02:00:00:aa:01:05');
const POD_REMOTE = parseMac('02:00:00:aa:02:05');
const B = '198.18.0.2';
const C = '198.18.0.3';
const D = '198.18.0.4';
const MAC_C = '02:00:00:00:0c:01';

function bridge(extra: VxlanBackendOptions = {}, nodes: RemoteNode[] = [{ publicIp: B }]) {
  const { queue, socket, io } = standInBackendIo({ port: 4789 });
  const backend = VxlanBackend.overIo(io, {
    mode: 'tap',
    vni: 100,
    port: 4789,
    vtepMac: VTEP_MAC,
    ...extra,
  });
  backend.setNodes(nodes);
  return { backend, queue, socket };
}

function drops(c: CounterSnapshot): Record<string, number> {
  return Object.fromEntries(Object.entries(c.drops).filter(([, v]) => v !== 0));
}

/**
 * The UDP sends the last outbound batch made: the slab of its first piece, its length, GSO size
 * and destination, its bytes, and its pieces (descriptors gathered into one send) as [slab,
 * offset, length].
 */
function sends(socket: StandInIo) {
  const t = socket.table;
  const out: {
    slab: number;
    length: number;
    gso: number;
    dst: number;
    bytes: Buffer;
    pieces: number[][];
  }[] = [];
  for (let i = socket.lastSendStart; i < socket.lastSendStart + socket.lastSendCount; i++) {
    const piece = [t.slabs[i], t.offsets[i], t.lengths[i]];
    const last = out.at(-1);
    if (t.flags[i] & SendFlag.continues && last) {
      last.pieces.push(piece);
      last.length += t.lengths[i];
      last.bytes = Buffer.concat([last.bytes, socket.sentBytes(i)]);
      continue;
    }
    out.push({
      slab: t.slabs[i],
      length: t.lengths[i],
      gso: t.gso[i],
      dst: t.addrs[i * 4],
      bytes: Buffer.from(socket.sentBytes(i)),
      pieces: [piece],
    });
  }
  return out;
}

describe('TAP mode with offloads, outbound', () => {
  it('a TSO frame to a known MAC: cut once, sent as UDP GSO datagrams each carrying the Ethernet header', () => {
    const { backend, queue, socket } = bridge({ offload: true }, [
      { publicIp: B, vtepMac: '02:00:00:00:0b:01' },
    ]);
    const segments = 45;
    const mss = 1398;
    putSuperFrame(queue.ring, 0, segments, mss, parseMac('02:00:00:00:0b:01'), POD_LOCAL, {
      src: parseIpv4('10.99.0.5'),
      dst: parseIpv4('10.99.0.6'),
      seq: 7000,
    });
    queue.onBatch(1);
    const out = sends(socket);
    const segmentBytes = 8 + 14 + 40 + mss;
    const perSend = Math.floor(65_000 / segmentBytes);
    expect(out.map((s) => [s.slab, s.gso, s.dst])).toEqual([
      [UdpSlab.staging, segmentBytes, parseIpv4(B)],
      // The last segment alone: a plain datagram.
      [UdpSlab.staging, 0, parseIpv4(B)],
    ]);
    expect(out[0].length).toBe(perSend * segmentBytes);
    expect(out[1].length).toBe((segments - perSend) * segmentBytes);
    const all = Buffer.concat(out.map((s) => s.bytes));
    for (let k = 0; k < segments; k++) {
      const d = all.subarray(k * segmentBytes, (k + 1) * segmentBytes);
      expect(vxlanVni(d, 0)).toBe(100);
      expect(d.readUIntBE(8, 6)).toBe(parseMac('02:00:00:00:0b:01'));
      expect(d.readUIntBE(14, 6)).toBe(POD_LOCAL);
      expect(d.readUInt16BE(20)).toBe(EtherType.ipv4);
      expect(ipv4Check(d, 22, d.length - 22)).toBe(Status.ok);
      expect(tcpChecksumOk4(d, 22, 42, d.length - 42)).toBe(true);
      expect(d.readUInt32BE(42 + TcpField.seq)).toBe(7000 + k * mss);
    }
    const c = backend.counters();
    expect(c.txPackets).toBe(segments);
    expect(c.txBytes).toBe(segments * (14 + 40 + mss));
    expect(drops(c)).toEqual({});
    backend.close();
  });

  it('a TSO frame of small segments goes in sends of at most 64 segments (UDP_MAX_SEGMENTS on older kernels)', () => {
    const { backend, queue, socket } = bridge({ offload: true });
    putSuperFrame(queue.ring, 0, 300, 200, POD_REMOTE, POD_LOCAL, { src: 1, dst: 2 });
    queue.onBatch(1);
    const out = sends(socket);
    const segmentBytes = 8 + 14 + 40 + 200;
    expect(out.map((s) => s.length / segmentBytes)).toEqual([64, 64, 64, 64, 44]);
    expect(out.every((s) => s.gso === segmentBytes)).toBe(true);
    expect(backend.counters().txPackets).toBe(300);
    backend.close();
  });

  it('a flooding TSO frame is cut once and each segment replicated: every destination gets sends gathered from the same pieces', () => {
    const nodes = [{ publicIp: B }, { publicIp: C }, { publicIp: D }];
    for (const dst of [0xffffffffffff, POD_REMOTE]) {
      const { backend, queue, socket } = bridge({ offload: true }, nodes);
      putSuperFrame(queue.ring, 0, 45, 1398, dst, POD_LOCAL, {
        src: parseIpv4('10.99.0.5'),
        dst: parseIpv4('10.99.0.6'),
      });
      queue.onBatch(1);
      const out = sends(socket);
      expect(out.length).toBe(6);
      expect(out.map((s) => s.dst)).toEqual([B, B, C, C, D, D].map((a) => parseIpv4(a) >>> 0));
      // Zero-copy: every destination's sends are gathered from the same pieces, headers in
      // staging, payloads where the TAP read put them.
      for (const s of out) expect(s.slab).toBe(UdpSlab.staging);
      expect(out.map((s) => [s.pieces, s.length, s.gso])).toEqual([
        ...[0, 1, 2].flatMap(() => [
          [out[0].pieces, out[0].length, out[0].gso],
          [out[1].pieces, out[1].length, out[1].gso],
        ]),
      ]);
      expect(out[0].pieces.length + out[1].pieces.length).toBe(2 * 45);
      expect(
        out[0].pieces.map(([slab]) => slab).filter((slab) => slab === UdpSlab.deviceRing).length,
      ).toBe(out[0].pieces.length / 2);
      // Counted once per segment, not once per copy.
      expect(backend.counters().txPackets).toBe(45);
      backend.close();
    }
  });

  it('a frame with a partial checksum (NEEDS_CSUM) goes out finished; a GSO type it cannot honour is counted', () => {
    const { backend, queue, socket } = bridge({ offload: true });
    const ring = queue.ring;
    const at = ring.slotOffset(0);
    writeEthernetHeader(
      ring.slab,
      at + VIRTIO_NET_HDR_BYTES,
      POD_REMOTE,
      POD_LOCAL,
      EtherType.ipv4,
    );
    const ip = at + VIRTIO_NET_HDR_BYTES + 14;
    const len = writeTcp4(ring.slab, ip, 300, { src: 1, dst: 2 }, false);
    // The pseudo-header sum where the checksum goes, as the kernel leaves it.
    write16(ring.slab, ip + 20 + TcpField.checksum, fold(tcpPseudoSum4(ring.slab, ip, len - 20)));
    const whole = Buffer.alloc(len);
    writeTcp4(whole, 0, 300, { src: 1, dst: 2 });
    writeVirtioNetHdr(
      ring.slab,
      at,
      VirtioFlag.needsCsum,
      VirtioGso.none,
      0,
      0,
      34,
      TcpField.checksum,
    );
    ring.lengths[0] = VIRTIO_NET_HDR_BYTES + 14 + len;
    // Slot 1: a UDP GSO frame, which weft never asked the TAP for.
    ring.slab.copy(ring.slab, ring.slotOffset(1), at, at + ring.lengths[0]);
    ring.slab[ring.slotOffset(1) + 1] = VirtioGso.udpL4;
    ring.lengths[1] = ring.lengths[0];
    queue.onBatch(2);
    const out = sends(socket);
    expect(out.length).toBe(1);
    expect(out[0].gso).toBe(0);
    expect(out[0].bytes.subarray(8 + 14).equals(whole)).toBe(true);
    expect(drops(backend.counters())).toEqual({ badHeader: 1 });
    backend.close();
  });
});

describe('TAP mode with offloads, inbound', () => {
  it('a GRO batch of one flow becomes one GSO frame for the TAP, and its source MAC is learned', () => {
    const { backend, queue, socket } = bridge({ offload: true });
    const ring = socket.ring;
    putGroDatagrams(
      ring,
      0,
      16,
      1000,
      { kind: 'vxlan', vni: 100, dstMac: POD_LOCAL, srcMac: POD_REMOTE },
      { src: parseIpv4('10.99.0.6'), dst: parseIpv4('10.99.0.5'), seq: 1 },
    );
    setSource(ring, 0, parseIpv4(B), 4789);
    socket.onBatch(1);
    const written = queue.sentPackets();
    expect(written.length).toBe(1);
    const w = written[0];
    expect(w[1]).toBe(VirtioGso.tcpv4);
    expect(virtioRead16(w, 4)).toBe(1000);
    expect(virtioRead16(w, 6)).toBe(34);
    expect(w.length).toBe(VIRTIO_NET_HDR_BYTES + 14 + 40 + 16 * 1000);
    expect(w.readUIntBE(VIRTIO_NET_HDR_BYTES, 6)).toBe(POD_LOCAL);
    expect(w.readUIntBE(VIRTIO_NET_HDR_BYTES + 6, 6)).toBe(POD_REMOTE);
    const c = backend.counters();
    expect(c.rxPackets).toBe(16);
    expect(drops(c)).toEqual({});
    expect(backend.dumpTables().fdb).toContainEqual(
      expect.objectContaining({ mac: '02:00:00:aa:02:05', dst: B, static: false }),
    );
    backend.close();
  });
});

describe('TAP mode under hostile datagrams', () => {
  it('random and mutated datagrams, offloads on and off: each one received or dropped by reason; good traffic after them is delivered', () => {
    for (const offload of [false, true]) {
      const { backend, queue, socket } = bridge({ offload });
      const ring = socket.ring;
      fc.assert(
        fc.property(
          fc.array(
            fc.oneof(
              fc.uint8Array({ minLength: 0, maxLength: 200 }),
              // A real segment with some bytes changed (VXLAN, Ethernet, IP and TCP headers alike).
              fc
                .array(
                  fc.tuple(fc.integer({ min: 0, max: 161 }), fc.integer({ min: 0, max: 255 })),
                  {
                    maxLength: 4,
                  },
                )
                .map((edits) => {
                  const d = Buffer.alloc(162);
                  putGroDatagrams(
                    ring,
                    0,
                    1,
                    100,
                    { kind: 'vxlan', vni: 100, dstMac: POD_LOCAL, srcMac: POD_REMOTE },
                    { src: 1, dst: 2 },
                  );
                  ring.slab.copy(d, 0, ring.slotOffset(0), ring.slotOffset(0) + 162);
                  for (const [at, v] of edits) d[at] = v;
                  return new Uint8Array(d);
                }),
            ),
            { minLength: 1, maxLength: 20 },
          ),
          fc.boolean(),
          (datagrams, gro) => {
            const before = backend.counters();
            // With GRO, all of them in one slot when they share a size; otherwise one slot each.
            const same = datagrams.every((d) => d.length === datagrams[0].length && d.length > 0);
            const slots =
              gro && same ? [Buffer.concat(datagrams)] : datagrams.map((d) => Buffer.from(d));
            slots.forEach((d, i) => {
              d.copy(ring.slab, ring.slotOffset(i));
              ring.lengths[i] = d.length;
              setSource(ring, i, parseIpv4(B), 4789);
              ring.gso[i] = gro && same ? datagrams[0].length : 0;
            });
            socket.onBatch(slots.length);
            const after = backend.counters();
            const total = (c: CounterSnapshot) =>
              c.rxPackets + Object.values(c.drops).reduce((a, b) => a + b, 0);
            expect(total(after) - total(before)).toBe(datagrams.length);
          },
        ),
        { numRuns: 300 },
      );
      // And the next good datagram goes through.
      putGroDatagrams(
        ring,
        0,
        1,
        100,
        { kind: 'vxlan', vni: 100, dstMac: POD_LOCAL, srcMac: POD_REMOTE },
        { src: 1, dst: 2 },
      );
      ring.gso[0] = 0;
      setSource(ring, 0, parseIpv4(B), 4789);
      socket.onBatch(1);
      const written = queue.sentPackets();
      expect(written.length).toBe(1);
      expect(written[0].readUIntBE(offload ? VIRTIO_NET_HDR_BYTES : 0, 6)).toBe(POD_LOCAL);
      backend.close();
    }
  });
});

describe('the inner source check on an L2 segment: by source MAC', () => {
  /** One datagram from `from` carrying a frame from `srcMac` to a pod here. */
  function receiveFrom(socket: StandInIo, from: string, srcMac: number, offload: boolean): void {
    const ring = socket.ring;
    putGroDatagrams(
      ring,
      0,
      1,
      100,
      { kind: 'vxlan', vni: 100, dstMac: POD_LOCAL, srcMac },
      { src: parseIpv4('10.99.0.6'), dst: parseIpv4('10.99.0.5') },
    );
    if (!offload) ring.gso[0] = 0;
    setSource(ring, 0, parseIpv4(from), 4789);
    socket.onBatch(1);
  }

  for (const offload of [false, true]) {
    it(`offloads ${offload ? 'on' : 'off'}: a group source, our own VTEP MAC or a MAC static at another node is spoofedInner; a learned MAC moves`, () => {
      const nodes = [{ publicIp: B }, { publicIp: C, vtepMac: MAC_C }];
      const { backend, queue, socket } = bridge({ offload }, nodes);
      for (const [mac, why] of [
        [0x010203040506, 'group'],
        [parseMac(VTEP_MAC), 'ours'],
        [parseMac(MAC_C), "node C's, from B"],
      ] as const) {
        receiveFrom(socket, B, mac, offload);
        expect(queue.packetsSent, why).toBe(0);
      }
      expect(drops(backend.counters())).toEqual({ spoofedInner: 3 });
      // From C itself, its MAC is fine; a pod MAC learned at B moves to C with its frames.
      receiveFrom(socket, C, parseMac(MAC_C), offload);
      receiveFrom(socket, B, POD_REMOTE, offload);
      receiveFrom(socket, C, POD_REMOTE, offload);
      expect(queue.packetsSent).toBe(3);
      expect(backend.dumpTables().fdb).toContainEqual(
        expect.objectContaining({ mac: '02:00:00:aa:02:05', dst: C, static: false }),
      );
      expect(backend.dumpTables().fdb).not.toContainEqual(
        expect.objectContaining({ mac: MAC_C, static: false }),
      );
      backend.close();
      // checkInnerSource false: carried as the kernel's VXLAN without learning would, never learned.
      const open = bridge({ offload, checkInnerSource: false }, nodes);
      receiveFrom(open.socket, B, parseMac(MAC_C), offload);
      receiveFrom(open.socket, B, 0x010203040506, offload);
      expect(open.queue.packetsSent).toBe(2);
      expect(drops(open.backend.counters())).toEqual({});
      expect(open.backend.dumpTables().fdb.filter((e) => !e.static)).toEqual([]);
      open.backend.close();
    });
  }
});

describe('opening TAP mode', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** A TunDevice stand-in whose setOffload fails as `refuse` says. */
  function fakeDevices(refuse: Error | undefined) {
    const opened: { vnetHdr: boolean; closed: boolean }[] = [];
    vi.spyOn(TunDevice, 'open').mockImplementation((o = {}) => {
      const record = { vnetHdr: o.vnetHdr === true, closed: false };
      opened.push(record);
      const { queue } = standInBackendIo();
      return {
        name: 'tap0',
        mtu: 1450,
        queues: [queue],
        setOffload() {
          if (refuse) throw refuse;
        },
        setMtu() {},
        setMac() {},
        addAddress() {},
        up() {},
        close() {
          record.closed = true;
        },
      } as unknown as TunDevice;
    });
    vi.spyOn(UdpSocket, 'open').mockImplementation(
      () => standInBackendIo({ port: 4789 }).socket as unknown as UdpSocket,
    );
    return opened;
  }

  it('asks for vnet_hdr and TSO on the TAP; where the kernel refuses the offload, opens again without', () => {
    const opened = fakeDevices(undefined);
    const on = VxlanBackend.open({ mode: 'tap', vni: 100, port: 4789 });
    expect(on.offload).toBe(true);
    expect(opened).toEqual([{ vnetHdr: true, closed: false }]);
    on.close();

    vi.restoreAllMocks();
    const refused = fakeDevices(
      new WeftError(
        'ERR_TUN_SYSCALL',
        'setting offloads on tap0: ioctl(TUNSETOFFLOAD) failed: EINVAL',
      ),
    );
    const off = VxlanBackend.open({ mode: 'tap', vni: 100, port: 4789 });
    expect(off.offload).toBe(false);
    expect(off.deviceHeaderBytes).toBe(0);
    expect(refused).toEqual([
      { vnetHdr: true, closed: true },
      { vnetHdr: false, closed: false },
    ]);
    off.close();

    // Any other failure is the caller's to see, not a reason to go on without offloads.
    vi.restoreAllMocks();
    const other = fakeDevices(new WeftError('ERR_TUN_PERMISSION', 'operation not permitted'));
    expect(() => VxlanBackend.open({ mode: 'tap' })).toThrow(/not permitted/);
    expect(other).toEqual([{ vnetHdr: true, closed: true }]);
  });

  it('offload: false opens the TAP without vnet_hdr', () => {
    const opened = fakeDevices(undefined);
    const b = VxlanBackend.open({ mode: 'tap', offload: false });
    expect(b.offload).toBe(false);
    expect(opened).toEqual([{ vnetHdr: false, closed: false }]);
    b.close();
  });
});
