import { formatIp, WeftError } from '@weft/core';
import {
  VirtioField,
  VirtioFlag,
  VirtioGso,
  virtioRead16,
  writeIcmpv4Error,
  writeVirtioNetHdr,
} from '@weft/encap';
import type { FdbDump, NeighborDump, RouteDump } from '@weft/fdb';
import { TunDevice, TunOffload, UdpSocket } from '@weft/tun';
import { Counter, type CounterSnapshot } from './counters.js';
import { DataplaneErrorCode, type ParsedNode, parseNode, type RemoteNode } from './nodes.js';
import {
  CoalesceResult,
  finishPartialChecksum,
  GatherCoalescer,
  TcpCoalescer,
  TcpSegmenter,
  UDP_GSO_MAX_BYTES,
  UDP_GSO_MAX_SEGMENTS,
} from './offload.js';
import {
  DeviceSlab,
  GRO_SEGMENTS_PER_SLOT,
  type PacketIo,
  Pump,
  type PumpOptions,
  SCRATCH_STRIDE,
  SEGMENTS_PER_SLOT,
  type UdpIo,
  UdpSlab,
} from './pump.js';
import { SourceIndex, type SourceNode } from './sources.js';
import { type SocketSpec, SplitUdpIo, WorkerPool, type WorkerSpec } from './workers.js';

/** The device side of a backend: @weft/tun's TunDevice, or a stand-in with the same shape. */
export interface DeviceIo {
  /** The device's name (e.g. weft0). */
  readonly name: string;
  /** The device's MTU in bytes. */
  readonly mtu: number;
  /** Its queues; a backend pumps the first. */
  readonly queues: readonly PacketIo[];
  /** Closes every queue (a TUN device goes away with its last one). */
  close(): void;
}

export interface OpenIoOptions {
  deviceName: string;
  mode: 'tun' | 'tap';
  netns?: string;
  offload: boolean;
  /** With offloads, also IPv6 TSO (the backend cuts TCPv6 super-packets: Backend.tso6). */
  tso6?: boolean;
  address: string;
  port: number;
  socketBufferBytes: number;
  /**
   * The outer DF bit: set on every datagram (flannel's proxy), or clear on every one (the kernel's
   * VXLAN); without it, the socket's default (set on plain datagrams, not on GSO segments).
   */
  df?: 'set' | 'clear';
  /** Queues and socket pairs, one per worker (default 1: one queue, one socket). */
  workers?: number;
}

/**
 * Opens a backend's device and socket, with offloads when asked and the kernel has them (a TUN or
 * TAP with vnet_hdr and TSO, a socket with UDP GRO), and without them otherwise. `configure` sets the
 * device up (MTU, addresses, routes); its errors are the caller's.
 */
export function openBackendIo(
  o: OpenIoOptions,
  configure: (tun: TunDevice) => void,
): {
  device: TunDevice;
  socket: UdpIo;
  offload: boolean;
  coalesceUdp: boolean;
  /** With workers > 1: each other worker's queue and sockets, released for its thread. */
  workers: { queueFd: number; receive: SocketSpec; send: SocketSpec }[];
} {
  const workers = o.workers ?? 1;
  const attempt = (offload: boolean) => {
    const device = TunDevice.open({
      name: o.deviceName,
      mode: o.mode,
      netns: o.netns,
      vnetHdr: offload,
      queues: workers,
    });
    const sockets: UdpSocket[] = [];
    let coalesceUdp = false;
    try {
      if (offload) {
        const tso =
          TunOffload.csum | TunOffload.tso4 | TunOffload.tsoEcn | (o.tso6 ? TunOffload.tso6 : 0);
        // A kernel that knows USO (Linux 6.2) takes UDP GSO writes: offered, then withdrawn, as
        // a probe (reading UDP super-packets is not asked for).
        try {
          device.setOffload(tso | TunOffload.uso4 | TunOffload.uso6);
          coalesceUdp = true;
        } catch {
          coalesceUdp = false;
        }
        device.setOffload(tso);
      }
      configure(device);
      const open = (port: number, reusePort: boolean) => {
        const socket = UdpSocket.open({
          address: o.address,
          port,
          reusePort,
          netns: o.netns,
          receiveBufferBytes: o.socketBufferBytes,
          sendBufferBytes: o.socketBufferBytes,
          gro: offload,
          // With offloads as without: the kernel's default would set DF on plain datagrams only.
          dontFragment: o.df === 'set',
          // IPv6 has no DF bit (and fragments only at the sender, which this leaves to the kernel).
          clearDontFragment: o.df === 'clear' && !o.address.includes(':'),
        });
        sockets.push(socket);
        return socket;
      };
      if (workers === 1)
        return { device, socket: open(o.port, false), offload, coalesceUdp, workers: [] };
      // A flow stays on the queue (and pump) its hash picks, not the one that last wrote to it.
      device.queues[0].steerByFlowHash();
      // Per worker: a socket on the backend's port (SO_REUSEPORT) to read, one of its own to send.
      const pairs = Array.from({ length: workers }, () => {
        const receive = open(o.port, true);
        return { receive, send: open(0, false) };
      });
      const spec = (s: UdpSocket): SocketSpec => ({
        family: s.family,
        address: s.address,
        port: s.port,
        fd: s.release(),
      });
      const others = pairs.slice(1).map((p, k) => ({
        queueFd: device.queues[k + 1].release(),
        receive: spec(p.receive),
        send: spec(p.send),
      }));
      return {
        device,
        socket: new SplitUdpIo(pairs[0].receive, pairs[0].send),
        offload,
        coalesceUdp,
        workers: others,
      };
    } catch (err) {
      for (const s of sockets) s.close();
      device.close();
      throw err;
    }
  };
  if (o.offload) {
    try {
      return attempt(true);
    } catch (err) {
      // Only an offload the kernel refuses is a reason to go on without; anything else is not.
      if (!(err instanceof WeftError) || !/TUNSETOFFLOAD|udpGro/.test(err.message)) throw err;
    }
  }
  return attempt(false);
}

