import {
  formatCidr,
  formatIp,
  formatMac,
  parseCidr,
  parseIp,
  parseMac,
  randomMac,
  WeftError,
} from '@weft/core';
import {
  ArpOperation,
  arpCheck,
  arpOperation,
  arpReplyInPlace,
  arpSenderIp,
  arpSenderMac,
  arpTargetIp,
  ETHERNET_HEADER_BYTES,
  EtherType,
  ethernetType,
  IcmpCode,
  IcmpType,
  IPV6_HEADER_BYTES,
  Ipv6Field,
  ipv4Check,
  ipv4Dst,
  ipv4TotalLength,
  ipv6Check,
  ipv6PayloadLength,
  overlayMtu,
  readMac,
  Status,
  VXLAN_ENCAP_HEADROOM,
  VXLAN_HEADER_BYTES,
  VXLAN_PORT_LINUX,
  vxlanCheck,
  vxlanDecapCheck,
  vxlanEncapInPlace,
  writeVxlanHeader,
} from '@weft/encap';
import { Fdb, type FdbEntry, NeighborTable, RouteTable } from '@weft/fdb';
import {
  Backend,
  type BackendIo,
  type CommonBackendOptions,
  type DeviceIo,
  openBackendIo,
} from './backend.js';
import { Counter } from './counters.js';
import { DataplaneErrorCode, type ParsedNode } from './nodes.js';
import { DeviceSlab, type UdpIo, UdpSlab } from './pump.js';

export interface VxlanBackendOptions extends CommonBackendOptions {
  /** `tun` (L3, flannel's model; default) or `tap` (an L2 segment with learning). */
  mode?: 'tun' | 'tap';
  /** VXLAN network identifier (default 1, flannel's). */
  vni?: number;
  /** UDP port, ours and the peers' (default 8472, Linux's and flannel's; 4789 is IANA's). */
  port?: number;
  /** Our VTEP MAC (default: random, locally administered). A node agent keeps it across restarts. */
  vtepMac?: string;
  /** TUN mode: our VTEP address, a /32 on the device, answered in ARP (flannel: 10.244.1.0). */
  vtepAddress?: string;
  /** TUN mode: the cluster network routed into the device, e.g. 10.244.0.0/16. */
  network?: string;
  /** TUN mode, dual-stack: our IPv6 VTEP address and the IPv6 cluster network. */
  vtepAddress6?: string;
  network6?: string;
  /** TUN mode: source of ICMP errors to the local kernel (default the network's first address; see UdpBackendOptions). */
  icmpSource?: string;
  /** TAP mode: an address with prefix for the TAP device, e.g. 10.99.0.1/24 (optional). */
  tapAddress?: string;
  /** TAP mode: learn source MACs of received frames (default true). */
  learning?: boolean;
  /** TAP mode: learned FDB entries age out after this long unseen (default 300 s). */
  ageingMs?: number;
}

function dropForVxlan(status: number): number {
  switch (status) {
    case Status.truncated:
      return Counter.dropTruncated;
    case Status.vxlanWrongVni:
      return Counter.dropWrongVni;
    case Status.wrongDstMac:
      return Counter.dropWrongDstMac;
    case Status.badTotalLength:
      return Counter.dropTruncated;
    default:
      return Counter.dropBadHeader;
  }
}

/**
 * A userspace VXLAN VTEP (RFC 7348) that the kernel's VXLAN can talk to.
 *
 * TUN mode (what flannel's model needs): an inner packet's destination is routed to a next hop
 * (the remote VTEP address, e.g. 10.244.2.0), whose neighbor entry gives the VTEP MAC, whose FDB
 * entry gives the underlay address; the inner Ethernet and VXLAN headers are written into the
 * headroom and the datagram is sent. Received frames are checked (VNI, inner destination MAC),
 * stripped and written to the TUN; ARP requests for our VTEP address are answered over VXLAN and
 * taught to the tables, so a kernel peer without a static neighbor entry can still reach us.
 *
 * TAP mode: frames from the TAP go by the FDB (broadcast, multicast and unknown unicast to every
 * default destination, replicated without copying); received frames teach the FDB their source
 * MAC unless a static entry exists.
 */
