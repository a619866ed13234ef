import { formatMac, parseCidr, parseMac, WeftError } from '@weft/core';
import { netnsPath, show, TunErrorCode, toWeftError } from './errors.js';
import { BatchIo } from './io.js';
import { HandleKind, type NativeHandle, native } from './native.js';
import { Options } from './options.js';
import type { PacketRing } from './ring.js';

/**
 * `tun`: layer 3, each packet an IP packet (IFF_TUN); `tap`: layer 2, Ethernet frames (IFF_TAP).
 */
export type DeviceMode = 'tun' | 'tap';

/** Options of {@link TunDevice.open}. */
export interface TunOpenOptions {
  /** Name, or a pattern with `%d` the kernel fills (default `weft%d`); at most 15 bytes. */
  name?: string;
  /** `tun` (L3, IP packets) or `tap` (L2, Ethernet frames). Default `tun`. */
  mode?: DeviceMode;
  /** Queues (fds) on the device; more than 1 opens it multi-queue, for worker threads. Default 1. */
  queues?: number;
  /** Prefix every packet with a virtio_net_hdr (for offloads). Default false. */
  vnetHdr?: boolean;
  /** The network namespace (a name under /run/netns, or a path) to create the device in. */
  netns?: string;
  /** The clone device (default /dev/net/tun). */
  devicePath?: string;
}

function cidrText(cidr: unknown): string {
  if (typeof cidr !== 'string')
    throw new WeftError(
      TunErrorCode.badOption,
      `${show(cidr)} is not valid: use a prefix as text, e.g. 10.244.1.0/32 or fc00::1/64`,
    );
  return cidr;
}

/** IFNAMSIZ is 16 bytes with the terminating NUL. */
const MAX_NAME_BYTES = 15;
/** IPv4's minimum (RFC 791); the largest a TUN device takes. */
const MIN_MTU = 68;
const MAX_MTU = 65535;
/** IPv6's minimum link MTU (RFC 8200 section 5). */
const IPV6_MIN_MTU = 1280;

/** One fd of a TUN/TAP device: reads a batch of packets at a time, writes a batch per call. */
export class TunQueue extends BatchIo {
  /** The device's name, as the kernel gave it. */
  readonly name: string;

  constructor(handle: NativeHandle, name: string) {
    super(handle);
    this.name = name;
  }

  /**
   * Takes over a queue's fd that another thread released (BatchIo.release), for a worker thread
   * to run a pump on one queue of a multi-queue device. The fd must be an attached TUN/TAP queue.
   */
  static adopt(fd: number, name: string): TunQueue {
    const n = native();
    try {
      return new TunQueue(new n.Handle(fd, HandleKind.tun), name);
    } catch (err) {
      throw toWeftError(err, `adopting fd ${fd} as a queue of ${name}`);
    }
  }

  protected describe(): string {
    return `TUN/TAP device ${this.name}`;
  }

  protected setRing(h: NativeHandle, ring: PacketRing, slabIndex: number): void {
    h.setReadRing(slabIndex, ring.slab, ring.stride, ring.headroom, ring.slots, ring.lengths);
  }

  /**
   * Multi-queue: has the kernel hand each packet to the queue its flow hash picks (hash %
   * queues), by a two-instruction eBPF steering program, instead of the queue that last wrote a
   * packet of the flow (the default, which with one pump per queue pulls flows into one pump).
   * Needs CAP_BPF or CAP_SYS_ADMIN. Set on one queue, it holds for the device.
   */
  steerByFlowHash(): void {
    const h = this.live();
    try {
      h.steerByFlowHash();
    } catch (err) {
      throw toWeftError(err, `steering ${this.name}'s queues by flow hash`);
    }
  }

  /** Sets the offloads (TUN_F_* flags, see TunOffload) the kernel may hand the device; needs vnetHdr. */
  setOffload(flags: number): void {
    const h = this.live();
    try {
      h.setOffload(flags);
    } catch (err) {
      throw toWeftError(err, `setting offloads on ${this.name}`);
    }
  }
}

/**
 * A TUN or TAP device. Persistence is off: closing its last queue removes the device.
 * Configuration (MTU, up, addresses, MAC) goes through ioctls in the device's namespace.
 */
