import { WeftError } from '@weft/core';
import { show, TunErrorCode } from './errors.js';
import { allocSlab, pinned } from './slab.js';

/**
 * The memory a batch of packets lives in, owned by JavaScript and handed to the addon once.
 * A slab is one Buffer cut into `slots` fixed-stride slots; each slot starts with `headroom`
 * bytes (room to write encapsulation headers in front of the packet without moving it), then
 * room for one packet. The addon reads packets to `slotOffset(i)` and says how long each is in
 * `lengths[i]` (-1: a datagram longer than the slot, cut and to be dropped).
 */
export interface RingOptions {
  /** Packets per batch (default 64). */
  slots?: number;
  /** Bytes per slot, headroom included (default 2048; 65,600 or more for GSO/GRO). */
  stride?: number;
  /** Bytes before each packet (default 64: outer IPv4 + UDP + VXLAN + Ethernet fits). */
  headroom?: number;
}

/**
 * One slab cut into fixed-stride slots, each `headroom` bytes then room for one packet: the
 * addon reads a batch straight into the slots and fills `lengths` (for UDP also `addrs`,
 * `ports`, `families`, `gso`). Made once, reused for every batch.
 */
export class PacketRing {
  /** The memory of every slot (from allocSlab: untransferable). */
  readonly slab: Buffer;
  /** How many slots: the most packets one batch reads. */
  readonly slots: number;
  /** Bytes per slot, headroom included. */
  readonly stride: number;
  /** Bytes before each packet, for headers written in place. */
  readonly headroom: number;
  /**
   * Length of the packet in each slot; -1 when one was longer than its slot (counted as truncated).
   */
  readonly lengths: Int32Array;
  /** Source of each datagram (UDP only): 4 words per slot, IPv4 in the first, IPv6 big-endian. */
  readonly addrs: Uint32Array;
  /** Source port of each datagram (UDP only). */
  readonly ports: Uint16Array;
  /** 4 or 6 per slot (UDP only). */
  readonly families: Uint8Array;
  /** UDP GRO segment size per slot, 0 when the datagram was not coalesced. */
  readonly gso: Uint16Array;

  constructor(options: RingOptions = {}) {
    if (typeof options !== 'object' || options === null)
      throw new WeftError(TunErrorCode.badOption, 'ring options must be an object');
    this.slots = options.slots ?? 64;
    this.stride = options.stride ?? 2048;
    this.headroom = options.headroom ?? 64;
    if (!Number.isInteger(this.slots) || this.slots < 1 || this.slots > 1024)
      throw new WeftError(
        TunErrorCode.badOption,
        `ring slots ${show(this.slots)} is not valid: use 1 to 1024`,
      );
    if (!Number.isInteger(this.headroom) || this.headroom < 0)
      throw new WeftError(
        TunErrorCode.badOption,
        `ring headroom ${show(this.headroom)} is not valid: use 0 or more bytes`,
      );
    if (!Number.isInteger(this.stride) || this.stride <= this.headroom || this.stride > 1 << 20)
      throw new WeftError(
        TunErrorCode.badOption,
        `ring stride ${show(this.stride)} is not valid: it must exceed the headroom (${show(this.headroom)}) and be at most 1 MiB`,
      );
    // The addon keeps raw pointers into all of these while it reads: none may be transferred.
    this.slab = allocSlab(this.slots * this.stride);
    // One buffer for the per-slot arrays, so the addon re-checks one buffer per batch, not five.
    const n = this.slots;
    const meta = pinned(new ArrayBuffer(25 * n));
    this.lengths = new Int32Array(meta, 0, n);
    this.addrs = new Uint32Array(meta, 4 * n, 4 * n);
    this.ports = new Uint16Array(meta, 20 * n, n);
    this.gso = new Uint16Array(meta, 22 * n, n);
    this.families = new Uint8Array(meta, 24 * n, n);
  }

