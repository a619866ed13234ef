import { closeSync } from 'node:fs';
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
  ETHERNET_VLAN_HEADER_BYTES,
  EtherType,
  IcmpCode,
  IcmpType,
  IPV6_HEADER_BYTES,
  Ipv4Field,
  Ipv6Field,
  ipv4Check,
  ipv4TotalLength,
  ipv6Check,
  ipv6PayloadLength,
  overlayMtu,
  read16,
  readInt32,
  Status,
  VXLAN_ENCAP_HEADROOM,
  VXLAN_HEADER_BYTES,
  VXLAN_PORT_LINUX,
  vxlanCheck,
  write16,
  writeMacWords,
  writeVxlanHeader,
} from '@weft/encap';
import {
  Fdb,
  type FdbEntry,
  type FdbEntryInput,
  type NeighborEntry,
  type NeighborInput,
  NeighborTable,
  type RouteInput,
  RouteTable,
} from '@weft/fdb';
import {
  Backend,
  type BackendIo,
  type CommonBackendOptions,
  checkCommonOptions,
  type DeviceIo,
  openBackendIo,
} from './backend.js';
import { Counter, type CounterSnapshot, dropFor } from './counters.js';
import { DataplaneErrorCode, type ParsedNode } from './nodes.js';
import { frameIpFamily, frameIpOffset } from './offload.js';
import { DeviceSlab, SEGMENTS_PER_SLOT, type UdpIo, UdpSlab } from './pump.js';
import type { SourceNode } from './sources.js';

/** Options of {@link VxlanBackend.open}. */
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
  /**
   * TUN mode: our IPv6 VTEP address (a /128; flannel-v6.<VNI>'s: the IPv6 subnet's first
   * address) and the IPv6 cluster network. With these alone (no vtepAddress) the backend is an
   * IPv6 VTEP, as flannel-v6.<VNI> over an IPv6 underlay (publicIp IPv6): its nodes need subnet6.
   */
  vtepAddress6?: string;
  /** TUN mode, dual-stack: the IPv6 cluster network routed into the device. */
  network6?: string;
  /** TUN mode: source of ICMP errors to the local kernel (default the network's first address; see UdpBackendOptions). */
  icmpSource?: string;
  /**
   * Inner frames with an 802.1Q or 802.1ad tag. `drop` (default): dropped and counted as
   * `vlanTagged`, each way, as RFC 7348 section 6.1 asks "unless configured otherwise". `accept`:
   * TUN mode reads the packet behind one tag (a second tag is still dropped); TAP mode carries
   * tagged frames as they are, as the kernel's VXLAN does.
   */
  innerVlan?: 'drop' | 'accept';
  /**
   * TUN mode: ARP senders learned as neighbors (only addresses inside the sending node's own
   * subnet are learned) are bounded: at most this many (default 4096, as the FDB; beyond it the
   * least recently seen is evicted and counted in `neighborsOverflow`), each forgotten after
   * `neighborAgeingMs` (default 300 s) unseen.
   */
  maxLearnedNeighbors?: number;
  /** TUN mode: learned neighbors are forgotten after this long unseen (default 300 s). */
  neighborAgeingMs?: number;
  /** TAP mode: an address with prefix for the TAP device, e.g. 10.99.0.1/24 (optional). */
  tapAddress?: string;
  /** TAP mode: learn source MACs of received frames (default true; false floods every unknown MAC). */
  learning?: boolean;
  /** Learned FDB entries age out after this long unseen (default 300 s); at most 4096 are kept. */
  ageingMs?: number;
}

/** An EtherType that says an 802.1Q (or 802.1ad) tag follows. */
function isVlanTag(type: number): boolean {
  return type === EtherType.vlan || type === EtherType.qinq;
}

function badOption(message: string): WeftError {
  return new WeftError(DataplaneErrorCode.badOption, message);
}