/** What a backend runs over; `open` makes real ones, `overIo` takes any. */
export interface BackendIo {
  /** The TUN or TAP side. */
  device: DeviceIo;
  /** The underlay side. */
  socket: UdpIo;
}

/** Which encapsulation a backend speaks: flannel's `udp`, `vxlan` (RFC 7348) or `wireguard`. */
export type BackendType = 'udp' | 'vxlan' | 'wireguard';

/** What every backend shares: the options a node agent sets. */
export interface CommonBackendOptions extends PumpOptions {
  /** The device name or pattern (default `weft%d`). */
  deviceName?: string;
  /** The underlay address to bind (default 0.0.0.0); an IPv6 address makes an IPv6 underlay. */
  publicIp?: string;
  /** The underlay MTU the device's MTU is derived from (default 1500). */
  underlayMtu?: number;
  /** Create the device and socket in this network namespace (a name under /run/netns, or a path). */
  netns?: string;
  /**
   * Drop (and count) encapsulated packets whose underlay source is not a known remote node.
   * The kernel and flannel accept them from anyone; default true.
   */
  dropUnknownSources?: boolean;
  /**
   * Drop (and count as `spoofedInner`) an encapsulated packet from a known node whose inner source
   * address is outside that node's subnet (an ARP's sender address, likewise): a host that spoofs a
   * node's underlay address cannot put packets from any other address into pods. Neither the
   * kernel nor flannel checks this; default true. Turn it off where nodes forward traffic from
   * other sources unmasqueraded (e.g. a NodePort without SNAT). vxlan TAP mode, an L2 segment,
   * checks the inner source MAC instead (see VxlanBridge).
   */
  checkInnerSource?: boolean;
  /** UDP socket buffer sizes (default 4 MiB each). */
  socketBufferBytes?: number;
  /**
   * Segmentation and coalescing offloads (TSO from the TUN or TAP, UDP GSO out, UDP GRO in,
   * super-packet writes to the device). Default true; weft falls back without them where the
   * kernel lacks them.
   */
  offload?: boolean;
  /**
   * With offloads, UDP datagrams of one flow are written to the device (a TUN; a TAP, behind one
   * Ethernet header) as one UDP GSO super-packet that the kernel cuts back into the same
   * datagrams (Linux 6.2+). open() turns it on where the kernel takes such writes; overIo() only
   * when asked.
   */
  coalesceUdp?: boolean;
  /**
   * Pumps, each on a thread of its own (default 1: the main thread's only): the device is opened
   * multi-queue with a queue per worker, each worker reads a UDP socket on the backend's port
   * (SO_REUSEPORT) and sends from one of its own; the kernel spreads flows over them. For the
   * udp and TUN-mode vxlan backends; counters add up the workers' (at most 250 ms old), and
   * ARP senders a vxlan worker learns are learned by that worker.
   */
  workers?: number;
}

