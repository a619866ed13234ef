import { parseIp, WeftError } from '@weft/core';
import { netnsPath, show, TunErrorCode, toWeftError } from './errors.js';
import { BatchIo } from './io.js';
import { HandleKind, type NativeHandle, native, type SocketOption } from './native.js';
import { Options } from './options.js';
import type { PacketRing } from './ring.js';

/** Options of {@link UdpSocket.open}. */
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
  /** SO_SNDBUF in bytes (SO_SNDBUFFORCE as root). */
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
  /**
   * IPv4: never set DF, on plain datagrams either (IP_MTU_DISCOVER = IP_PMTUDISC_DONT): a
   * datagram larger than the path MTU leaves in fragments, as the kernel's VXLAN sends by default
   * (ip-link's `df unset`). Not with dontFragment; IPv6 has no DF bit.
   */
  clearDontFragment?: boolean;
}

/** Socket buffers: the kernel takes an int and doubles it. */
const MAX_BUFFER_BYTES = 2 ** 30;

function checkBufferBytes(bytes: unknown): void {
  if (!Number.isInteger(bytes) || (bytes as number) < 0 || (bytes as number) > MAX_BUFFER_BYTES)
    throw new WeftError(
      TunErrorCode.badOption,
      `socket buffer size ${show(bytes)} is not valid: use 0 to ${MAX_BUFFER_BYTES} bytes`,
    );
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

  /** Opens and binds a UDP socket for batched I/O (recvmmsg, sendmmsg with GSO). */
  static open(options: UdpOpenOptions = {}): UdpSocket {
    const o = new Options(options, 'UdpSocket.open');
    const address = o.string('address') ?? '0.0.0.0';
    const port = o.integer('port', 0, 65535) ?? 0;
    const reusePort = o.boolean('reusePort') ?? false;
    const netns = netnsPath(o.string('netns'));
    const receiveBufferBytes = o.integer('receiveBufferBytes', 0, MAX_BUFFER_BYTES);
    const sendBufferBytes = o.integer('sendBufferBytes', 0, MAX_BUFFER_BYTES);
    const gro = o.boolean('gro') ?? false;
    const dontFragment = o.boolean('dontFragment') ?? false;
    const clearDontFragment = o.boolean('clearDontFragment') ?? false;
    const ip = parseIp(address);
    if (clearDontFragment && (dontFragment || ip.family === 6))
      throw new WeftError(
        TunErrorCode.badOption,
        dontFragment
          ? 'UdpSocket.open: dontFragment and clearDontFragment ask for opposite things: choose one'
          : 'UdpSocket.open: clearDontFragment is for IPv4 (IPv6 has no DF bit)',
      );
    const bytes = ip.family === 4 ? Buffer.alloc(4) : Buffer.from(ip.address);
    if (ip.family === 4) bytes.writeUInt32BE(ip.address);
    const n = native();
    let opened: { fd: number; port: number };
    try {
      opened = n.openUdp(ip.family, bytes, port, reusePort, netns);
    } catch (err) {
      throw toWeftError(
        err,
        `opening UDP socket on ${ip.family === 6 ? `[${address}]` : address}:${port}`,
      );
    }
    const socket = new UdpSocket(
      new n.Handle(opened.fd, ip.family === 4 ? HandleKind.udp4 : HandleKind.udp6),
      ip.family,
      address,
      opened.port,
    );
    try {
      if (receiveBufferBytes) socket.setReceiveBuffer(receiveBufferBytes);
      if (sendBufferBytes) socket.setSendBuffer(sendBufferBytes);
      if (gro) socket.setOption('udpGro', 1);
      if (dontFragment) {
        const c = n.constants;
        if (ip.family === 4) socket.setOption('ipMtuDiscover', c.IP_PMTUDISC_DO);
        else socket.setOption('ipv6MtuDiscover', c.IPV6_PMTUDISC_DO);
      }
      if (clearDontFragment) socket.setOption('ipMtuDiscover', n.constants.IP_PMTUDISC_DONT);
    } catch (err) {
      socket.close();
      throw err;
    }
    return socket;
  }

  /**
   * Takes over a socket's fd that another thread released (BatchIo.release), for a worker
   * thread: its family, address and port as the releasing UdpSocket had them.
   */
  static adopt(fd: number, socket: { family: 4 | 6; address: string; port: number }): UdpSocket {
    const n = native();
    try {
      return new UdpSocket(
        new n.Handle(fd, socket.family === 4 ? HandleKind.udp4 : HandleKind.udp6),
        socket.family,
        socket.address,
        socket.port,
      );
    } catch (err) {
      throw toWeftError(err, `adopting fd ${fd} as UDP socket :${socket.port}`);
    }
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

  private setOption(name: SocketOption, value: number): void {
    const h = this.live();
    try {
      h.setOption(name, value);
    } catch (err) {
      throw toWeftError(err, `setting ${name} on UDP socket :${this.port}`);
    }
  }

  private getOption(name: SocketOption): number {
    const h = this.live();
    try {
      return h.getOption(name);
    } catch (err) {
      throw toWeftError(err, `reading ${name} of UDP socket :${this.port}`);
    }
  }

  /** Sets SO_RCVBUF; as root SO_RCVBUFFORCE, which may exceed net.core.rmem_max. */
  setReceiveBuffer(bytes: number): void {
    checkBufferBytes(bytes);
    this.setOption(process.getuid?.() === 0 ? 'rcvbufforce' : 'rcvbuf', bytes);
  }

  /** Sets SO_SNDBUF (SO_SNDBUFFORCE as root, past the sysctl limit). */
  setSendBuffer(bytes: number): void {
    checkBufferBytes(bytes);
    this.setOption(process.getuid?.() === 0 ? 'sndbufforce' : 'sndbuf', bytes);
  }

  /** Whether datagrams leave with DF clear, always (see UdpOpenOptions.clearDontFragment). */
  get clearDontFragment(): boolean {
    return (
      this.family === 4 && this.getOption('ipMtuDiscover') === native().constants.IP_PMTUDISC_DONT
    );
  }

  /** Whether datagrams leave with DF set (see UdpOpenOptions.dontFragment). */
  get dontFragment(): boolean {
    const c = native().constants;
    return this.family === 4
      ? this.getOption('ipMtuDiscover') === c.IP_PMTUDISC_DO
      : this.getOption('ipv6MtuDiscover') === c.IPV6_PMTUDISC_DO;
  }

  /** The kernel's figure (it doubles what was asked, for bookkeeping). */
  get receiveBufferBytes(): number {
    return this.getOption('rcvbuf');
  }

  get sendBufferBytes(): number {
    return this.getOption('sndbuf');
  }
}