/** Checks the options both open() and overIo() take; returns the mode. */
function checkOptions(o: VxlanBackendOptions): 'tun' | 'tap' {
  const mode = o.mode ?? 'tun';
  if (mode !== 'tun' && mode !== 'tap')
    throw badOption(`mode ${JSON.stringify(mode)} is not a vxlan mode: use tun or tap`);
  const vni = o.vni ?? 1;
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff)
    throw badOption(`VNI ${vni} does not fit 24 bits (0..16777215)`);
  if (o.innerVlan !== undefined && o.innerVlan !== 'drop' && o.innerVlan !== 'accept')
    throw badOption(`innerVlan ${JSON.stringify(o.innerVlan)} must be 'drop' or 'accept'`);
  checkCommonOptions(o);
  if (o.learning !== undefined && typeof o.learning !== 'boolean')
    throw badOption(`learning ${JSON.stringify(o.learning)} must be true or false`);
  for (const name of ['maxLearnedNeighbors', 'neighborAgeingMs', 'ageingMs'] as const) {
    const v = o[name];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1))
      throw badOption(`${name} ${v} must be a whole number of at least 1`);
  }
  if (mode === 'tap' && (o.workers ?? 1) > 1)
    throw badOption(
      'a TAP-mode vxlan backend runs one pump (its FDB learns from every frame): use workers 1',
    );
  if (mode === 'tun' && o.vtepAddress === undefined && o.vtepAddress6 === undefined)
    throw badOption(
      "a TUN-mode vxlan backend needs vtepAddress (flannel: the first address of this node's subnet), or vtepAddress6 for an IPv6 VTEP",
    );
  for (const [name, value, family] of [
    ['vtepAddress', o.vtepAddress, 4],
    ['vtepAddress6', o.vtepAddress6, 6],
  ] as const) {
    if (value !== undefined && parseIp(value).family !== family)
      throw badOption(`${name} ${value} must be an IPv${family} address`);
  }
  return mode;
}

/**
 * A userspace VXLAN endpoint (RFC 7348) that the kernel's VXLAN can talk to, in one of two
 * shapes over this shared base: `VxlanVtep` (TUN mode, flannel's model: routed IP packets) and
 * `VxlanBridge` (TAP mode: an L2 segment). `VxlanBackend.open` picks by `mode`. The base holds
 * what both share: VNI, VTEP MAC, the FDB and its upkeep, the node set's tables.
 */
export abstract class VxlanBackend extends Backend {
  /** Both modes cut TSO6 super-packets (the TUN's IPv6 TCP, a TAP's IPv6 frames). */
  protected override get tso6(): boolean {
    return true;
  }

  readonly type = 'vxlan' as const;
  /** `tun` ({@link VxlanVtep}) or `tap` ({@link VxlanBridge}). */
  abstract readonly mode: 'tun' | 'tap';
  /** The VXLAN network identifier sent and required. */
  readonly vni: number;
  /** Our VTEP MAC as a 48-bit number. */
  readonly vtepMac: number;
  /** TUN mode: each node's subnet via its VTEP address. */
  readonly routes = new RouteTable();
  /** TUN mode: VTEP addresses (ours and each node's) to VTEP MACs, and the ARP senders learned. */
  readonly neighbors: NeighborTable;
  /** VTEP MACs to underlay addresses (TAP mode: the flood list and learned MACs too). */
  readonly fdb: Fdb;
  protected readonly peerPort: number;
  /** Our VTEP MAC as words (first two octets, last four), for writing and comparing per packet. */
  protected readonly macHigh: number;
  protected readonly macLow: number;
  protected readonly acceptVlan: boolean;
  private readonly upkeep: NodeJS.Timeout;

  protected constructor(
    tun: DeviceIo,
    socket: UdpIo,
    options: VxlanBackendOptions,
    vtepMac: number,
    udpTxCapacity: number,
    gather: boolean,
    linkBytes = 0,
  ) {
    super(tun, socket, { ...options, udpTxCapacity }, gather, linkBytes);
    this.vni = options.vni ?? 1;
    this.vtepMac = vtepMac;
    this.macHigh = Math.floor(vtepMac / 0x100000000);
    this.macLow = vtepMac | 0;
    this.peerPort = options.port ?? VXLAN_PORT_LINUX;
    this.acceptVlan = options.innerVlan === 'accept';
    this.fdb = new Fdb({
      defaultPort: this.peerPort,
      defaultVni: this.vni,
      ageingMs: options.ageingMs,
    });
    this.neighbors = new NeighborTable({
      maxLearned: options.maxLearnedNeighbors,
      ageingMs: options.neighborAgeingMs,
    });
    // Learned entries age out, and the hot path's lookups go by this clock (see Fdb.tick).
    this.upkeep = setInterval(() => {
      this.fdb.expire();
      this.neighbors.expire();
    }, 1000);
    this.upkeep.unref();
  }

