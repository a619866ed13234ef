import { formatCidr, parseCidr, parseIpv4, WeftError } from '@weft/core';
import {
  FLANNEL_UDP_PORT,
  flannelTtlStep,
  IcmpCode,
  IcmpType,
  ipv4Check,
  ipv4DecrementTtl,
  ipv4Dst,
  ipv4TotalLength,
  overlayMtu,
  Status,
  writeIcmpv4Error,
} from '@weft/encap';
import { RouteTable } from '@weft/fdb';
import { TunDevice, UdpSocket } from '@weft/tun';
import { Backend, type BackendIo, type CommonBackendOptions, type DeviceIo } from './backend.js';
import { Counter } from './counters.js';
import { DataplaneErrorCode, type ParsedNode } from './nodes.js';
import { DeviceSlab, SCRATCH_STRIDE, type UdpIo, UdpSlab } from './pump.js';

export interface UdpBackendOptions extends CommonBackendOptions {
  /** This node's overlay address, put on the device as a /32 (flannel: the lease's first address, 10.244.1.0). */
  nodeAddress: string;
  /** The cluster network routed into the device, e.g. 10.244.0.0/16. */
  network: string;
  /** The UDP port, ours and the peers' (default 8285, flannel's). */
  port?: number;
  /** TTL of ICMP errors written back to the local kernel (flannel's proxy uses 8). */
  icmpTtl?: number;
  /**
   * Source of ICMP errors written back to the local kernel. Default: the cluster network's first
   * address (10.244.0.0), which no node owns. flannel's proxy uses the node's own address, which
   * the node's kernel then drops as a martian (a packet arriving from one of its own addresses).
   */
  icmpSource?: string;
}

/** ICMP error status codes map to the counter that names the drop. */
function dropFor(status: number): number {
  if (status === Status.truncated) return Counter.dropTruncated;
  if (status === Status.ttlExpired) return Counter.dropTtl;
  return Counter.dropBadHeader;
}

/**
 * flannel's legacy `udp` backend, byte for byte: the bare inner IPv4 packet is the UDP payload,
 * from and to port 8285; the TTL is decremented (checksum patched, RFC 1624) when a packet leaves
 * the TUN and again when one arrives; an unrouted destination gets ICMP net unreachable written
 * back into the TUN. MTU = underlay MTU - 28.
 */
export class UdpBackend extends Backend {
  readonly type = 'udp' as const;
  protected readonly needs = { subnet: true, vtepMac: false };
  readonly routes = new RouteTable();
  private readonly icmpSource4: number;
  private readonly peerPort: number;
  private readonly icmpTtl: number;

  private constructor(
    tun: DeviceIo,
    socket: UdpIo,
    options: UdpBackendOptions,
    icmpSource4: number,
  ) {
    super(tun, socket, options);
    this.icmpSource4 = icmpSource4;
    this.peerPort = options.port ?? FLANNEL_UDP_PORT;
    this.icmpTtl = options.icmpTtl ?? 64;
  }

  static open(options: UdpBackendOptions): UdpBackend {
    parseIpv4(options.nodeAddress);
    const network = parseCidr(options.network);
    if (network.family !== 4)
      throw new WeftError(
        DataplaneErrorCode.badOption,
        `network ${options.network}: flannel's udp backend carries IPv4 only`,
      );
    if (options.icmpSource !== undefined) parseIpv4(options.icmpSource);
    const mtu = overlayMtu(options.underlayMtu ?? 1500, 'flannel-udp');
    const tun = TunDevice.open({ name: options.deviceName ?? 'weft%d', netns: options.netns });
    let socket: UdpSocket | undefined;
    try {
      tun.setMtu(mtu);
      // IPv4 only: no IPv6 link-local chatter (router solicitations, MLD) into the pump.
      tun.disableIpv6();
      tun.addAddress(`${options.nodeAddress}/32`);
      tun.up();
      tun.addRoute(formatCidr(network));
      socket = UdpSocket.open({
        address: options.publicIp ?? '0.0.0.0',
        port: options.port ?? FLANNEL_UDP_PORT,
        netns: options.netns,
        receiveBufferBytes: options.socketBufferBytes ?? 4 << 20,
        sendBufferBytes: options.socketBufferBytes ?? 4 << 20,
      });
      return UdpBackend.overIo({ device: tun, socket }, options);
    } catch (err) {
      socket?.close();
      tun.close();
      throw err;
    }
  }