export class TunDevice {
  readonly name: string;
  readonly mode: DeviceMode;
  readonly queues: TunQueue[];
  readonly netns: string | undefined;
  readonly vnetHdr: boolean;

  private constructor(
    name: string,
    mode: DeviceMode,
    queues: TunQueue[],
    netns: string | undefined,
    vnetHdr: boolean,
  ) {
    this.name = name;
    this.mode = mode;
    this.queues = queues;
    this.netns = netns;
    this.vnetHdr = vnetHdr;
  }

  /**
   * Creates (or attaches to) a TUN/TAP device and opens its queues: non-blocking, close-on-exec,
   * `IFF_NO_PI`. Needs CAP_NET_ADMIN (`ERR_TUN_PERMISSION` says how to grant it).
   */
  static open(options: TunOpenOptions = {}): TunDevice {
    const o = new Options(options, 'TunDevice.open');
    const mode = o.oneOf('mode', ['tun', 'tap'] as const) ?? 'tun';
    const requested = o.string('name') ?? 'weft%d';
    const queueCount = o.integer('queues', 1, 256) ?? 1;
    const vnetHdr = o.boolean('vnetHdr') ?? false;
    const devicePath = o.string('devicePath') ?? '/dev/net/tun';
    const ns = netnsPath(o.string('netns'));
    if (Buffer.byteLength(requested) > MAX_NAME_BYTES) {
      throw new WeftError(
        TunErrorCode.nameTooLong,
        `device name ${JSON.stringify(requested)} is ${Buffer.byteLength(requested)} bytes; Linux allows at most ${MAX_NAME_BYTES}`,
      );
    }
    // The kernel's own rule (dev_valid_name): not empty, not . or .., no slash, colon or space.
    if (
      requested.length === 0 ||
      requested === '.' ||
      requested === '..' ||
      /[\s/:]/.test(requested)
    ) {
      throw new WeftError(
        TunErrorCode.badName,
        `device name ${JSON.stringify(requested)} is not a valid interface name: use 1 to 15 bytes without spaces, '/' or ':'`,
      );
    }
    const n = native();
    const c = n.constants;
    let flags = (mode === 'tap' ? c.IFF_TAP : c.IFF_TUN) | c.IFF_NO_PI;
    if (queueCount > 1) flags |= c.IFF_MULTI_QUEUE;
    if (vnetHdr) flags |= c.IFF_VNET_HDR;
    const queues: TunQueue[] = [];
    let name = requested;
    try {
      for (let i = 0; i < queueCount; i++) {
        const opened = n.openTun(devicePath, name, flags, ns);
        name = opened.name;
        queues.push(new TunQueue(new n.Handle(opened.fd, HandleKind.tun), name));
      }
    } catch (err) {
      for (const q of queues) q.close();
      throw toWeftError(err, `opening ${mode.toUpperCase()} device ${requested}`, devicePath);
    }
    return new TunDevice(name, mode, queues, ns, vnetHdr);
  }

  private ifconfig(op: string, value?: unknown): unknown {
    try {
      return native().ifconfig(this.name, op, value, this.netns);
    } catch (err) {
      if (op === 'setMtu' && (err as { code?: string }).code === 'EINVAL') {
        throw new WeftError(
          TunErrorCode.badMtu,
          `MTU ${show(value)} is not valid for ${this.name}: use ${MIN_MTU}..${MAX_MTU}`,
          { cause: err },
        );
      }
      throw toWeftError(err, `configuring ${this.name} (${op})`);
    }
  }

  get ifindex(): number {
    return this.ifconfig('index') as number;
  }

  get mtu(): number {
    return this.ifconfig('getMtu') as number;
  }

  /** Sets the device's MTU (68..65535; an IPv6 address on it needs 1280 or more). */
  setMtu(mtuBytes: number): void {
    if (!Number.isInteger(mtuBytes) || mtuBytes < MIN_MTU || mtuBytes > MAX_MTU) {
      throw new WeftError(
        TunErrorCode.badMtu,
        `MTU ${show(mtuBytes)} is not valid for ${this.name}: use ${MIN_MTU}..${MAX_MTU}`,
      );
    }
    this.ifconfig('setMtu', mtuBytes);
  }

  get isUp(): boolean {
    return ((this.ifconfig('getFlags') as number) & native().constants.IFF_UP) !== 0;
  }