/** Checks the options every backend takes, before anything is opened. */
export function checkCommonOptions(o: CommonBackendOptions): void {
  for (const name of [
    'dropUnknownSources',
    'checkInnerSource',
    'offload',
    'coalesceUdp',
  ] as const) {
    if (o[name] !== undefined && typeof o[name] !== 'boolean')
      throw new WeftError(
        DataplaneErrorCode.badOption,
        `${name} ${JSON.stringify(o[name])} must be true or false`,
      );
  }
  const w = o.workers;
  if (w !== undefined && (!Number.isInteger(w) || w < 1 || w > 64))
    throw new WeftError(
      DataplaneErrorCode.badOption,
      `workers ${JSON.stringify(w)} must be a whole number of pumps, 1 to 64`,
    );
  const spin = o.busyPollMicros;
  if (spin !== undefined && (!Number.isInteger(spin) || spin < 0 || spin > 10_000))
    throw new WeftError(
      DataplaneErrorCode.badOption,
      `busyPollMicros ${JSON.stringify(spin)} must be a whole number of microseconds, 0 to 10000`,
    );
}

/**
 * A running backend: the pump plus the set of remote nodes. A node agent drives it with
 * setNodes / addNode / removeNode from lease events and reads counters; close() tears it down.
 */
export abstract class Backend extends Pump {
  /** Which encapsulation this backend speaks. */
  abstract readonly type: BackendType;
  /** The TUN or TAP device it pumps. */
  readonly tun: DeviceIo;
  protected nodeMap = new Map<string, ParsedNode>();
  protected sources = new SourceIndex([]);
  protected readonly dropUnknownSources: boolean;
  protected readonly checkInnerSource: boolean;
  private readonly source6 = new Uint8Array(16);
  private closed = false;
  /**
   * Offloads, copying (a backend that transforms payloads, e.g. encrypts them): inbound packets
   * are coalesced here into TUN writes; outbound segments go to txStaging at txPos.
   */
  protected readonly coalescer: TcpCoalescer | undefined;
  /**
   * Offloads, gathering (payloads forwarded as they are): super-packets are cut by `segmenter`
   * into headers in txStaging (at txPos) and payloads in place; inbound packets are recorded in
   * `gatherer`, which turns them into TUN writes of iovecs.
   */
  protected readonly segmenter: TcpSegmenter | undefined;
  protected readonly gatherer: GatherCoalescer | undefined;
  protected devOut = 0;
  protected txPos = 0;
  /** Where in txStaging the segments cutSegments made last begin. */
  private cutAt = 0;
  /** The GSO segment size of the device packet last checked by devicePacket(). */
  protected gsoSize = 0;
  /** With workers > 1, the other workers' threads. */
  private pool: WorkerPool | undefined;

  /**
   * Whether this backend cuts TSO6 (TCPv6) super-packets: a device opened with IPv6 TSO hands
   * them over (openBackendIo's tso6); any other backend counts one as a bad header.
   */
  protected get tso6(): boolean {
    return false;
  }

  protected constructor(
    tun: DeviceIo,
    socket: UdpIo,
    options: CommonBackendOptions,
    /** Offloads by gathering (see Pump); copying otherwise. */
    gather = false,
    /** Bytes of link header in front of each inbound IPv4 packet: 14 for a TAP's frames. */
    linkBytes = 0,
  ) {
    super(tun.queues[0], socket, options, gather);
    this.tun = tun;
    this.dropUnknownSources = options.dropUnknownSources ?? true;
    this.checkInnerSource = options.checkInnerSource ?? true;
    if (this.offload && gather) {
      this.segmenter = new TcpSegmenter(this.txStaging, this.batch * SEGMENTS_PER_SLOT);
      this.gatherer = new GatherCoalescer(
        this.rxStaging,
        this.toDevice,
        this.deviceReplyBase,
        DeviceSlab.staging,
        DeviceSlab.udpRing,
        this.counts,
        this.batch * GRO_SEGMENTS_PER_SLOT,
        options.coalesceUdp ?? false,
        linkBytes,
      );
    } else if (this.offload) {
      this.coalescer = new TcpCoalescer(this.rxStaging, (off, len) => {
        if (this.devOut < this.deviceReplyBase)
          this.toDevice.setLocal(this.devOut++, DeviceSlab.staging, off, len);
        else this.counts[Counter.dropSendError]++;
      });
    }
  }