  dumpTables() {
    return { routes: this.routes.dump() };
  }

  /**
   * Runs the backend over given I/O instead of a TUN device and socket it opens itself (the
   * device is not configured): for simulations, and for benchmarks without system calls.
   */
  static overIo(io: BackendIo, options: UdpBackendOptions): UdpBackend {
    const network = parseCidr(options.network);
    const icmpSource4 =
      options.icmpSource === undefined
        ? (network.address as number)
        : parseIpv4(options.icmpSource);
    const backend = new UdpBackend(io.device, io.socket, options, icmpSource4);
    backend.startPump();
    return backend;
  }

  protected install(nodes: readonly ParsedNode[]): void {
    this.routes.applySnapshot(
      nodes.map((n) => ({
        dst: n.subnet!,
        underlay: n.input.publicIp,
        port: n.port ?? this.peerPort,
        tag: n.input.name,
      })),
    );
  }

  protected outbound(count: number): number {
    const ring = this.deviceRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const routes = this.routes;
    const table = this.toUdp;
    let n = 0;
    let replies = 0;
    for (let i = 0; i < count; i++) {
      const off = i * stride + headroom;
      const len = lengths[i];
      if ((slab[off] & 0xf0) !== 0x40) {
        c[Counter.dropUnsupported]++; // flannel's udp backend carries IPv4 only
        continue;
      }
      const status = ipv4Check(slab, off, len);
      if (status !== Status.ok) {
        c[dropFor(status)]++;
        continue;
      }
      const hop = routes.lookup4(ipv4Dst(slab, off));
      if (hop === undefined || hop.underlay4 < 0) {
        c[Counter.dropNoRoute]++;
        replies += this.icmpError(
          off,
          len,
          replies,
          IcmpType.destinationUnreachable,
          IcmpCode.netUnreachable,
        );
        continue;
      }
      if (ipv4DecrementTtl(slab, off) !== Status.ok) {
        c[Counter.dropTtl]++;
        replies += this.icmpError(off, len, replies, IcmpType.timeExceeded, IcmpCode.ttlExceeded);
        continue;
      }
      table.set4(n++, UdpSlab.deviceRing, off, len, hop.underlay4, hop.port);
      c[Counter.txPackets]++;
      c[Counter.txBytes] += len;
    }
    this.sendDeviceReplies(replies);
    return n;
  }

  /** Builds an ICMP error about the packet at `off` into scratch slot j; returns 1 if one was built. */
  private icmpError(off: number, len: number, j: number, type: number, code: number): number {
    if (j >= this.batch) return 0;
    const at = j * SCRATCH_STRIDE;
    const written = writeIcmpv4Error(
      this.scratch,
      at,
      this.deviceRing.slab,
      off,
      len,
      type,
      code,
      this.icmpSource4,
      this.icmpTtl,
    );
    if (written === 0) return 0;
    this.toDevice.setLocal(this.batch + j, DeviceSlab.scratch, at, written);
    this.counts[Counter.icmpErrorsSent]++;
    return 1;
  }

  protected inbound(count: number): number {
    const ring = this.udpRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const table = this.toDevice;
    const checkSource = this.dropUnknownSources;
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
      const status = flannelTtlStep(slab, off, len);
      if (status !== Status.ok) {
        c[dropFor(status)]++;
        continue;
      }
      const total = ipv4TotalLength(slab, off);
      table.setLocal(n++, DeviceSlab.udpRing, off, total);
      c[Counter.rxPackets]++;
      c[Counter.rxBytes] += total;
    }
    return n;
  }
}