export class VxlanBackend extends Backend {
  readonly type = 'vxlan' as const;
  readonly mode: 'tun' | 'tap';
  readonly vni: number;
  readonly vtepMac: number;
  readonly routes = new RouteTable();
  readonly neighbors = new NeighborTable();
  readonly fdb: Fdb;
  protected readonly needs: { subnet: boolean; vtepMac: boolean };
  private readonly peerPort: number;
  private readonly icmpSource4: number;
  private readonly learning: boolean;
  private readonly ownAddresses: { ip: string; mac: string; proxy: true }[];
  private readonly expiry: NodeJS.Timeout | undefined;

  private constructor(tun: DeviceIo, socket: UdpIo, options: VxlanBackendOptions, vtepMac: number) {
    const mode = options.mode ?? 'tun';
    const batch = options.batch ?? 64;
    // TAP mode replicates floods to every default destination: room for several per frame.
    super(tun, socket, { ...options, udpTxCapacity: mode === 'tap' ? batch * 8 : batch });
    this.mode = mode;
    this.vni = options.vni ?? 1;
    this.vtepMac = vtepMac;
    this.peerPort = options.port ?? VXLAN_PORT_LINUX;
    this.needs = { subnet: mode === 'tun', vtepMac: mode === 'tun' };
    this.learning = options.learning ?? true;
    this.fdb = new Fdb({
      defaultPort: this.peerPort,
      defaultVni: this.vni,
      ageingMs: options.ageingMs,
    });
    const network = options.network === undefined ? undefined : parseCidr(options.network);
    const source = options.icmpSource === undefined ? undefined : parseIp(options.icmpSource);
    this.icmpSource4 =
      source?.family === 4 ? source.address : network?.family === 4 ? network.address : -1;
    this.ownAddresses = [];
    const mac = formatMac(vtepMac);
    if (options.vtepAddress) this.ownAddresses.push({ ip: options.vtepAddress, mac, proxy: true });
    if (options.vtepAddress6)
      this.ownAddresses.push({ ip: options.vtepAddress6, mac, proxy: true });
    this.neighbors.applySnapshot(this.ownAddresses);
    if (mode === 'tap') {
      this.expiry = setInterval(() => this.fdb.expire(), 1000);
      this.expiry.unref();
    }
  }