  /** Sets the device up (`ip link set NAME up`). */
  up(): void {
    this.ifconfig('setUp', true);
  }

  /** Sets the device down. */
  down(): void {
    this.ifconfig('setUp', false);
  }

  /**
   * Adds an address with its prefix, e.g. `10.244.1.0/32` or `fc00::1/64`. IPv4 goes through
   * SIOCSIFADDR, which sets the device's one primary IPv4 address.
   */
  addAddress(cidr: string): void {
    const parsed = parseCidr(cidrText(cidr), { allowHostBits: true });
    if (parsed.family === 4) {
      const bytes = Buffer.alloc(4);
      bytes.writeUInt32BE(parsed.address);
      this.ifconfig('addIpv4', [bytes, parsed.prefixLength]);
      return;
    }
    try {
      this.ifconfig('addIpv6', [Buffer.from(parsed.address), parsed.prefixLength]);
    } catch (err) {
      // Below IPv6's minimum link MTU the kernel takes IPv6 off the device and says only EINVAL.
      const cause = (err as { cause?: { code?: string } }).cause;
      if (cause?.code === 'EINVAL' && this.mtu < IPV6_MIN_MTU) {
        throw new WeftError(
          TunErrorCode.badMtu,
          `cannot add ${cidr} to ${this.name}: IPv6 needs an MTU of at least ${IPV6_MIN_MTU} (RFC 8200) and ${this.name} has ${this.mtu}: raise it first`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  /**
   * Routes a prefix out of this device (`ip route add 10.244.0.0/16 dev NAME`), through the
   * SIOCADDRT ioctl; the device must be up.
   */
  addRoute(cidr: string): void {
    const parsed = parseCidr(cidrText(cidr));
    if (parsed.family === 4) {
      const bytes = Buffer.alloc(4);
      bytes.writeUInt32BE(parsed.address);
      this.ifconfig('addRoute4', [bytes, parsed.prefixLength]);
    } else {
      this.ifconfig('addRoute6', [Buffer.from(parsed.address), parsed.prefixLength]);
    }
  }

  /** Turns IPv6 off on this device (no link-local address, no MLD or router solicitations). */
  disableIpv6(): void {
    this.ifconfig('disableIpv6', true);
  }

  /** The MAC of a TAP device, as text. */
  get mac(): string {
    const bytes = this.ifconfig('getMac') as Buffer;
    return formatMac(bytes.readUIntBE(0, 6));
  }

  /** Sets a TAP device's MAC address (a TUN device has none). */
  setMac(mac: string | number): void {
    if (this.mode !== 'tap')
      throw new WeftError(
        TunErrorCode.syscall,
        `${this.name} is a TUN device: only a TAP device has a MAC`,
      );
    if (
      typeof mac === 'number'
        ? !(Number.isInteger(mac) && mac >= 0 && mac < 2 ** 48)
        : typeof mac !== 'string'
    )
      throw new WeftError(
        TunErrorCode.badOption,
        `MAC ${show(mac)} is not valid: use text like 02:42:0a:f4:01:00 or a 48-bit number`,
      );
    const value = typeof mac === 'number' ? mac : parseMac(mac);
    const bytes = Buffer.alloc(6);
    bytes.writeUIntBE(value, 0, 6);
    this.ifconfig('setMac', bytes);
  }

  /** Sets the offloads the kernel may hand this device (TUN_F_* flags); needs vnetHdr. */
  setOffload(flags: number): void {
    const q = this.queues[0];
    if (!q || q.closed) throw new WeftError(TunErrorCode.closed, `${this.name} is closed`);
    q.setOffload(flags);
  }

  /** Closes every queue; the device goes away with its last fd. Safe to call twice. */
  close(): void {
    for (const q of this.queues) q.close();
  }
}

/** TUN_F_* offload flags for setOffload. */
export const TunOffload = {
  get csum() {
    return native().constants.TUN_F_CSUM;
  },
  get tso4() {
    return native().constants.TUN_F_TSO4;
  },
  get tso6() {
    return native().constants.TUN_F_TSO6;
  },
  get tsoEcn() {
    return native().constants.TUN_F_TSO_ECN;
  },
  get uso4() {
    return native().constants.TUN_F_USO4;
  },
  get uso6() {
    return native().constants.TUN_F_USO6;
  },
};