  /**
   * Checks device packet `length` bytes at slab[base] (with offloads, a virtio_net_hdr and then
   * the packet): returns its GSO type (0 for a plain packet, gsoSize set otherwise), finishing a
   * checksum the kernel left partial; or -1, counted, for a packet cut by the read (@weft/tun's
   * length -1), an empty one, or a header weft cannot honour.
   */
  protected devicePacket(slab: Buffer, base: number, length: number): number {
    const h = this.deviceHeaderBytes;
    const len = length - h;
    if (len <= 0) {
      this.counts[Counter.dropTruncated]++;
      return -1;
    }
    if (h === 0) return VirtioGso.none;
    const gso = slab[base + VirtioField.gsoType] & ~VirtioGso.ecn;
    this.gsoSize = virtioRead16(slab, base + VirtioField.gsoSize);
    if (gso !== VirtioGso.none) {
      if ((gso === VirtioGso.tcpv4 || (gso === VirtioGso.tcpv6 && this.tso6)) && this.gsoSize > 0)
        return gso;
      this.counts[Counter.dropBadHeader]++;
      return -1;
    }
    if (
      slab[base + VirtioField.flags] & VirtioFlag.needsCsum &&
      !finishPartialChecksum(
        slab,
        base + h,
        len,
        virtioRead16(slab, base + VirtioField.csumStart),
        virtioRead16(slab, base + VirtioField.csumOffset),
      )
    ) {
      this.counts[Counter.dropBadHeader]++;
      return -1;
    }
    return VirtioGso.none;
  }

  /**
   * Offloads: cuts the TSO super-packet at slab[off] (in the device ring) into segments, their
   * headers in txStaging (each behind `prefixBytes` the subclass fills in writeSegmentPrefix) and
   * their payloads where they are, and queues them as UDP GSO sends to the destination, each
   * gathered from header and payload pieces. Returns the next free descriptor index. The batch's
   * checksums are completed by finishSegments(), before the send.
   */
  protected queueSegments(
    slab: Buffer,
    off: number,
    len: number,
    prefixBytes: number,
    decrementTtl: boolean,
    dst4: number,
    dst6: Uint8Array | undefined,
    port: number,
    n: number,
  ): number {
    if (this.cutSegments(slab, off, len, prefixBytes, 0, decrementTtl) === 0) return n;
    const next = this.queueCut(n, dst4, dst6, port);
    if (next !== n) this.countCut(prefixBytes);
    return next;
  }

  /**
   * Offloads: cuts the TSO super-packet at slab[off, +len) (in the device ring) into segments
   * (TcpSegmenter.cut: `linkBytes` of link header in front of slab[off] copied into each), their
   * headers in txStaging behind `prefixBytes` the subclass fills in writeSegmentPrefix. Returns
   * the segment count; 0, counted, for what cannot be cut. queueCut then queues the cut to each
   * destination, and countCut counts it sent.
   */
  protected cutSegments(
    slab: Buffer,
    off: number,
    len: number,
    prefixBytes: number,
    linkBytes: number,
    decrementTtl: boolean,
  ): number {
    const seg = this.segmenter!;
    const at = this.txPos;
    const count = seg.cut(slab, off, len, this.gsoSize, at, prefixBytes, decrementTtl, linkBytes);
    if (count === 0) {
      this.counts[Counter.dropUnsupported]++;
      return 0;
    }
    const hdr = seg.headerBytes;
    for (let k = 0; k < count; k++) this.writeSegmentPrefix(this.txStaging, at + k * hdr);
    this.cutAt = at;
    this.txPos = at + count * hdr;
    return count;
  }

  /** Offloads: counts the segments cutSegments made last as sent (their bytes behind `prefixBytes`). */
  protected countCut(prefixBytes: number): void {
    const seg = this.segmenter!;
    this.counts[Counter.txPackets] += seg.count;
    this.counts[Counter.txBytes] +=
      seg.count * (seg.headerBytes - prefixBytes) + (seg.count - 1) * seg.mss + seg.lastBytes;
  }

