import { loadAddon } from './loader.js';

/** The addon's surface; see native/addon.cc and native/handle.h. */
export interface NativeHandle {
  readonly fd: number;
  /** Non-zero once the fd failed for good (see BatchIo.error). */
  readonly failedErrno: number;
  attachSlab(index: number, slab: Uint8Array): void;
  setReadRing(
    slabIndex: number,
    slab: Uint8Array,
    stride: number,
    headroom: number,
    count: number,
    lengths: Int32Array,
    addrs?: Uint32Array,
    ports?: Uint16Array,
    families?: Uint8Array,
    gso?: Uint16Array,
  ): void;
  setSendTable(
    slabs: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs?: Uint32Array,
    ports?: Uint16Array,
    gso?: Uint16Array,
    flags?: Uint8Array,
  ): void;
  startReading(callback: (countOrBuffer: number | Buffer) => void): void;
  pauseReading(): void;
  resumeReading(): void;
  send(start: number, count: number): number;
  sendBuffer(buffer: Uint8Array): number;
  armWritable(callback: () => void): void;
  stats(): NativeStats;
  ref(): void;
  unref(): void;
  close(): void;
  /** Gives the fd up without closing it (for a handle in another thread) and returns it. */
  release(): number;
  /** A socket option by name (see native/options.cc), on this handle's own fd. */
  setOption(name: SocketOption, value: number): void;
  getOption(name: SocketOption): number;
  /** TUN_F_* offloads (TUN/TAP queues only). */
  setOffload(flags: number): void;
  /** Multi-queue TUN/TAP: each packet to queue (flow hash % queues), by eBPF steering. */
  steerByFlowHash(): void;
  /** Poll without sleeping for this long after each batch read (0: off). */
  setBusyPoll(microseconds: number): void;
}

export type SocketOption =
  | 'rcvbuf'
  | 'sndbuf'
  | 'rcvbufforce'
  | 'sndbufforce'
  | 'udpGro'
  | 'udpSegment'
  | 'ipMtuDiscover'
  | 'ipv6MtuDiscover'
  | 'netlinkNoEnobufs'
  | 'netlinkGetStrictChk';

/** Counters of one fd, kept by the addon (exported as `IoStats`). */
export interface NativeStats {
  readCalls: number;
  packetsRead: number;
  readErrors: number;
  lastReadErrno: number;
  truncated: number;
  /** Packets (sendmmsg messages, TUN writes) the kernel took; a UDP GSO send is one. */
  packetsSent: number;
  /** Datagrams lost to a hard send error: each one a failed UDP GSO send carried. */
  sendErrors: number;
  sendAgain: number;
  lastSendErrno: number;
  badDescriptors: number;
  /** Non-zero once the fd failed for good: then every send counts its descriptors as errors. */
  failedErrno: number;
}

export const HandleKind = { tun: 0, udp4: 1, udp6: 2, netlink: 3 } as const;
export type HandleKind = (typeof HandleKind)[keyof typeof HandleKind];

export interface NativeAddon {
  Handle: new (fd: number, kind: HandleKind) => NativeHandle;
  openTun(
    devicePath: string,
    name: string,
    flags: number,
    netns?: string,
  ): { fd: number; name: string };
  openUdp(
    family: 4 | 6,
    address: Uint8Array,
    port: number,
    reusePort: boolean,
    netns?: string,
  ): { fd: number; port: number };
  openNetlink(protocol: number, groups: number, netns?: string): { fd: number; portId: number };
  ifconfig(name: string, op: string, value?: unknown, netns?: string): unknown;
  constants: Record<string, number>;
}

/** A system error from the addon: Node's shape (code such as EPERM, errno, syscall). */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export function isSystemError(err: unknown): err is SystemError {
  return (
    err instanceof Error &&
    typeof (err as SystemError).code === 'string' &&
    typeof (err as SystemError).errno === 'number'
  );
}

let addon: NativeAddon | undefined;

/** Loads the addon once; a missing or unloadable one is a WeftError that says what to do. */
export function native(): NativeAddon {
  addon ??= loadAddon<NativeAddon>();
  return addon;
}
