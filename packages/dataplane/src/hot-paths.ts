import { parseIpv4, parseIpv6, parseMac } from '@weft/core';
import { EtherType, VIRTIO_NET_HDR_BYTES, writeEthernetHeader } from '@weft/encap';
import type { PacketRing } from '@weft/tun';
import type { Backend } from './backend.js';
import { type StandInIo, standInBackendIo } from './stand-in-io.js';
import {
  putDatagram,
  putDatagram6,
  putGroDatagrams,
  putGroDatagrams6,
  putPacket,
  putSuperFrame,
  putSuperPacket,
  putSuperPacket6,
  putUdpGroDatagrams6,
  resetTtl,
  setSource,
  setSource6,
  type Wrap,
  wrapBytes,
  writeTcp4,
  writeUdp6,
} from './traffic.js';
import { UdpBackend } from './udp-backend.js';
import { VxlanBackend } from './vxlan-backend.js';

/*
 * Every hot path a backend has, over stand-in I/O (no system calls), ready to drive: for the
 * allocation test and for benchmarks. Underlay and overlay addresses on both sides of 128.0.0.0,
 * where a number stops being a small integer in V8 and boxing begins.
 */
const BATCH = 64;

const PLANS = {
  'below 128.0.0.0': {
    network: '10.244.0.0/16',
    local: { subnet: '10.244.1.0/24', vtep: '10.244.1.0', underlay: '10.1.0.1' },
    remote: { subnet: '10.244.2.0/24', vtep: '10.244.2.0', underlay: '10.1.0.2' },
  },
  'above 128.0.0.0': {
    network: '192.168.0.0/16',
    local: { subnet: '192.168.1.0/24', vtep: '192.168.1.0', underlay: '198.18.0.1' },
    remote: { subnet: '192.168.2.0/24', vtep: '192.168.2.0', underlay: '198.18.0.2' },
  },
} as const;
type Plan = (typeof PLANS)[keyof typeof PLANS];

const MAC_LOCAL = '02:00:00:00:01:01';
const MAC_REMOTE = '02:00:00:00:02:01';
/** Offloads: super-packets of 16 small segments, so a million segments take little memory time. */
const SEGMENTS = 16;
const MSS = 100;

export interface HotPath {
  /** Packets (segments) one step moves. */
  perStep: number;
  step(): void;
  backend: Backend;
  /** What the counters must show moved, per step. */
  counter: 'txPackets' | 'rxPackets';
}

function addr(plan: Plan, side: 'local' | 'remote', host: number): number {
  return parseIpv4(plan[side].vtep) + host;
}

function outbound(
  backend: Backend,
  queue: StandInIo,
  plan: Plan,
  offload: boolean,
  ttlReset: boolean,
): HotPath {
  const ring = queue.ring;
  const h = offload ? VIRTIO_NET_HDR_BYTES : 0;
  const o = (i: number) => ({
    src: addr(plan, 'local', 5),
    dst: addr(plan, 'remote', 1 + (i % 200)),
  });
  for (let i = 0; i < BATCH; i++) {
    if (offload) putSuperPacket(ring, i, SEGMENTS, MSS, o(i));
    else putPacket(ring, i, 0, 200, o(i));
  }
  const perStep = offload ? BATCH * SEGMENTS : BATCH;
  return {
    backend,
    perStep,
    counter: 'txPackets',
    step: () => {
      if (ttlReset && !offload)
        for (let i = 0; i < BATCH; i++) resetTtl(ring.slab, ring.slotOffset(i) + h);
      queue.onBatch(BATCH);
    },
  };
}

function inbound(
  backend: Backend,
  socket: StandInIo,
  plan: Plan,
  offload: boolean,
  w: Wrap,
  ttlReset: boolean,
): HotPath {
  const ring = socket.ring;
  const from = parseIpv4(plan.remote.underlay);
  const o = (i: number) => ({
    src: addr(plan, 'remote', 5 + i),
    dst: addr(plan, 'local', 7),
    seq: 1000,
  });
  for (let i = 0; i < BATCH; i++) {
    if (offload) putGroDatagrams(ring, i, SEGMENTS, MSS, w, o(i));
    else putDatagram(ring, i, 200, w, o(i));
    setSource(ring, i, from, socket.port);
  }
  const pre = wrapBytes(w);
  const size = pre + 40 + MSS;
  return {
    backend,
    perStep: offload ? BATCH * SEGMENTS : BATCH,
    counter: 'rxPackets',
    step: () => {
      if (ttlReset) {
        for (let i = 0; i < BATCH; i++) {
          const at = ring.slotOffset(i) + pre;
          if (!offload) resetTtl(ring.slab, at);
          else for (let k = 0; k < SEGMENTS; k++) resetTtl(ring.slab, at + k * size);
        }
      }
      socket.onBatch(BATCH);
    },
  };
}