  /** Opens the device (TUN or TAP) and socket, configures them as flannel would, and starts. */
  static open(options: VxlanBackendOptions = {}): VxlanBackend {
    const mode = checkOptions(options);
    const vtepMac = options.vtepMac === undefined ? randomMac() : parseMac(options.vtepMac);
    const underlay = parseIp(options.publicIp ?? '0.0.0.0');
    const mtu = overlayMtu(options.underlayMtu ?? 1500, underlay.family === 4 ? 'vxlan' : 'vxlan6');
    const io = openBackendIo(
      {
        deviceName: options.deviceName ?? 'weft%d',
        mode,
        netns: options.netns,
        offload: options.offload ?? true,
        address: options.publicIp ?? '0.0.0.0',
        port: options.port ?? VXLAN_PORT_LINUX,
        socketBufferBytes: options.socketBufferBytes ?? 4 << 20,
        // The kernel's VXLAN leaves DF clear unless told otherwise (ip-link's `df`, default unset).
        df: 'clear',
        workers: options.workers,
        // IPv6 TCP super-packets are cut too (tso6), in either mode.
        tso6: true,
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
          if (options.vtepAddress) tun.addAddress(`${options.vtepAddress}/32`);
          if (options.vtepAddress6) tun.addAddress(`${options.vtepAddress6}/128`);
          tun.up();
          if (options.network) tun.addRoute(formatCidr(parseCidr(options.network)));
          if (options.network6) tun.addRoute(formatCidr(parseCidr(options.network6)));
        }
      },
    );
    try {
      const resolved = {
        ...options,
        vtepMac: formatMac(vtepMac),
        offload: io.offload,
        coalesceUdp: io.coalesceUdp && (options.coalesceUdp ?? true),
      };
      const backend = VxlanBackend.overIo(io, resolved);
      backend.startWorkers('vxlan', resolved, io.workers);
      return backend;
    } catch (err) {
      io.socket.close();
      io.device.close();
      for (const w of io.workers)
        for (const fd of [w.queueFd, w.receive.fd, w.send.fd]) closeSync(fd);
      throw err;
    }
  }

  /**
   * Runs the backend over given I/O instead of a device and socket it opens itself (nothing is
   * configured): for simulations, and for benchmarks without system calls.
   */
  static overIo(io: BackendIo, options: VxlanBackendOptions): VxlanBackend {
    const mode = checkOptions(options);
    const vtepMac = options.vtepMac === undefined ? randomMac() : parseMac(options.vtepMac);
    const backend: VxlanBackend =
      mode === 'tap'
        ? new VxlanBridge(io.device, io.socket, options, vtepMac)
        : new VxlanVtep(io.device, io.socket, options, vtepMac);
    backend.startPump();
    return backend;
  }

  /** The routes, neighbors and FDB as text, as `ip route`, `ip neigh` and `bridge fdb` show them. */
  dumpTables() {
    return { routes: this.routes.dump(), neighbors: this.neighbors.dump(), fdb: this.fdb.dump() };
  }

  /** The tables a node set becomes, in this mode. */
  protected abstract tablesFor(nodes: readonly ParsedNode[]): {
    routes: RouteInput[];
    neighbors: NeighborInput[];
    fdb: FdbEntryInput[];
  };

  protected install(nodes: readonly ParsedNode[]): void {
    const { routes, neighbors, fdb } = this.tablesFor(nodes);
    // Validate all three before changing any: the table snapshots below cannot fail after this.
    new RouteTable().applySnapshot(routes);
    new NeighborTable().applySnapshot(neighbors);
    new Fdb({ defaultPort: this.peerPort, defaultVni: this.vni }).applySnapshot(fdb);
    this.routes.applySnapshot(routes);
    this.neighbors.applySnapshot(neighbors);
    this.fdb.applySnapshot(fdb);
  }

  protected override extraSources(): readonly string[] {
    return this.fdb.defaults.map((e) => formatIp(e.remote));
  }

  protected override addTableCounters(snapshot: CounterSnapshot): void {
    snapshot.neighborsOverflow = this.neighbors.overflows;
    snapshot.fdbOverflow = this.fdb.overflows;
  }

  /** Queues a datagram to an FDB entry's VTEP; false when the underlay family does not match the socket. */
  protected queue(
    n: number,
    slab: number,
    start: number,
    length: number,
    entry: FdbEntry,
  ): boolean {
    if (entry.remote4 >= 0) {
      if (this.socket.family !== 4) return false;
      this.toUdp.set4(n, slab, start, length, entry.remote4 | 0, entry.port);
      return true;
    }
    if (this.socket.family !== 6) return false;
    this.toUdp.set6(n, slab, start, length, entry.remote.address as Uint8Array, 0, entry.port);
    return true;
  }

  /** Stops the tables' upkeep, then as {@link Backend.close}. */
  override close(): void {
    clearInterval(this.upkeep);
    super.close();
  }
}

