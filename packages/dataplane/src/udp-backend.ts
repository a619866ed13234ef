import { closeSync } from 'node:fs';
import { formatCidr, parseCidr, parseIpv4, WeftError } from '@weft/core';
import {
  FLANNEL_UDP_PORT,
  flannelTtlStep,
  IcmpCode,
  IcmpType,
  Ipv4Field,
  ipv4Check,
  ipv4DecrementTtl,
  ipv4TotalLength,
  overlayMtu,
  readInt32,
  Status,
} from '@weft/encap';
import { RouteTable } from '@weft/fdb';
import {
  Backend,
  type BackendIo,
  type CommonBackendOptions,
  checkCommonOptions,
  type DeviceIo,
  openBackendIo,
} from './backend.js';
import { Counter, dropFor } from './counters.js';
import { DataplaneErrorCode, type ParsedNode } from './nodes.js';
import { DeviceSlab, type UdpIo, UdpSlab } from './pump.js';

/** Options of {@link UdpBackend.open}. */
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

/**
 * flannel's legacy `udp` backend, byte for byte: the bare inner IPv4 packet is the UDP payload,
 * from and to port 8285; the TTL is decremented (checksum patched, RFC 1624) when a packet leaves
 * the TUN and again when one arrives; an unrouted destination gets ICMP net unreachable written
 * back into the TUN. MTU = underlay MTU - 28.
 */
export class UdpBackend extends Backend {
  readonly type = 'udp' as const;
  protected readonly needs = { subnet: true, vtepMac: false };
  /** Each node's subnet, routed to its public IP. */
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
    super(tun, socket, options, true);
    this.icmpSource4 = icmpSource4;
    this.peerPort = options.port ?? FLANNEL_UDP_PORT;
    this.icmpTtl = options.icmpTtl ?? 64;
  }

  /** Opens the TUN device (MTU, address, route to the network) and the socket, and starts. */
  static open(options: UdpBackendOptions): UdpBackend {
    checkCommonOptions(options);
    parseIpv4(options.nodeAddress);
    const network = parseCidr(options.network);
    if (network.family !== 4)
      throw new WeftError(
        DataplaneErrorCode.badOption,
        `network ${options.network}: flannel's udp backend carries IPv4 only`,
      );
    if (options.icmpSource !== undefined) parseIpv4(options.icmpSource);
    const mtu = overlayMtu(options.underlayMtu ?? 1500, 'flannel-udp');
    const io = openBackendIo(
      {
        deviceName: options.deviceName ?? 'weft%d',
        mode: 'tun',
        netns: options.netns,
        offload: options.offload ?? true,
        address: options.publicIp ?? '0.0.0.0',
        port: options.port ?? FLANNEL_UDP_PORT,
        socketBufferBytes: options.socketBufferBytes ?? 4 << 20,
        // flannel's proxy sends every datagram with DF set.
        df: 'set',
        workers: options.workers,
      },
      (tun) => {
        tun.setMtu(mtu);
        // IPv4 only: no IPv6 link-local chatter (router solicitations, MLD) into the pump.
        tun.disableIpv6();
        tun.addAddress(`${options.nodeAddress}/32`);
        tun.up();
        tun.addRoute(formatCidr(network));
      },
    );
    try {
      const resolved = {
        ...options,
        offload: io.offload,
        coalesceUdp: io.coalesceUdp && (options.coalesceUdp ?? true),
      };
      const backend = UdpBackend.overIo(io, resolved);
      backend.startWorkers('udp', resolved, io.workers);
      return backend;
    } catch (err) {
      io.socket.close();
      io.device.close();
      for (const w of io.workers)
        for (const fd of [w.queueFd, w.receive.fd, w.send.fd]) closeSync(fd);
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
    checkCommonOptions(options);
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
    const h = this.deviceHeaderBytes;
    const c = this.counts;
    const routes = this.routes;
    const table = this.toUdp;
    let n = 0;
    let replies = 0;
    this.txPos = 0;
    for (let i = 0; i < count; i++) {
      const base = i * stride + headroom;
      const gso = this.devicePacket(slab, base, lengths[i]);
      if (gso < 0) continue;
      const off = base + h;
      const len = lengths[i] - h;
      if ((slab[off] & 0xf0) !== 0x40) {
        c[Counter.dropUnsupported]++; // flannel's udp backend carries IPv4 only
        continue;
      }
      const status = ipv4Check(slab, off, len);
      if (status !== Status.ok) {
        c[dropFor(status)]++;
        continue;
      }
      const hop = routes.lookup4(readInt32(slab, off + Ipv4Field.dst));
      if (hop === undefined || hop.underlay4 < 0) {
        c[Counter.dropNoRoute]++;
        replies += this.queueIcmpError(
          off,
          len,
          replies,
          IcmpType.destinationUnreachable,
          IcmpCode.netUnreachable,
          this.icmpSource4,
          this.icmpTtl,
        );
        continue;
      }
      if (slab[off + 8] <= 1) {
        c[Counter.dropTtl]++;
        replies += this.queueIcmpError(
          off,
          len,
          replies,
          IcmpType.timeExceeded,
          IcmpCode.ttlExceeded,
          this.icmpSource4,
          this.icmpTtl,
        );
        continue;
      }
      if (gso !== 0) {
        // A TSO super-packet: cut into segments, each one TTL lower, sent in one GSO call.
        n = this.queueSegments(slab, off, len, 0, true, hop.underlay4 | 0, undefined, hop.port, n);
        continue;
      }
      ipv4DecrementTtl(slab, off);
      table.set4(n++, UdpSlab.deviceRing, off, len, hop.underlay4 | 0, hop.port);
      c[Counter.txPackets]++;
      c[Counter.txBytes] += len;
    }
    this.finishSegments();
    this.sendDeviceReplies(replies);
    return n;
  }

  protected inbound(count: number): number {
    const ring = this.udpRing;
    const slab = ring.slab;
    const lengths = ring.lengths;
    const stride = ring.stride;
    const headroom = ring.headroom;
    const c = this.counts;
    const table = this.toDevice;
    const dropUnknown = this.dropUnknownSources;
    const checkInner = this.checkInnerSource;
    const gatherer = this.gatherer;
    let n = 0;
    gatherer?.reset();
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
      for (let at = 0; at < len; at += step) {
        const off = base + at;
        const dlen = Math.min(step, len - at);
        const status = flannelTtlStep(slab, off, dlen);
        if (status !== Status.ok) {
          c[dropFor(status)]++;
          continue;
        }
        if (checkInner && node !== undefined && !node.owns4(readInt32(slab, off + Ipv4Field.src))) {
          c[Counter.dropSpoofedInner]++;
          continue;
        }
        const total = ipv4TotalLength(slab, off);
        // Offloads: the gatherer checks, groups and counts the batch's packets when it ends.
        if (gatherer) {
          gatherer.add(4, slab, off, total);
          continue;
        }
        table.setLocal(n++, DeviceSlab.udpRing, off, total);
        c[Counter.rxPackets]++;
        c[Counter.rxBytes] += total;
      }
    }
    return gatherer ? gatherer.finish(slab) : n;
  }
}
