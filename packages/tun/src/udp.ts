import { parseIp } from '@weft/core';
import { netnsPath, toWeftError } from './errors.js';
import { BatchIo } from './io.js';
import { HandleKind, type NativeHandle, native } from './native.js';
import type { PacketRing } from './ring.js';

export interface UdpOpenOptions {
  /** Local address to bind (default `0.0.0.0`; an IPv6 address makes an IPv6-only socket). */
  address?: string;
  /** Local port (default 0: the kernel picks one; read it back from `port`). */
  port?: number;
  /** SO_REUSEPORT, for one socket per worker thread. */
  reusePort?: boolean;
  /** The network namespace (a name under /run/netns, or a path) to open the socket in. */
  netns?: string;
  /** SO_RCVBUF / SO_SNDBUF in bytes; as root the FORCE variants pass the sysctl limits. */
  receiveBufferBytes?: number;
  sendBufferBytes?: number;
  /** UDP_GRO: let the kernel coalesce datagrams of a flow; ring.gso says the segment size. */
  gro?: boolean;
  /**
   * Send every datagram with DF set, UDP GSO segments included, as flannel's UDP proxy does
   * (IP_MTU_DISCOVER = IP_PMTUDISC_DO; on IPv6, IPV6_PMTUDISC_DO: never fragment locally). A
   * datagram larger than the path MTU then fails with EMSGSIZE (counted in sendErrors) instead
   * of leaving in fragments. Default false: the kernel's default (DF on plain datagrams that
   * fit, but not on GSO segments).
   */
  dontFragment?: boolean;
}

/** A UDP socket with batched receive (recvmmsg) and send (sendmmsg), on Node's loop. */
export class UdpSocket extends BatchIo {
  readonly family: 4 | 6;
  readonly address: string;
  readonly port: number;

  private constructor(handle: NativeHandle, family: 4 | 6, address: string, port: number) {
    super(handle);
    this.family = family;
    this.address = address;
    this.port = port;
  }

  static open(options: UdpOpenOptions = {}): UdpSocket {
    const address = options.address ?? '0.0.0.0';
    const ip = parseIp(address);
    const bytes = ip.family === 4 ? Buffer.alloc(4) : Buffer.from(ip.address);
    if (ip.family === 4) bytes.writeUInt32BE(ip.address);
    const n = native();
    let opened: { fd: number; port: number };
    try {
      opened = n.openUdp(
        ip.family,
        bytes,
        options.port ?? 0,
        options.reusePort ?? false,
        netnsPath(options.netns),
      );
    } catch (err) {
      throw toWeftError(
        err,
        `opening UDP socket on ${ip.family === 6 ? `[${address}]` : address}:${options.port ?? 0}`,
      );
    }
    const socket = new UdpSocket(
      new n.Handle(opened.fd, ip.family === 4 ? HandleKind.udp4 : HandleKind.udp6),
      ip.family,
      address,
      opened.port,
    );
    try {
      if (options.receiveBufferBytes) socket.setReceiveBuffer(options.receiveBufferBytes);
      if (options.sendBufferBytes) socket.setSendBuffer(options.sendBufferBytes);
      if (options.gro) socket.setOption('udpGro', 1);
      if (options.dontFragment) {
        const c = n.constants;
        if (ip.family === 4) socket.setOption('ipMtuDiscover', c.IP_PMTUDISC_DO);
        else socket.setOption('ipv6MtuDiscover', c.IPV6_PMTUDISC_DO);
      }
    } catch (err) {
      socket.close();
      throw err;
    }
    return socket;
  }

  protected describe(): string {
    return `UDP socket ${this.family === 6 ? `[${this.address}]` : this.address}:${this.port}`;
  }

  protected setRing(h: NativeHandle, ring: PacketRing, slabIndex: number): void {
    h.setReadRing(
      slabIndex,
      ring.slab,
      ring.stride,
      ring.headroom,
      ring.slots,
      ring.lengths,
      ring.addrs,
      ring.ports,
      ring.families,
      ring.gso,
    );
  }

  private setOption(name: string, value: number): void {
    try {
      native().setSocketOption(this.live().fd, name, value);
    } catch (err) {
      throw toWeftError(err, `setting ${name} on UDP socket :${this.port}`);
    }
  }

  /** Sets SO_RCVBUF; as root SO_RCVBUFFORCE, which may exceed net.core.rmem_max. */
  setReceiveBuffer(bytes: number): void {
    this.setOption(process.getuid?.() === 0 ? 'rcvbufforce' : 'rcvbuf', bytes);
  }

  setSendBuffer(bytes: number): void {
    this.setOption(process.getuid?.() === 0 ? 'sndbufforce' : 'sndbuf', bytes);
  }

  /** Whether datagrams leave with DF set (see UdpOpenOptions.dontFragment). */
  get dontFragment(): boolean {
    const c = native().constants;
    return this.family === 4
      ? native().getSocketOption(this.live().fd, 'ipMtuDiscover') === c.IP_PMTUDISC_DO
      : native().getSocketOption(this.live().fd, 'ipv6MtuDiscover') === c.IPV6_PMTUDISC_DO;
  }

  /** The kernel's figure (it doubles what was asked, for bookkeeping). */
  get receiveBufferBytes(): number {
    return native().getSocketOption(this.live().fd, 'rcvbuf');
  }

  get sendBufferBytes(): number {
    return native().getSocketOption(this.live().fd, 'sndbuf');
  }
}