  static open(options: VxlanBackendOptions = {}): VxlanBackend {
    const mode = options.mode ?? 'tun';
    const vni = options.vni ?? 1;
    if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) {
      throw new WeftError(
        DataplaneErrorCode.badOption,
        `VNI ${vni} does not fit 24 bits (0..16777215)`,
      );
    }
    const vtepMac = options.vtepMac === undefined ? randomMac() : parseMac(options.vtepMac);
    const underlay = parseIp(options.publicIp ?? '0.0.0.0');
    const mtu = overlayMtu(options.underlayMtu ?? 1500, underlay.family === 4 ? 'vxlan' : 'vxlan6');
    if (mode === 'tun' && options.vtepAddress === undefined) {
      throw new WeftError(
        DataplaneErrorCode.badOption,
        "a TUN-mode vxlan backend needs vtepAddress (flannel: the first address of this node's subnet)",
      );
    }
    const io = openBackendIo(
      {
        deviceName: options.deviceName ?? 'weft%d',
        mode,
        netns: options.netns,
        // TAP mode moves Ethernet frames: no TSO to cut, so no offloads.
        offload: mode === 'tun' && (options.offload ?? true),
        address: options.publicIp ?? '0.0.0.0',
        port: options.port ?? VXLAN_PORT_LINUX,
        socketBufferBytes: options.socketBufferBytes ?? 4 << 20,
      },
      (tun) => {
        tun.setMtu(mtu);
        if (mode === 'tap') {
          tun.setMac(vtepMac);
          if (options.tapAddress) tun.addAddress(options.tapAddress);
          tun.up();
        } else {
          // Without an IPv6 overlay, no IPv6 link-local chatter (router solicitations, MLD) into the pump.
          if (!options.vtepAddress6) tun.disableIpv6();
          tun.addAddress(`${options.vtepAddress}/32`);
          if (options.vtepAddress6) tun.addAddress(`${options.vtepAddress6}/128`);
          tun.up();
          if (options.network) tun.addRoute(formatCidr(parseCidr(options.network)));
          if (options.network6) tun.addRoute(formatCidr(parseCidr(options.network6)));
        }
      },
    );
    try {
      return VxlanBackend.overIo(io, {
        ...options,
        vtepMac: formatMac(vtepMac),
        offload: io.offload,
      });
    } catch (err) {
      io.socket.close();
      io.device.close();
      throw err;
    }
  }

  /**
   * Runs the backend over given I/O instead of a device and socket it opens itself (nothing is
   * configured): for simulations, and for benchmarks without system calls.
   */
  static overIo(io: BackendIo, options: VxlanBackendOptions): VxlanBackend {
    const vtepMac = options.vtepMac === undefined ? randomMac() : parseMac(options.vtepMac);
    const backend = new VxlanBackend(io.device, io.socket, options, vtepMac);
    backend.startPump();
    return backend;
  }

  dumpTables() {
    return { routes: this.routes.dump(), neighbors: this.neighbors.dump(), fdb: this.fdb.dump() };
  }

  /** Exactly what flannel installs per remote node: route via its VTEP address, permanent neighbor, FDB entry. */
  protected install(nodes: readonly ParsedNode[]): void {
    const routes = [];
    const neighbors: { ip: string; mac: string; proxy?: boolean }[] = [...this.ownAddresses];
    const fdb = [];
    for (const n of nodes) {
      const port = n.port ?? this.peerPort;
      const underlay = n.input.publicIp;
      if (this.mode === 'tun') {
        routes.push({ dst: n.subnet!, via: n.vtepAddress, underlay, port, tag: n.input.name });
        if (n.subnet6 && n.vtepAddress6)
          routes.push({ dst: n.subnet6, via: n.vtepAddress6, underlay, port, tag: n.input.name });
        neighbors.push({ ip: n.vtepAddress!, mac: n.vtepMac! });
        if (n.vtepAddress6) neighbors.push({ ip: n.vtepAddress6, mac: n.vtepMac! });
        fdb.push({ mac: n.vtepMac!, dst: underlay, port, vni: this.vni });
      } else {
        fdb.push({ mac: '00:00:00:00:00:00', dst: underlay, port, vni: this.vni });
        if (n.vtepMac) fdb.push({ mac: n.vtepMac, dst: underlay, port, vni: this.vni });
      }
    }
    // Validate all three before changing any: the table snapshots below cannot fail after this.
    const staged = {
      routes: new RouteTable(),
      neighbors: new NeighborTable(),
      fdb: new Fdb({ defaultPort: this.peerPort, defaultVni: this.vni }),
    };
    staged.routes.applySnapshot(routes);
    staged.neighbors.applySnapshot(neighbors);
    staged.fdb.applySnapshot(fdb);
    this.routes.applySnapshot(routes);
    this.neighbors.applySnapshot(neighbors);
    this.fdb.applySnapshot(fdb);
  }

  protected override extraSources(): readonly string[] {
    return this.fdb.defaults.map((e) => formatIp(e.remote));
  }

  protected outbound(count: number): number {
    return this.mode === 'tun' ? this.outboundL3(count) : this.outboundL2(count);
  }

  protected inbound(count: number): number {
    return this.mode === 'tun' ? this.inboundL3(count) : this.inboundL2(count);
  }

  /** Queues a datagram to an FDB entry's VTEP; false when the underlay family does not match the socket. */
  private queue(n: number, slab: number, start: number, length: number, entry: FdbEntry): boolean {
    if (entry.remote4 >= 0) {
      if (this.socket.family !== 4) return false;
      this.toUdp.set4(n, slab, start, length, entry.remote4, entry.port);
      return true;
    }
    if (this.socket.family !== 6) return false;
    this.toUdp.set6(n, slab, start, length, entry.remote.address as Uint8Array, 0, entry.port);
    return true;
  }

  /** The inner destination MAC of the super-packet being segmented. */
  private segmentMac = 0;

  protected override writeSegmentPrefix(out: Buffer, at: number): void {
    vxlanEncapInPlace(
      out,
      at + VXLAN_ENCAP_HEADROOM,
      this.vni,
      this.segmentMac,
      this.vtepMac,
      EtherType.ipv4,
    );
  }

  private outboundL3(count: number): number {
    const ring = this.deviceRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const routes = this.routes;
    const neighbors = this.neighbors;
    const fdb = this.fdb;
    const vni = this.vni;
    const ourMac = this.vtepMac;
    const h = this.deviceHeaderBytes;
    const nowMs = Date.now();
    let n = 0;
    let replies = 0;
    this.txPos = 0;
    for (let i = 0; i < count; i++) {
      const base = i * stride + headroom;
      const gso = this.devicePacket(slab, base, lengths[i]);
      if (gso < 0) continue;
      const off = base + h;
      const len = lengths[i] - h;
      const version = slab[off] >>> 4;
      let mac: number;
      let ethertype: number;
      if (version === 4) {
        const status = ipv4Check(slab, off, len);
        if (status !== Status.ok) {
          c[status === Status.truncated ? Counter.dropTruncated : Counter.dropBadHeader]++;
          continue;
        }
        const dst = ipv4Dst(slab, off);
        const hop = routes.lookup4(dst);
        if (hop === undefined) {
          c[Counter.dropNoRoute]++;
          replies += this.queueIcmpError(
            off,
            len,
            replies,
            IcmpType.destinationUnreachable,
            IcmpCode.netUnreachable,
            this.icmpSource4,
          );
          continue;
        }
        mac = neighbors.lookup4(hop.gateway4 >= 0 ? hop.gateway4 : dst);
        ethertype = EtherType.ipv4;
      } else if (version === 6) {
        if (ipv6Check(slab, off, len) !== Status.ok) {
          c[Counter.dropBadHeader]++;
          continue;
        }
        const hop = routes.lookup6(slab, off + Ipv6Field.dst);
        if (hop === undefined) {
          c[Counter.dropNoRoute]++;
          continue;
        }
        mac =
          hop.gateway?.family === 6
            ? neighbors.lookup6(hop.gateway.address, 0)
            : neighbors.lookup6(slab, off + Ipv6Field.dst);
        ethertype = EtherType.ipv6;
      } else {
        c[Counter.dropUnsupported]++;
        continue;
      }
      if (mac < 0) {
        c[Counter.dropNoNeighbor]++;
        continue;
      }
      const entry = fdb.lookup(mac, nowMs);
      if (entry === undefined) {
        c[Counter.dropNoFdb]++;
        continue;
      }
      if (gso !== 0) {
        // A TSO super-packet: segments, each behind its own VXLAN and inner Ethernet headers.
        if (entry.remote4 >= 0 ? this.socket.family !== 4 : this.socket.family !== 6) {
          c[Counter.dropUnsupported]++;
          continue;
        }
        this.segmentMac = mac;
        n = this.queueSegments(
          slab,
          off,
          len,
          VXLAN_ENCAP_HEADROOM,
          false,
          entry.remote4,
          entry.remote4 >= 0 ? undefined : (entry.remote.address as Uint8Array),
          entry.port,
          n,
        );
        continue;
      }
      const start = vxlanEncapInPlace(slab, off, vni, mac, ourMac, ethertype);
      if (!this.queue(n, UdpSlab.deviceRing, start, len + VXLAN_ENCAP_HEADROOM, entry)) {
        c[Counter.dropUnsupported]++;
        continue;
      }
      n++;
      c[Counter.txPackets]++;
      c[Counter.txBytes] += len;
    }
    this.sendDeviceReplies(replies);
    return n;
  }

  private inboundL3(count: number): number {
    const ring = this.udpRing;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const checkSource = this.dropUnknownSources;
    const coalescer = this.coalescer;
    this.inboundCount = 0;
    this.devOut = 0;
    coalescer?.reset();
    let replies = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      if (len <= 0) {
        c[Counter.dropTruncated]++;
        continue;
      }
      if (checkSource && !this.knownSource(i)) {
        c[Counter.dropUnknownSource]++;
        continue;
      }
      const base = i * stride + headroom;
      // With UDP GRO one slot may hold several datagrams of ring.gso[i] bytes each.
      const step = ring.gso[i] > 0 ? ring.gso[i] : len;
      for (let at = 0; at < len; at += step)
        replies += this.inboundDatagram(i, base + at, Math.min(step, len - at), replies);
    }
    this.sendUdpReplies(replies);
    if (coalescer) {
      coalescer.flush();
      return this.devOut;
    }
    return this.inboundCount;
  }

  /** Descriptors queued by inboundDatagram without offloads. */
  private inboundCount = 0;

  /** One received VXLAN datagram: checked, stripped, queued for the TUN. Returns 1 if it queued an ARP reply. */
  private inboundDatagram(i: number, off: number, len: number, replies: number): number {
    const slab = this.udpRing.slab;
    const c = this.counts;
    const status = vxlanDecapCheck(slab, off, len, this.vni, this.vtepMac);
    if (status !== Status.ok) {
      c[dropForVxlan(status)]++;
      return 0;
    }
    const inner = off + VXLAN_HEADER_BYTES;
    const innerLen = len - VXLAN_HEADER_BYTES;
    const type = ethernetType(slab, inner, innerLen);
    const pkt = inner + ETHERNET_HEADER_BYTES;
    const pktLen = innerLen - ETHERNET_HEADER_BYTES;
    let total: number;
    if (type === EtherType.ipv4) {
      const s = ipv4Check(slab, pkt, pktLen);
      if (s !== Status.ok) {
        c[
          s === Status.truncated || s === Status.badTotalLength
            ? Counter.dropTruncated
            : Counter.dropBadHeader
        ]++;
        return 0;
      }
      total = ipv4TotalLength(slab, pkt);
    } else if (type === EtherType.ipv6) {
      if (ipv6Check(slab, pkt, pktLen) !== Status.ok) {
        c[Counter.dropBadHeader]++;
        return 0;
      }
      total = IPV6_HEADER_BYTES + ipv6PayloadLength(slab, pkt);
    } else if (type === EtherType.arp) {
      return this.handleArp(i, off, len, replies);
    } else {
      c[Counter.dropUnsupported]++;
      return 0;
    }
    const coalescer = this.coalescer;
    if (coalescer) {
      const queued =
        type === EtherType.ipv4
          ? coalescer.push(slab, pkt, total)
          : coalescer.passThrough(slab, pkt, total);
      if (!queued) {
        c[Counter.dropSendError]++;
        return 0;
      }
    } else {
      this.toDevice.setLocal(this.inboundCount++, DeviceSlab.udpRing, pkt, total);
    }
    c[Counter.rxPackets]++;
    c[Counter.rxBytes] += total;
    return 0;
  }

  /**
   * An ARP message over VXLAN (TUN mode): learn the sender (IP -> MAC in the neighbor table,
   * MAC -> underlay address in the FDB), and answer a request for an address we own, in place,
   * back to the sender's VTEP. Returns 1 when a reply was queued.
   */
  private handleArp(i: number, off: number, len: number, j: number): number {
    const slab = this.udpRing.slab;
    const inner = off + VXLAN_HEADER_BYTES;
    const arpOff = inner + ETHERNET_HEADER_BYTES;
    const c = this.counts;
    if (arpCheck(slab, arpOff, len - VXLAN_HEADER_BYTES - ETHERNET_HEADER_BYTES) !== Status.ok) {
      c[Counter.dropBadHeader]++;
      return 0;
    }
    const senderMac = arpSenderMac(slab, arpOff);
    const fromV4 = this.udpRing.families[i] === 4;
    const source4 = this.udpRing.addrs[i * 4];
    if (senderMac !== 0 && fromV4) {
      this.neighbors.learn4(arpSenderIp(slab, arpOff), senderMac);
      this.fdb.learn4(senderMac, source4, this.peerPort, this.vni);
    }
    if (arpOperation(slab, arpOff) !== ArpOperation.request) return 0;
    const answer = this.neighbors.answerArp4(arpTargetIp(slab, arpOff));
    if (answer < 0 || j >= this.batch || !fromV4) return 0;
    if (arpReplyInPlace(slab, inner, len - VXLAN_HEADER_BYTES, answer) !== Status.ok) return 0;
    this.toUdp.set4(this.udpReplyBase + j, UdpSlab.udpRing, off, len, source4, this.peerPort);
    c[Counter.arpReplies]++;
    return 1;
  }

  private outboundL2(count: number): number {
    const ring = this.deviceRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const fdb = this.fdb;
    const vni = this.vni;
    const capacity = this.udpReplyBase;
    const nowMs = Date.now();
    let n = 0;
    for (let i = 0; i < count; i++) {
      const off = i * stride + headroom;
      const len = lengths[i];
      if (len < ETHERNET_HEADER_BYTES) {
        c[Counter.dropTruncated]++;
        continue;
      }
      const dests = fdb.destinations(readMac(slab, off), nowMs);
      if (dests.length === 0) {
        c[Counter.dropNoFdb]++;
        continue;
      }
      const start = off - VXLAN_HEADER_BYTES;
      writeVxlanHeader(slab, start, vni);
      // Head-end replication: every copy is a descriptor over the same bytes.
      for (let d = 0; d < dests.length; d++) {
        if (n >= capacity) {
          c[Counter.dropSendError]++;
          continue;
        }
        if (this.queue(n, UdpSlab.deviceRing, start, len + VXLAN_HEADER_BYTES, dests[d])) n++;
        else c[Counter.dropUnsupported]++;
      }
      c[Counter.txPackets]++;
      c[Counter.txBytes] += len;
    }
    return n;
  }

  private inboundL2(count: number): number {
    const ring = this.udpRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const table = this.toDevice;
    const vni = this.vni;
    const checkSource = this.dropUnknownSources;
    const learn = this.learning;
    const nowMs = Date.now();
    let n = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      if (len < 0) {
        c[Counter.dropTruncated]++;
        continue;
      }
      if (checkSource && !this.knownSource(i)) {
        c[Counter.dropUnknownSource]++;
        continue;
      }
      const off = i * stride + headroom;
      const status = vxlanCheck(slab, off, len, vni);
      if (status !== Status.ok) {
        c[dropForVxlan(status)]++;
        continue;
      }
      const inner = off + VXLAN_HEADER_BYTES;
      const innerLen = len - VXLAN_HEADER_BYTES;
      if (learn && ring.families[i] === 4)
        this.fdb.learn4(readMac(slab, inner + 6), ring.addrs[i * 4], this.peerPort, vni, nowMs);
      table.setLocal(n++, DeviceSlab.udpRing, inner, innerLen);
      c[Counter.rxPackets]++;
      c[Counter.rxBytes] += innerLen;
    }
    return n;
  }

  override close(): void {
    if (this.expiry) clearInterval(this.expiry);
    super.close();
  }
}