/**
 * TUN mode, flannel's model: an inner packet's destination is routed to a next hop (the remote
 * VTEP address, e.g. 10.244.2.0), whose neighbor entry gives the VTEP MAC, whose FDB entry gives
 * the underlay address; the inner Ethernet and VXLAN headers are written into the headroom and the
 * datagram is sent. Received frames are checked (VNI, inner destination MAC, VLAN tag, inner
 * source within the sending node's subnet), stripped and written to the TUN; ARP requests for our
 * VTEP address are answered over VXLAN and their senders learned (within bounds), so a kernel peer
 * without a static neighbor entry can still reach us.
 */
export class VxlanVtep extends VxlanBackend {
  readonly mode = 'tun' as const;
  protected readonly needs: { subnet: boolean; vtepMac: boolean };
  /** Whether this VTEP has an IPv4 address (an IPv6 VTEP, flannel-v6.<VNI>, has none). */
  private readonly carries4: boolean;
  private readonly icmpSource4: number;
  private readonly ownAddresses: NeighborInput[];
  /** The inner destination MAC (as words) of the super-packet being segmented. */
  private segmentMacHigh = 0;
  private segmentMacLow = 0;
  private segmentEthertype: number = EtherType.ipv4;
  /** Descriptors queued by inboundDatagram without offloads. */
  private inboundCount = 0;

  constructor(tun: DeviceIo, socket: UdpIo, options: VxlanBackendOptions, vtepMac: number) {
    super(tun, socket, options, vtepMac, options.batch ?? 64, true);
    // An IPv6 VTEP's nodes have subnet6 only (tablesFor checks each has a subnet it can use).
    this.needs = { subnet: options.vtepAddress6 === undefined, vtepMac: true };
    this.carries4 = options.vtepAddress !== undefined;
    const network = options.network === undefined ? undefined : parseCidr(options.network);
    const source = options.icmpSource === undefined ? undefined : parseIp(options.icmpSource);
    this.icmpSource4 =
      source?.family === 4 ? source.address : network?.family === 4 ? network.address : -1;
    const mac = formatMac(vtepMac);
    this.ownAddresses = [];
    if (options.vtepAddress) this.ownAddresses.push({ ip: options.vtepAddress, mac, proxy: true });
    if (options.vtepAddress6)
      this.ownAddresses.push({ ip: options.vtepAddress6, mac, proxy: true });
    this.neighbors.applySnapshot(this.ownAddresses);
  }

  /** Exactly what flannel installs per remote node: route via its VTEP address, permanent neighbor, FDB entry. */
  protected tablesFor(nodes: readonly ParsedNode[]) {
    const routes: RouteInput[] = [];
    const neighbors: NeighborInput[] = [...this.ownAddresses];
    const fdb: FdbEntryInput[] = [];
    for (const n of nodes) {
      const port = n.port ?? this.peerPort;
      const underlay = n.input.publicIp;
      // IPv4 entries where this VTEP has an IPv4 address; IPv6 ones for every node with subnet6.
      const v4 = this.carries4 && n.subnet !== undefined && n.vtepAddress !== undefined;
      const v6 = n.subnet6 !== undefined && n.vtepAddress6 !== undefined;
      if (!v4 && !v6)
        throw new WeftError(
          DataplaneErrorCode.badNode,
          `remote node ${n.input.name ?? n.key}: ${this.carries4 ? 'subnet' : 'subnet6'} is required: this VTEP carries IPv${this.carries4 ? 4 : 6}`,
        );
      if (v4) {
        routes.push({ dst: n.subnet!, via: n.vtepAddress, underlay, port, tag: n.input.name });
        neighbors.push({ ip: n.vtepAddress!, mac: n.vtepMac! });
      }
      if (v6) {
        routes.push({ dst: n.subnet6!, via: n.vtepAddress6, underlay, port, tag: n.input.name });
        neighbors.push({ ip: n.vtepAddress6!, mac: n.vtepMac! });
      }
      fdb.push({ mac: n.vtepMac!, dst: underlay, port, vni: this.vni });
    }
    return { routes, neighbors, fdb };
  }

  /** Writes the VXLAN and inner Ethernet headers (22 bytes) at `start`. */
  private encap(buf: Buffer, start: number, macHigh: number, macLow: number, type: number): void {
    writeVxlanHeader(buf, start, this.vni);
    const eth = start + VXLAN_HEADER_BYTES;
    writeMacWords(buf, eth, macHigh, macLow);
    writeMacWords(buf, eth + 6, this.macHigh, this.macLow);
    write16(buf, eth + 12, type);
  }