  /**
   * Offloads: queues the segments cutSegments made last to one destination, as UDP GSO sends
   * gathered from header and payload pieces (head-end replication: every destination's sends
   * point at the same pieces). Returns the next free descriptor index; when the table has no
   * room, the segments are dropped for this destination and counted.
   */
  protected queueCut(n: number, dst4: number, dst6: Uint8Array | undefined, port: number): number {
    const seg = this.segmenter!;
    const count = seg.count;
    const hdr = seg.headerBytes;
    if (n + 2 * count > this.udpReplyBase) {
      this.counts[Counter.dropSendError] += count;
      return n;
    }
    // Every segment but the last is hdr + mss bytes on the wire; a GSO send cuts at that size.
    const segmentBytes = hdr + seg.mss;
    const perSend = Math.max(
      1,
      Math.min(UDP_GSO_MAX_SEGMENTS, Math.floor(UDP_GSO_MAX_BYTES / segmentBytes)),
    );
    const table = this.toUdp;
    for (let k = 0; k < count; k++) {
      const h = this.cutAt + k * hdr;
      const chunk = k === count - 1 ? seg.lastBytes : seg.mss;
      if (k % perSend === 0) {
        if (dst6 === undefined) table.set4(n, UdpSlab.staging, h, hdr, dst4, port);
        else table.set6(n, UdpSlab.staging, h, hdr, dst6, 0, port);
        table.gso[n] = count - k > 1 && perSend > 1 ? segmentBytes : 0;
        n++;
      } else {
        table.append(n++, UdpSlab.staging, h, hdr);
      }
      table.append(n++, UdpSlab.deviceRing, seg.payloadOff + k * seg.mss, chunk);
    }
    return n;
  }

  /** Offloads: completes the checksums of the segments queueSegments cut this batch. */
  protected finishSegments(): void {
    this.segmenter?.finish(this.deviceRing.slab);
  }

  /** Offloads: writes the encapsulation in front of one segment (the prefixBytes at `at`). */
  protected writeSegmentPrefix(_out: Buffer, _at: number): void {}

  /** Builds an ICMP error about the device packet at `off` into scratch slot j; 1 if one was queued. */
  protected queueIcmpError(
    off: number,
    len: number,
    j: number,
    type: number,
    code: number,
    source4: number,
    ttl = 64,
  ): number {
    if (j >= this.batch || source4 < 0) return 0;
    const at = j * SCRATCH_STRIDE;
    const h = this.deviceHeaderBytes;
    const written = writeIcmpv4Error(
      this.scratch,
      at + h,
      this.deviceRing.slab,
      off,
      len,
      type,
      code,
      source4,
      ttl,
    );
    if (written === 0) return 0;
    if (h !== 0) writeVirtioNetHdr(this.scratch, at, 0, VirtioGso.none, 0, 0, 0, 0);
    this.toDevice.setLocal(this.deviceReplyBase + j, DeviceSlab.scratch, at, written + h);
    this.counts[Counter.icmpErrorsSent]++;
    return 1;
  }

  /** The device's name (the kernel's choice when `deviceName` was a pattern such as weft%d). */
  get deviceName(): string {
    return this.tun.name;
  }

  protected describeIo(which: 'device' | 'socket'): string {
    return which === 'device' ? this.tun.name : `(udp port ${this.socket.port})`;
  }

  /** The device's MTU: the underlay MTU less this encapsulation's overhead. */
  get mtu(): number {
    return this.tun.mtu;
  }

  /** The local UDP port. */
  get port(): number {
    return this.socket.port;
  }

  /** Which node fields this backend requires. */
  protected abstract readonly needs: { subnet: boolean; vtepMac: boolean };

  /** Installs the whole node set into the backend's tables (a snapshot: idempotent, atomic). */
  protected abstract install(nodes: readonly ParsedNode[]): void;

  /** Addresses besides the nodes' own that may send to us (e.g. default FDB destinations). */
  protected extraSources(): readonly string[] {
    return [];
  }

  /**
   * Replaces the set of remote nodes. Every node is validated before anything changes: a bad one
   * throws a WeftError naming it and leaves the backend as it was.
   */
  setNodes(nodes: readonly RemoteNode[]): void {
    this.ensureOpen();
    const parsed = nodes.map((n) => parseNode(n, this.needs));
    const next = new Map<string, ParsedNode>();
    for (const p of parsed) next.set(p.key, p);
    this.install([...next.values()]);
    this.nodeMap = next;
    this.rebuildSources();
    this.pool?.setNodes(nodes.map((n) => ({ ...n })));
  }