function udpPaths(plan: Plan, offload: boolean): Record<string, () => HotPath> {
  const make = () => {
    const { queue, socket, io } = standInBackendIo({ mtu: 1472, port: 8285 });
    const backend = UdpBackend.overIo(io, {
      network: plan.network,
      nodeAddress: plan.local.vtep,
      offload,
    });
    backend.setNodes([{ subnet: plan.remote.subnet, publicIp: plan.remote.underlay }]);
    return { backend, queue, socket };
  };
  return {
    outbound: () => {
      const { backend, queue } = make();
      return outbound(backend, queue, plan, offload, true);
    },
    inbound: () => {
      const { backend, socket } = make();
      return inbound(backend, socket, plan, offload, { kind: 'flannel' }, true);
    },
  };
}

function vxlanPaths(plan: Plan, offload: boolean): Record<string, () => HotPath> {
  const make = () => {
    const { queue, socket, io } = standInBackendIo({ port: 8472 });
    const backend = VxlanBackend.overIo(io, {
      vtepAddress: plan.local.vtep,
      vtepMac: MAC_LOCAL,
      network: plan.network,
      offload,
    });
    backend.setNodes([
      { subnet: plan.remote.subnet, publicIp: plan.remote.underlay, vtepMac: MAC_REMOTE },
    ]);
    return { backend, queue, socket };
  };
  const w: Wrap = {
    kind: 'vxlan',
    vni: 1,
    dstMac: parseMac(MAC_LOCAL),
    srcMac: parseMac(MAC_REMOTE),
  };
  return {
    outbound: () => {
      const { backend, queue } = make();
      return outbound(backend, queue, plan, offload, false);
    },
    inbound: () => {
      const { backend, socket } = make();
      return inbound(backend, socket, plan, offload, w, false);
    },
  };
}

/**
 * TAP mode: Ethernet frames to and from a remote pod MAC the FDB knows (outbound) or learns
 * (inbound), and floods (broadcast frames replicated to three nodes).
 */
function tapPaths(plan: Plan, offload: boolean): Record<string, () => HotPath> {
  const podLocal = parseMac('02:00:00:aa:01:05');
  const podRemote = parseMac('02:00:00:aa:02:05');
  const others = ['10.1.0.3', '10.1.0.4'];
  const make = (flood: boolean) => {
    const { queue, socket, io } = standInBackendIo({ port: 4789 });
    const backend = VxlanBackend.overIo(io, {
      mode: 'tap',
      vni: 42,
      port: 4789,
      vtepMac: MAC_LOCAL,
      offload,
    });
    backend.setNodes([
      { publicIp: plan.remote.underlay, vtepMac: MAC_REMOTE },
      ...(flood ? others.map((publicIp) => ({ publicIp })) : []),
    ]);
    return { backend, queue, socket };
  };
  const outbound = (flood: boolean) => {
    const { backend, queue } = make(flood);
    const ring = queue.ring;
    const dst = flood ? 0xffffffffffff : parseMac(MAC_REMOTE);
    for (let i = 0; i < BATCH; i++) {
      const o = { src: addr(plan, 'local', 5), dst: addr(plan, 'remote', 5) };
      if (offload) {
        putSuperFrame(ring, i, SEGMENTS, MSS, dst, podLocal, o);
        continue;
      }
      const at = ring.slotOffset(i);
      writeEthernetHeader(ring.slab, at, dst, podLocal, EtherType.ipv4);
      ring.lengths[i] = 14 + writeTcp4(ring.slab, at + 14, 160, o);
    }
    const perStep = offload ? BATCH * SEGMENTS : BATCH;
    return { backend, perStep, counter: 'txPackets' as const, step: () => queue.onBatch(BATCH) };
  };
  return {
    outbound: () => outbound(false),
    'flood outbound': () => outbound(true),
    inbound: () => {
      const { backend, socket } = make(false);
      const ring = socket.ring;
      const from = parseIpv4(plan.remote.underlay);
      const w: Wrap = { kind: 'vxlan', vni: 42, dstMac: podLocal, srcMac: podRemote };
      for (let i = 0; i < BATCH; i++) {
        const o = { src: addr(plan, 'remote', 5 + i), dst: addr(plan, 'local', 5), seq: 1000 };
        if (offload) putGroDatagrams(ring, i, SEGMENTS, MSS, w, o);
        else putDatagram(ring, i, 200, w, o);
        setSource(ring, i, from, 4789);
      }
      const perStep = offload ? BATCH * SEGMENTS : BATCH;
      return { backend, perStep, counter: 'rxPackets', step: () => socket.onBatch(BATCH) };
    },
  };
}

/**
 * An IPv6 VTEP (flannel-v6.<VNI>): IPv6 packets over an IPv6 underlay. With offloads the TUN
 * hands over plain packets behind a virtio header and TSO6 super-packets (`outbound TSO6`), and
 * UDP GRO datagrams are passed through one by one.
 */