  protected override writeSegmentPrefix(out: Buffer, at: number): void {
    this.encap(out, at, this.segmentMacHigh, this.segmentMacLow, this.segmentEthertype);
  }

  protected outbound(count: number): number {
    const ring = this.deviceRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const routes = this.routes;
    const neighbors = this.neighbors;
    const fdb = this.fdb;
    const h = this.deviceHeaderBytes;
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
      let neighbor: NeighborEntry | undefined;
      let ethertype: number;
      if (version === 4) {
        const status = ipv4Check(slab, off, len);
        if (status !== Status.ok) {
          c[dropFor(status)]++;
          continue;
        }
        const dst = readInt32(slab, off + Ipv4Field.dst);
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
        neighbor = neighbors.entry4(hop.gateway4 >= 0 ? hop.gateway4 | 0 : dst);
        ethertype = EtherType.ipv4;
      } else if (version === 6) {
        const status = ipv6Check(slab, off, len);
        if (status !== Status.ok) {
          c[dropFor(status)]++;
          continue;
        }
        const hop = routes.lookup6(slab, off + Ipv6Field.dst);
        if (hop === undefined) {
          c[Counter.dropNoRoute]++;
          continue;
        }
        neighbor =
          hop.gateway?.family === 6
            ? neighbors.entry6(hop.gateway.address, 0)
            : neighbors.entry6(slab, off + Ipv6Field.dst);
        ethertype = EtherType.ipv6;
      } else {
        c[Counter.dropUnsupported]++;
        continue;
      }
      if (neighbor === undefined) {
        c[Counter.dropNoNeighbor]++;
        continue;
      }
      // The MAC as words: small integers cross calls unboxed, a 48-bit number would not.
      const mac = neighbor.mac;
      const macHigh = Math.floor(mac / 0x100000000);
      const macLow = mac | 0;
      const entry = fdb.lookupWords(macHigh, macLow);
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
        this.segmentMacHigh = macHigh;
        this.segmentMacLow = macLow;
        this.segmentEthertype = ethertype;
        n = this.queueSegments(
          slab,
          off,
          len,
          VXLAN_ENCAP_HEADROOM,
          false,
          entry.remote4 | 0,
          entry.remote4 >= 0 ? undefined : (entry.remote.address as Uint8Array),
          entry.port,
          n,
        );
        continue;
      }
      const start = off - VXLAN_ENCAP_HEADROOM;
      this.encap(slab, start, macHigh, macLow, ethertype);
      if (!this.queue(n, UdpSlab.deviceRing, start, len + VXLAN_ENCAP_HEADROOM, entry)) {
        c[Counter.dropUnsupported]++;
        continue;
      }
      n++;
      c[Counter.txPackets]++;
      c[Counter.txBytes] += len;
    }
    this.finishSegments();
    this.sendDeviceReplies(replies);
    return n;
  }

  protected inbound(count: number): number {
    const ring = this.udpRing;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const dropUnknown = this.dropUnknownSources;
    const gatherer = this.gatherer;
    this.inboundCount = 0;
    gatherer?.reset();
    let replies = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      if (len <= 0) {
        c[Counter.dropTruncated]++;
        continue;
      }
      const node = this.sourceOf(i);
      if (node === undefined && dropUnknown) {
        c[Counter.dropUnknownSource] += this.datagramsIn(i, len);
        continue;
      }
      const base = i * stride + headroom;
      // With UDP GRO one slot may hold several datagrams of ring.gso[i] bytes each.
      const step = ring.gso[i] > 0 ? ring.gso[i] : len;
      for (let at = 0; at < len; at += step)
        replies += this.inboundDatagram(i, node, base + at, Math.min(step, len - at), replies);
    }
    this.sendUdpReplies(replies);
    return gatherer ? gatherer.finish(ring.slab) : this.inboundCount;
  }

  /**
   * One received VXLAN datagram from `node` (undefined: a stranger, let in by
   * dropUnknownSources: false): checked, stripped, queued for the TUN. Returns 1 if it queued an
   * ARP reply.
   */
  private inboundDatagram(
    i: number,
    node: SourceNode | undefined,
    off: number,
    len: number,
    replies: number,
  ): number {
    const slab = this.udpRing.slab;
    const c = this.counts;
    const status = vxlanCheck(slab, off, len, this.vni);
    if (status !== Status.ok) {
      c[dropFor(status)]++;
      return 0;
    }
    const inner = off + VXLAN_HEADER_BYTES;
    // An L3 VTEP takes frames to its own MAC or to a group address.
    if (
      (slab[inner] & 1) === 0 &&
      (read16(slab, inner) !== this.macHigh || readInt32(slab, inner + 2) !== this.macLow)
    ) {
      c[Counter.dropWrongDstMac]++;
      return 0;
    }
    let type = read16(slab, inner + 12);
    let pkt = inner + ETHERNET_HEADER_BYTES;
    if (isVlanTag(type)) {
      // RFC 7348 6.1: inner VLAN tags are dropped unless configured otherwise; never read past one.
      if (!this.acceptVlan) {
        c[Counter.dropVlanTagged]++;
        return 0;
      }
      if (len - VXLAN_HEADER_BYTES < ETHERNET_VLAN_HEADER_BYTES) {
        c[Counter.dropTruncated]++;
        return 0;
      }
      type = read16(slab, inner + 16);
      pkt = inner + ETHERNET_VLAN_HEADER_BYTES;
      if (isVlanTag(type)) {
        c[Counter.dropVlanTagged]++;
        return 0;
      }
    }
    const pktLen = off + len - pkt;
    const checkInner = this.checkInnerSource && node !== undefined;
    let total: number;
    if (type === EtherType.ipv4) {
      const s = ipv4Check(slab, pkt, pktLen);
      if (s !== Status.ok) {
        c[dropFor(s)]++;
        return 0;
      }
      if (checkInner && !node.owns4(readInt32(slab, pkt + Ipv4Field.src))) {
        c[Counter.dropSpoofedInner]++;
        return 0;
      }
      total = ipv4TotalLength(slab, pkt);
    } else if (type === EtherType.ipv6) {
      const s = ipv6Check(slab, pkt, pktLen);
      if (s !== Status.ok) {
        c[dropFor(s)]++;
        return 0;
      }
      if (checkInner && !node.owns6(slab, pkt + Ipv6Field.src)) {
        c[Counter.dropSpoofedInner]++;
        return 0;
      }
      total = IPV6_HEADER_BYTES + ipv6PayloadLength(slab, pkt);
    } else if (type === EtherType.arp && pkt === inner + ETHERNET_HEADER_BYTES) {
      return this.handleArp(i, node, off, len, replies);
    } else {
      c[Counter.dropUnsupported]++;
      return 0;
    }
    const gatherer = this.gatherer;
    // Offloads: the gatherer checks, groups and counts the batch's packets when it ends.
    if (gatherer) {
      gatherer.add(type === EtherType.ipv4 ? 4 : 6, slab, pkt, total);
      return 0;
    }
    this.toDevice.setLocal(this.inboundCount++, DeviceSlab.udpRing, pkt, total);
    c[Counter.rxPackets]++;
    c[Counter.rxBytes] += total;
    return 0;
  }

  /**
   * An ARP message over VXLAN: the sender is learned (IP -> MAC in the neighbor table, MAC ->
   * underlay address in the FDB) only when its address lies in the sending node's own subnet;
   * with checkInnerSource, any other sender is dropped as spoofed. A request for an address we
   * own is answered, in place, back to the sender's VTEP. Returns 1 when a reply was queued.
   */
  private handleArp(
    i: number,
    node: SourceNode | undefined,
    off: number,
    len: number,
    j: number,
  ): number {
    const slab = this.udpRing.slab;
    const inner = off + VXLAN_HEADER_BYTES;
    const arpOff = inner + ETHERNET_HEADER_BYTES;
    const c = this.counts;
    const status = arpCheck(slab, arpOff, len - VXLAN_HEADER_BYTES - ETHERNET_HEADER_BYTES);
    if (status !== Status.ok) {
      c[dropFor(status)]++;
      return 0;
    }
    const senderIp = arpSenderIp(slab, arpOff) | 0;
    const ownSubnet = node?.owns4(senderIp) === true;
    if (!ownSubnet && this.checkInnerSource && node !== undefined) {
      c[Counter.dropSpoofedInner]++;
      return 0;
    }
    c[Counter.arpReceived]++;
    const fromV4 = this.udpRing.families[i] === 4;
    const source4 = this.udpRing.addrs[i * 4];
    const senderMac = arpSenderMac(slab, arpOff);
    if (ownSubnet && senderMac !== 0 && fromV4) {
      this.neighbors.learn4(senderIp, senderMac);
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
}

/**
 * TAP mode, an L2 segment: frames from the TAP go by the FDB (broadcast, multicast and unknown
 * unicast to every default destination, replicated without copying); received frames teach the
 * FDB their source MAC unless a static entry exists. With offloads, a TSO frame from the TAP is
 * cut once, by gathering: each segment's headers (VXLAN, the frame's Ethernet header with its
 * tags, IPv4, TCP) in staging, its payload where the read put it; its segments go as UDP GSO
 * sends to each destination, all gathered from the same pieces. Received segments (and, with
 * coalesceUdp, UDP datagrams) of a flow are written to the TAP as one GSO frame, gathered
 * likewise (headers staged, payloads in place).
 *
 * checkInnerSource, on an L2 segment: the nodes share the segment's IP subnet, so there is no
 * per-node range to hold an inner IP source to; the check is on the inner source MAC instead. A
 * frame whose source is a group address, our own VTEP MAC, or a MAC the FDB statically places
 * behind another VTEP is dropped as spoofedInner (the kernel's VXLAN drops the same ones when it
 * learns: a loop, and a static entry it will not migrate). Learned MACs move with their frames.
 */
export class VxlanBridge extends VxlanBackend {
  readonly mode = 'tap' as const;
  protected readonly needs = { subnet: false, vtepMac: false };
  private readonly learning: boolean;
  /** Descriptors queued by inboundFrame without offloads. */
  private rxCount = 0;
  /**
   * The UDP ring slot and inner source MAC (as words) last checked and learned this batch: the
   * datagrams of one GRO slot mostly share both, and the tables do not change within a batch.
   */
  private seenSlot = -1;
  private seenHigh = 0;
  private seenLow = 0;

  constructor(tun: DeviceIo, socket: UdpIo, options: VxlanBackendOptions, vtepMac: number) {
    // Floods are replicated to every default destination: room for several per frame. With
    // offloads, two descriptors (header, payload) per segment and destination: room for a batch
    // of frames cut as finely as may be (128 segments) to two destinations, of 45-segment frames
    // (a 1500-byte MTU) to five; beyond it, segments are dropped and counted as send errors.
    const batch = options.batch ?? 64;
    const capacity = options.offload
      ? Math.min(batch * SEGMENTS_PER_SLOT * 4, 65_536 - batch)
      : batch * 8;
    super(tun, socket, options, vtepMac, capacity, true, ETHERNET_HEADER_BYTES);
    this.learning = options.learning ?? true;
  }

  protected override writeSegmentPrefix(out: Buffer, at: number): void {
    writeVxlanHeader(out, at, this.vni);
  }

  /** Each node is a flood destination (and its VTEP MAC, when known, a static entry). */
  protected tablesFor(nodes: readonly ParsedNode[]) {
    const fdb: FdbEntryInput[] = [];
    for (const n of nodes) {
      const port = n.port ?? this.peerPort;
      const underlay = n.input.publicIp;
      fdb.push({ mac: '00:00:00:00:00:00', dst: underlay, port, vni: this.vni });
      if (n.vtepMac) fdb.push({ mac: n.vtepMac, dst: underlay, port, vni: this.vni });
    }
    return { routes: [], neighbors: [], fdb };
  }

  protected outbound(count: number): number {
    const ring = this.deviceRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const fdb = this.fdb;
    const vni = this.vni;
    const h = this.deviceHeaderBytes;
    const capacity = this.udpReplyBase;
    let n = 0;
    this.txPos = 0;
    for (let i = 0; i < count; i++) {
      const base = i * stride + headroom;
      const gso = this.devicePacket(slab, base, lengths[i]);
      if (gso < 0) continue;
      const off = base + h;
      const len = lengths[i] - h;
      if (len < ETHERNET_HEADER_BYTES) {
        c[Counter.dropTruncated]++;
        continue;
      }
      // RFC 7348 6.1: no inner VLAN tag on tunnel packets unless configured otherwise.
      if (!this.acceptVlan && isVlanTag(read16(slab, off + 12))) {
        c[Counter.dropVlanTagged]++;
        continue;
      }
      const dests = fdb.destinationsAt(slab, off);
      if (dests.length === 0) {
        c[Counter.dropNoFdb]++;
        continue;
      }
      if (gso !== 0) {
        n = this.queueFrameSegments(slab, off, len, dests, n);
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
    this.finishSegments();
    return n;
  }

  /**
   * Offloads: cuts the TSO frame at slab[off] once (headers to staging, payloads in place) and
   * queues its segments, as UDP GSO sends, to every destination (head-end replication over the
   * same pieces). Returns the next free descriptor index.
   */
  private queueFrameSegments(
    slab: Buffer,
    off: number,
    len: number,
    dests: readonly FdbEntry[],
    n: number,
  ): number {
    const c = this.counts;
    const link = frameIpOffset(slab, off, len);
    if (link < 0) {
      c[Counter.dropUnsupported]++;
      return n;
    }
    const count = this.cutSegments(slab, off + link, len - link, VXLAN_HEADER_BYTES, link, false);
    if (count === 0) return n;
    for (let d = 0; d < dests.length; d++) {
      const e = dests[d];
      if (e.remote4 >= 0 ? this.socket.family !== 4 : this.socket.family !== 6) {
        c[Counter.dropUnsupported]++;
        continue;
      }
      n = this.queueCut(
        n,
        e.remote4 | 0,
        e.remote4 >= 0 ? undefined : (e.remote.address as Uint8Array),
        e.port,
      );
    }
    this.countCut(VXLAN_HEADER_BYTES);
    return n;
  }

  protected inbound(count: number): number {
    const ring = this.udpRing;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const dropUnknown = this.dropUnknownSources;
    this.rxCount = 0;
    this.seenSlot = -1;
    const gatherer = this.gatherer;
    gatherer?.reset();
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      if (len <= 0) {
        c[Counter.dropTruncated]++;
        continue;
      }
      if (dropUnknown && this.sourceOf(i) === undefined) {
        c[Counter.dropUnknownSource] += this.datagramsIn(i, len);
        continue;
      }
      const base = i * stride + headroom;
      // With UDP GRO one slot may hold several datagrams of ring.gso[i] bytes each.
      const step = ring.gso[i] > 0 ? ring.gso[i] : len;
      for (let at = 0; at < len; at += step)
        this.inboundFrame(i, base + at, Math.min(step, len - at));
    }
    // Offloads: the gatherer checks, groups and counts the batch's frames.
    return gatherer ? gatherer.finish(ring.slab) : this.rxCount;
  }

  /** One received VXLAN datagram from UDP ring slot i: checked, its source learned, queued for the TAP. */
  private inboundFrame(i: number, off: number, len: number): void {
    const ring = this.udpRing;
    const slab = ring.slab;
    const c = this.counts;
    const status = vxlanCheck(slab, off, len, this.vni);
    if (status !== Status.ok) {
      c[dropFor(status)]++;
      return;
    }
    const inner = off + VXLAN_HEADER_BYTES;
    const innerLen = len - VXLAN_HEADER_BYTES;
    if (!this.acceptVlan && isVlanTag(read16(slab, inner + 12))) {
      c[Counter.dropVlanTagged]++;
      return;
    }
    const src = inner + 6;
    const high = read16(slab, src);
    const low = readInt32(slab, src + 2);
    if (i !== this.seenSlot || high !== this.seenHigh || low !== this.seenLow) {
      if (this.checkInnerSource && this.spoofedSource(i, slab, src)) {
        c[Counter.dropSpoofedInner]++;
        return;
      }
      if (this.learning && ring.families[i] === 4)
        this.fdb.learn4At(slab, src, ring.addrs[i * 4] | 0, this.peerPort, this.vni);
      this.seenSlot = i;
      this.seenHigh = high;
      this.seenLow = low;
    }
    const gatherer = this.gatherer;
    if (gatherer) {
      gatherer.add(frameIpFamily(slab, inner, innerLen), slab, inner, innerLen);
      return;
    }
    this.toDevice.setLocal(this.rxCount++, DeviceSlab.udpRing, inner, innerLen);
    c[Counter.rxPackets]++;
    c[Counter.rxBytes] += innerLen;
  }

  /**
   * Hot path: whether the inner source MAC at slab[src] cannot be the sender's: a group address,
   * our own VTEP MAC, or a MAC statically placed behind a VTEP other than UDP ring slot i's source.
   */
  private spoofedSource(i: number, slab: Buffer, src: number): boolean {
    if ((slab[src] & 1) !== 0) return true;
    const high = read16(slab, src);
    const low = readInt32(slab, src + 2);
    if (high === this.macHigh && low === this.macLow) return true;
    const entry = this.fdb.lookupWords(high, low);
    if (entry === undefined || !entry.isStatic) return false;
    const ring = this.udpRing;
    if (ring.families[i] === 4) return entry.remote4 !== ring.addrs[i * 4];
    if (entry.remote4 >= 0) return true;
    const a = entry.remote.address as Uint8Array;
    for (let w = 0; w < 4; w++) {
      const word = ring.addrs[i * 4 + w];
      if (
        a[w * 4] !== word >>> 24 ||
        a[w * 4 + 1] !== ((word >>> 16) & 0xff) ||
        a[w * 4 + 2] !== ((word >>> 8) & 0xff) ||
        a[w * 4 + 3] !== (word & 0xff)
      )
        return true;
    }
    return false;
  }
}