  /** Where slot i's packet starts (after its headroom). */
  slotOffset(i: number): number {
    return i * this.stride + this.headroom;
  }

  /** Room for one packet in a slot. */
  get capacity(): number {
    return this.stride - this.headroom;
  }
}

/** Bits of SendTable.flags. */
export const SendFlag = {
  /** The descriptor's bytes continue the packet of the descriptor before it. */
  continues: 1,
} as const;

/**
 * Send descriptors, filled by JavaScript per batch: packet i is `lengths[i]` bytes at absolute
 * byte `offsets[i]` of the slab attached as `slabs[i]`, to `addrs[i*4..]`:`ports[i]` (UDP).
 * A descriptor may start inside a slot's headroom, so headers written there go out with the
 * payload. `gso[i] > 0` asks the kernel to cut the datagram into segments of that size (UDP GSO).
 * A packet may also be gathered from pieces: `append` adds a descriptor whose bytes continue the
 * packet before it (headers in one slab, payload in another, sent as one iovec without a copy);
 * the packet's destination and GSO size are those of its first descriptor, and it ends where a
 * descriptor does not continue it or where the range given to send() ends.
 */
export class SendTable {
  readonly capacity: number;
  readonly slabs: Uint8Array;
  readonly offsets: Int32Array;
  readonly lengths: Int32Array;
  readonly addrs: Uint32Array;
  readonly ports: Uint16Array;
  readonly gso: Uint16Array;
  /** Per descriptor: SendFlag bits. */
  readonly flags: Uint8Array;

  constructor(capacity = 64) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 16)
      throw new WeftError(
        TunErrorCode.badOption,
        `send table capacity ${show(capacity)} is not valid: use 1 to 65536`,
      );
    this.capacity = capacity;
    // One buffer for the descriptor arrays, so the addon re-checks one buffer per send.
    const n = capacity;
    const table = pinned(new ArrayBuffer(30 * n));
    this.offsets = new Int32Array(table, 0, n);
    this.lengths = new Int32Array(table, 4 * n, n);
    this.addrs = new Uint32Array(table, 8 * n, 4 * n);
    this.ports = new Uint16Array(table, 24 * n, n);
    this.gso = new Uint16Array(table, 26 * n, n);
    this.slabs = new Uint8Array(table, 28 * n, n);
    this.flags = new Uint8Array(table, 29 * n, n);
  }

  /** Fills descriptor i for an IPv4 destination. */
  set4(i: number, slab: number, offset: number, length: number, ipv4: number, port: number): void {
    this.slabs[i] = slab;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.addrs[i * 4] = ipv4;
    this.ports[i] = port;
    this.gso[i] = 0;
    this.flags[i] = 0;
  }

  /** Fills descriptor i for an IPv6 destination, read from 16 bytes at ip[ipOff]. */
  set6(
    i: number,
    slab: number,
    offset: number,
    length: number,
    ip: Uint8Array,
    ipOff: number,
    port: number,
  ): void {
    this.slabs[i] = slab;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    for (let w = 0; w < 4; w++) {
      const o = ipOff + w * 4;
      this.addrs[i * 4 + w] =
        ((ip[o] << 24) | (ip[o + 1] << 16) | (ip[o + 2] << 8) | ip[o + 3]) >>> 0;
    }
    this.ports[i] = port;
    this.gso[i] = 0;
    this.flags[i] = 0;
  }

  /** Fills descriptor i for a device write (no destination). */
  setLocal(i: number, slab: number, offset: number, length: number): void {
    this.slabs[i] = slab;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.gso[i] = 0;
    this.flags[i] = 0;
  }

  /** Fills descriptor i with bytes that continue the packet of descriptor i - 1. */
  append(i: number, slab: number, offset: number, length: number): void {
    this.slabs[i] = slab;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.gso[i] = 0;
    this.flags[i] = SendFlag.continues;
  }
}