  /**
   * Starts the other workers' pumps (open() with workers > 1): each runs this backend, with the
   * same options and node set, on its own thread over the queue and sockets released for it.
   */
  protected startWorkers(
    type: 'udp' | 'vxlan',
    options: object,
    workers: { queueFd: number; receive: SocketSpec; send: SocketSpec }[],
  ): void {
    if (workers.length === 0) return;
    const specs: WorkerSpec[] = workers.map((w, k) => ({
      type,
      options: JSON.parse(JSON.stringify(options)),
      device: { name: this.tun.name, mtu: this.tun.mtu, queueFd: w.queueFd },
      receive: w.receive,
      send: w.send,
      nodes: this.nodes(),
      index: k + 1,
    }));
    this.pool = new WorkerPool(specs, (err) => this.raiseFault(err));
  }

  /** Adds a node, or replaces the node with the same subnet (or public IP when it has none). */
  addNode(node: RemoteNode): void {
    const parsed = parseNode(node, this.needs);
    const others = [...this.nodeMap.values()]
      .filter((n) => n.key !== parsed.key)
      .map((n) => n.input);
    this.setNodes([...others, node]);
  }

  /** Removes the node with this subnet (or public IP); removing an unknown node does nothing. */
  removeNode(key: string): boolean {
    const found = [...this.nodeMap.values()].find(
      (n) => n.key === key || n.subnet === key || formatIp(n.publicIp) === key,
    );
    if (!found) return false;
    this.setNodes([...this.nodeMap.values()].filter((n) => n !== found).map((n) => n.input));
    return true;
  }

  /** The remote nodes installed, as they were given (copies). */
  nodes(): RemoteNode[] {
    return [...this.nodeMap.values()].map((n) => ({ ...n.input }));
  }

  protected rebuildSources(): void {
    this.sources = new SourceIndex([
      ...[...this.nodeMap.values()].map((n) => ({
        underlay: formatIp(n.publicIp),
        subnets: [n.subnet, n.subnet6].filter((x): x is string => x !== undefined),
      })),
      ...this.extraSources().map((underlay) => ({ underlay, subnets: [] })),
    ]);
  }

  /** Hot path: the remote node UDP ring slot i came from, or undefined for a stranger. */
  protected sourceOf(i: number): SourceNode | undefined {
    const ring = this.udpRing;
    if (ring.families[i] === 4) return this.sources.get4(ring.addrs[i * 4] | 0);
    const b = this.source6;
    for (let w = 0; w < 4; w++) {
      const word = ring.addrs[i * 4 + w];
      b[w * 4] = word >>> 24;
      b[w * 4 + 1] = word >>> 16;
      b[w * 4 + 2] = word >>> 8;
      b[w * 4 + 3] = word;
    }
    return this.sources.get6(b, 0);
  }

  /**
   * Hot path: the datagrams in UDP ring slot i of `len` bytes: with UDP GRO one slot holds several
   * of ring.gso[i] bytes each, and a drop of the slot counts every one.
   */
  protected datagramsIn(i: number, len: number): number {
    const gso = this.udpRing.gso[i];
    return gso > 0 && len > gso ? Math.ceil(len / gso) : 1;
  }

  /** Hot path: hands an inner packet to the coalescer and counts what it refused; true if queued. */
  protected coalesce(
    coalescer: TcpCoalescer,
    ipv4: boolean,
    slab: Buffer,
    off: number,
    len: number,
  ): boolean {
    const r = ipv4 ? coalescer.push(slab, off, len) : coalescer.passThrough(slab, off, len);
    if (r === CoalesceResult.queued) return true;
    this.counts[
      r === CoalesceResult.badChecksum ? Counter.dropBadChecksum : Counter.dropSendError
    ]++;
    return false;
  }

  /** Every counter now, by name: packets and bytes each way, drops by reason, table overflows. */
  counters(): CounterSnapshot {
    const snapshot = this.counterSnapshot();
    this.addTableCounters(snapshot);
    this.pool?.addTo(snapshot);
    return snapshot;
  }

  /** Pumps running, the main thread's included. */
  get workers(): number {
    return 1 + (this.pool?.size ?? 0);
  }

  /** Adds what the backend's tables count (overflows) to a snapshot. */
  protected addTableCounters(_snapshot: CounterSnapshot): void {}

  /** The forwarding tables as plain values, for status output. */
  abstract dumpTables(): { routes: RouteDump[]; neighbors?: NeighborDump[]; fdb?: FdbDump[] };

  protected ensureOpen(): void {
    if (this.closed)
      throw new WeftError(
        DataplaneErrorCode.closed,
        `the ${this.type} backend on ${this.tun.name} is closed`,
      );
  }

  /** Stops the pump, closes the socket and removes the device. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool?.close();
    this.stopPump();
    this.tun.close();
  }
}