function vxlan6Paths(offload: boolean): Record<string, () => HotPath> {
  const local = parseIpv6('fd00:10:244:1::5');
  const make = (coalesceUdp = false) => {
    const { queue, socket, io } = standInBackendIo({ port: 8472, family: 6 });
    const backend = VxlanBackend.overIo(io, {
      vtepAddress6: 'fd00:10:244:1::',
      network6: 'fd00:10:244::/48',
      vtepMac: MAC_LOCAL,
      offload,
      coalesceUdp,
    });
    backend.setNodes([{ subnet6: 'fd00:10:244:2::/64', publicIp: 'fd00::2', vtepMac: MAC_REMOTE }]);
    return { backend, queue, socket };
  };
  const remote = (i: number) => parseIpv6(`fd00:10:244:2::${(1 + (i % 200)).toString(16)}`);
  // What the peer sends: VXLAN from fd00::2, its inner frames to our VTEP MAC.
  const w: Wrap = {
    kind: 'vxlan',
    vni: 1,
    dstMac: parseMac(MAC_LOCAL),
    srcMac: parseMac(MAC_REMOTE),
    ipv6: true,
  };
  const from = parseIpv6('fd00::2');
  /** Each slot of the socket's ring a UDP GRO batch from fd00::2, as `put` fills it. */
  const groPath = (
    { backend, socket }: ReturnType<typeof make>,
    put: (ring: PacketRing, i: number) => void,
  ): HotPath => {
    for (let i = 0; i < BATCH; i++) {
      put(socket.ring, i);
      setSource6(socket.ring, i, from, 8472);
    }
    return {
      backend,
      perStep: BATCH * SEGMENTS,
      counter: 'rxPackets',
      step: () => socket.onBatch(BATCH),
    };
  };
  return {
    outbound: () => {
      const { backend, queue } = make();
      const ring = queue.ring;
      const h = offload ? VIRTIO_NET_HDR_BYTES : 0;
      for (let i = 0; i < BATCH; i++) {
        const at = ring.slotOffset(i);
        ring.lengths[i] = h + writeUdp6(ring.slab, at + h, 160, local, remote(i));
      }
      return {
        backend,
        perStep: BATCH,
        counter: 'txPackets',
        step: () => {
          // The encapsulation is written in place over the headroom the virtio header sits in:
          // an empty header again each batch, as each read from the TUN brings one.
          if (offload)
            for (let i = 0; i < BATCH; i++)
              ring.slab.fill(0, ring.slotOffset(i), ring.slotOffset(i) + h);
          queue.onBatch(BATCH);
        },
      };
    },
    ...(offload
      ? {
          'outbound TSO6': () => {
            const { backend, queue } = make();
            for (let i = 0; i < BATCH; i++)
              putSuperPacket6(queue.ring, i, SEGMENTS, MSS, local, remote(i));
            return {
              backend,
              perStep: BATCH * SEGMENTS,
              counter: 'txPackets' as const,
              step: () => queue.onBatch(BATCH),
            };
          },
        }
      : {}),
    inbound: () => {
      const { backend, socket } = make();
      const ring = socket.ring;
      for (let i = 0; i < BATCH; i++) {
        putDatagram6(ring, i, 160, w, remote(i), local);
        setSource6(ring, i, from, 8472);
      }
      return { backend, perStep: BATCH, counter: 'rxPackets', step: () => socket.onBatch(BATCH) };
    },
    ...(offload
      ? {
          // UDP GRO batches of one IPv6 UDP flow, coalesced into USO writes (the kernel takes them).
          'inbound USO': () =>
            groPath(make(true), (ring, i) =>
              putUdpGroDatagrams6(ring, i, SEGMENTS, MSS, w, remote(0), local),
            ),
          // UDP GRO batches of IPv6 TCP segments, coalesced into TSO6 writes to the TUN.
          'inbound GRO': () =>
            groPath(make(), (ring, i) =>
              putGroDatagrams6(ring, i, SEGMENTS, MSS, w, remote(i), local),
            ),
        }
      : {}),
  };
}

export interface NamedHotPath {
  name: string;
  make: () => HotPath;
}

/**
 * Each path with its rings filled so that one `step()` (one batch) moves `perStep` packets: both
 * backends (and the vxlan TAP bridge), both directions, offloads on and off, addresses below and
 * above 128.0.0.0. `make()` opens a backend over stand-in I/O; close it when done.
 */
export function hotPaths(): NamedHotPath[] {
  const out: NamedHotPath[] = [];
  for (const [planName, plan] of Object.entries(PLANS))
    for (const offload of [false, true])
      for (const [backendName, paths] of [
        ['udp', udpPaths(plan, offload)],
        ['vxlan', vxlanPaths(plan, offload)],
        ['vxlan tap', tapPaths(plan, offload)],
      ] as const)
        for (const [direction, make] of Object.entries(paths))
          out.push({
            name: `${backendName} ${direction}, offloads ${offload ? 'on' : 'off'}, addresses ${planName}`,
            make,
          });
  for (const offload of [false, true])
    for (const [direction, make] of Object.entries(vxlan6Paths(offload)))
      out.push({
        name: `vxlan IPv6 over IPv6 ${direction}, offloads ${offload ? 'on' : 'off'}`,
        make,
      });
  return out;
}
