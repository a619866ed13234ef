import { constants } from 'node:os';
import { WeftError } from '@weft/core';
import { VIRTIO_NET_HDR_BYTES } from '@weft/encap';
import { allocSlab, type IoStats, PacketRing, SendFlag, SendTable } from '@weft/tun';
import { COUNTER_COUNT, Counter, type CounterSnapshot, snapshotCounters } from './counters.js';
import { DataplaneErrorCode } from './nodes.js';
import { GATHER_STAGING_PER_RECORD } from './offload.js';

/**
 * What the pump needs of a packet source and sink: @weft/tun's TunQueue and UdpSocket, or
 * anything else with the same batch contract (a simulation, a benchmark without system calls).
 */
export interface PacketIo {
  /** Makes `slab` (from allocSlab or a PacketRing) index `index` for send descriptors to point into. */
  attachSlab(index: number, slab: Buffer): void;
  /** The descriptors send() sends. */
  setSendTable(table: SendTable): void;
  /** Reads batches into `ring` (attached as `slabIndex`); `onBatch(n)` per batch, negative n = -errno, then none. */
  startReading(ring: PacketRing, onBatch: (count: number) => void, slabIndex?: number): void;
  /** Sends descriptors [start, start + count); returns how many were consumed (fewer: the kernel is full). */
  send(start: number, count: number): number;
  /** Calls `callback` once, when the kernel can take more. */
  onWritable(callback: () => void): void;
  /** Stops reading until resume(). */
  pause(): void;
  /** Reads again after pause(). */
  resume(): void;
  /** Busy polling after each batch (see @weft/tun's BatchIo.setBusyPoll); optional. */
  setBusyPoll?(microseconds: number): void;
  /** Read, send and error counts; undefined once closed (or where there are none). */
  stats(): IoStats | undefined;
  /** Closes it; no callback runs after. */
  close(): void;
}

/** The underlay side also says its address family and port. */
export interface UdpIo extends PacketIo {
  /** The bound address's family. */
  readonly family: 4 | 6;
  /** The bound UDP port. */
  readonly port: number;
}

/** Slab indices as each handle knows them (a send descriptor names the slab it points into). */
export const UdpSlab = { udpRing: 0, deviceRing: 1, staging: 2 } as const;
export const DeviceSlab = { deviceRing: 0, udpRing: 1, scratch: 2, staging: 3 } as const;

/** With offloads a slot holds a 64 KiB super-packet (plus headroom and a virtio_net_hdr). */
const OFFLOAD_STRIDE = 65_536 + 128;
/** Room per batch slot for a super-packet cut into segments, each with its own headers. */
const OFFLOAD_STAGING_PER_SLOT = 72 * 1024;
/**
 * Gathered offloads: segments per batch slot a super-packet may be cut into (an MSS of 512 or
 * more), and the most datagrams one UDP GRO read holds (the kernel coalesces at most 64).
 */
export const SEGMENTS_PER_SLOT = 128;
export const GRO_SEGMENTS_PER_SLOT = 64;
/** Room for one segment's headers: encapsulation, IPv4 and TCP with options. */
const SEGMENT_HEADER_ROOM = 160;

/** Room for one locally generated reply (an ICMP error is at most 96 bytes). */
export const SCRATCH_STRIDE = 128;

export interface PumpOptions {
  /** Packets per batch, each way (default 64). */
  batch?: number;
  /** Bytes per slot (default 2048: a 1500-byte frame plus headroom). */
  stride?: number;
  /** UDP descriptors one device batch may fill (default batch; more when frames are replicated). */
  udpTxCapacity?: number;
  /**
   * Segmentation and coalescing offloads (TSO from the TUN, UDP GSO out, UDP GRO in, GSO writes
   * to the TUN): the device and socket must have been opened for them (vnet_hdr, UDP_GRO).
   */
  offload?: boolean;
  /**
   * After each batch, keep polling the device and socket without sleeping for this many
   * microseconds (default 0: off): what follows soon (a reply, the next burst) is read without
   * the wakeup that costs tens of microseconds on a VM, at the price of spinning that long after
   * the last packet. See the benchmark README for what it bought.
   */
  busyPollMicros?: number;
}

/**
 * The packet pump: a device queue (TUN or TAP) and a UDP socket, each read a batch at a time
 * into its own ring, on Node's event loop. A subclass turns a batch into send descriptors:
 * `outbound` for packets from the local kernel (to the underlay), `inbound` for datagrams from
 * the underlay (to the local kernel). Headers are written into the slots' headroom, so a packet is
 * never copied; the descriptors simply point into the other handle's slab.
 *
 * Back-pressure: when the kernel takes only part of a batch (EAGAIN), the reader that filled the
 * slab pauses, and the rest goes out when the socket or device is writable again; the kernel
 * queues behind us meanwhile. Nothing is dropped for it.
 *
 * Descriptor tables have two parts: first the batch being forwarded, then room for a batch of
 * replies generated on the other path (ICMP errors to the device, ARP replies to the
 * underlay), which go out at once and are dropped (and counted) if the kernel is full.
 */
export abstract class Pump {
  readonly batch: number;
  readonly deviceRing: PacketRing;
  readonly udpRing: PacketRing;
  /** Descriptors for the UDP socket. */
  readonly toUdp: SendTable;
  /** Descriptors for the device queue. */
  readonly toDevice: SendTable;
  /** Where locally generated replies for the device are built, SCRATCH_STRIDE bytes each. */
  readonly scratch: Buffer;
  /** Where reply descriptors start in toUdp (after the outbound batch's own). */
  readonly udpReplyBase: number;
  /** Where reply descriptors start in toDevice (after the inbound batch's own). */
  readonly deviceReplyBase: number;
  readonly offload: boolean;
  readonly busyPollMicros: number;
  /** Bytes of virtio_net_hdr in front of every packet read from or written to the device. */
  readonly deviceHeaderBytes: number;
  /** Offloads: outbound segments are built here (UdpSlab.staging), inbound super-packets here (DeviceSlab.staging). */
  readonly txStaging: Buffer;
  readonly rxStaging: Buffer;
  protected readonly counts = new Float64Array(COUNTER_COUNT);

  private udpPending = 0;
  private udpSent = 0;
  private devicePending = 0;
  private deviceSent = 0;
  private deviceReadPaused = false;
  private udpReadPaused = false;
  private stopped = false;
  private readonly flushUdpBound = () => this.flushUdp();
  private readonly flushDeviceBound = () => this.flushDevice();
  private faultError: WeftError | undefined;
  private readonly faultListeners = new Set<(err: WeftError) => void>();

  protected constructor(
    protected readonly device: PacketIo,
    protected readonly socket: UdpIo,
    options: PumpOptions = {},
    /**
     * Offloads by gathering (TcpSegmenter, GatherCoalescer): staging holds only headers, sends are
     * iovecs of headers and payloads in place, two or so descriptors per segment. Otherwise
     * (copying: segmentTcp4, TcpCoalescer) staging holds whole packets.
     */
    gather = false,
  ) {
    this.batch = options.batch ?? 64;
    this.busyPollMicros = options.busyPollMicros ?? 0;
    this.offload = options.offload ?? false;
    this.deviceHeaderBytes = this.offload ? VIRTIO_NET_HDR_BYTES : 0;
    const stride = this.offload ? OFFLOAD_STRIDE : (options.stride ?? 2048);
    this.deviceRing = new PacketRing({ slots: this.batch, stride, headroom: 64 });
    this.udpRing = new PacketRing({ slots: this.batch, stride, headroom: 64 });
    const gathered = this.offload && gather;
    // Offloads, copying: a super-packet becomes up to two GSO sends; a GRO datagram up to ~45
    // writes. Gathering: two descriptors per segment (header, payload), each way.
    this.udpReplyBase = Math.max(
      options.udpTxCapacity ?? this.batch,
      !this.offload ? 0 : gathered ? this.batch * SEGMENTS_PER_SLOT * 2 : this.batch * 4,
    );
    this.deviceReplyBase = !this.offload
      ? this.batch
      : gathered
        ? this.batch * GRO_SEGMENTS_PER_SLOT * 2
        : this.batch * 48;
    this.toUdp = new SendTable(this.udpReplyBase + this.batch);
    this.toDevice = new SendTable(this.deviceReplyBase + this.batch);
    this.scratch = allocSlab(this.batch * SCRATCH_STRIDE).fill(0);
    this.txStaging = allocSlab(
      !this.offload
        ? 0
        : gathered
          ? this.batch * SEGMENTS_PER_SLOT * SEGMENT_HEADER_ROOM
          : this.batch * OFFLOAD_STAGING_PER_SLOT,
    );
    this.rxStaging = allocSlab(
      !this.offload
        ? 0
        : gathered
          ? (this.batch * GRO_SEGMENTS_PER_SLOT + 1) * GATHER_STAGING_PER_RECORD
          : this.batch * OFFLOAD_STAGING_PER_SLOT,
    );
  }

  /** Starts both directions. */
  protected startPump(): void {
    this.socket.attachSlab(UdpSlab.deviceRing, this.deviceRing.slab);
    this.socket.setSendTable(this.toUdp);
    this.device.attachSlab(DeviceSlab.udpRing, this.udpRing.slab);
    this.device.attachSlab(DeviceSlab.scratch, this.scratch);
    if (this.offload) {
      this.socket.attachSlab(UdpSlab.staging, this.txStaging);
      this.device.attachSlab(DeviceSlab.staging, this.rxStaging);
    }
    this.device.setSendTable(this.toDevice);
    if (this.busyPollMicros > 0) {
      this.device.setBusyPoll?.(this.busyPollMicros);
      this.socket.setBusyPoll?.(this.busyPollMicros);
    }
    this.device.startReading(
      this.deviceRing,
      (count) => this.onDeviceBatch(count),
      DeviceSlab.deviceRing,
    );
    this.socket.startReading(this.udpRing, (count) => this.onUdpBatch(count), UdpSlab.udpRing);
  }

  /**
   * Turns device ring slots [0, count) into UDP descriptors [0, n) and returns n. Replies for the
   * device go to toDevice[batch + k] via `replyToDevice`.
   */
  protected abstract outbound(count: number): number;

  /** Turns UDP ring slots [0, count) into device descriptors [0, n) and returns n. */
  protected abstract inbound(count: number): number;

  private onDeviceBatch(count: number): void {
    if (count <= 0 || this.stopped) {
      if (count < 0 && !this.stopped) this.ioFailed('device', -count);
      return;
    }
    // Descriptors written field by field keep the flags of the batch before: clear those.
    this.toUdp.flags.fill(0, 0, this.udpPending);
    this.udpPending = this.outbound(count);
    // Offloads: datagrams of one size to one destination leave as one UDP GSO send each run.
    if (this.offload) mergeSends(this.toUdp, 0, this.udpPending);
    this.udpSent = 0;
    if (this.udpPending > 0) this.flushUdp();
  }

  private onUdpBatch(count: number): void {
    if (count <= 0 || this.stopped) {
      if (count < 0 && !this.stopped) this.ioFailed('socket', -count);
      return;
    }
    this.toDevice.flags.fill(0, 0, this.devicePending);
    this.devicePending = this.inbound(count);
    this.deviceSent = 0;
    if (this.devicePending > 0) this.flushDevice();
  }

  private flushUdp(): void {
    if (this.stopped) return;
    this.udpSent += this.socket.send(this.udpSent, this.udpPending - this.udpSent);
    if (this.udpSent < this.udpPending) {
      if (!this.deviceReadPaused) {
        this.deviceReadPaused = true;
        this.device.pause();
        this.counts[Counter.backpressureEvents]++;
      }
      this.socket.onWritable(this.flushUdpBound);
      return;
    }
    if (this.deviceReadPaused) {
      this.deviceReadPaused = false;
      this.device.resume();
    }
  }

  private flushDevice(): void {
    if (this.stopped) return;
    this.deviceSent += this.device.send(this.deviceSent, this.devicePending - this.deviceSent);
    if (this.deviceSent < this.devicePending) {
      if (!this.udpReadPaused) {
        this.udpReadPaused = true;
        this.socket.pause();
        this.counts[Counter.backpressureEvents]++;
      }
      this.device.onWritable(this.flushDeviceBound);
      return;
    }
    if (this.udpReadPaused) {
      this.udpReadPaused = false;
      this.socket.resume();
    }
  }

  /** The device or socket name, for fault messages. */
  protected abstract describeIo(which: 'device' | 'socket'): string;

  /**
   * A failed read ends polling on that handle (@weft/tun delivers one negative count, -errno, and
   * stops): traffic cannot flow until the backend is closed and opened again. Both directions stop,
   * so nothing after it is counted as received or sent.
   */
  private ioFailed(which: 'device' | 'socket', errno: number): void {
    const name = errnoName(errno);
    const err =
      which === 'device'
        ? new WeftError(
            DataplaneErrorCode.deviceLost,
            `device ${this.describeIo('device')} is gone (${name} reading it): it was deleted or its namespace removed; close this backend and open a new one`,
          )
        : new WeftError(
            DataplaneErrorCode.socketLost,
            `the underlay socket ${this.describeIo('socket')} failed (${name} reading it); close this backend and open a new one`,
          );
    this.raiseFault(err);
  }

  /** Records the first fault, stops both directions and tells every listener once. */
  protected raiseFault(err: WeftError): void {
    if (this.faultError !== undefined) return;
    this.faultError = err;
    this.device.pause();
    this.socket.pause();
    for (const listener of [...this.faultListeners]) {
      try {
        listener(err);
      } catch (thrown) {
        // A listener's own bug surfaces as an uncaught exception, after every listener has run.
        queueMicrotask(() => {
          throw thrown;
        });
      }
    }
  }

  /** Why traffic cannot flow (ERR_DATAPLANE_DEVICE_LOST, ...), or undefined while it can. */
  get fault(): WeftError | undefined {
    return this.faultError;
  }

  /** Calls `listener` once per fault; returns a function that unsubscribes it. */
  onFault(listener: (err: WeftError) => void): () => void {
    if (typeof listener !== 'function')
      throw new TypeError('onFault(listener): listener must be a function');
    this.faultListeners.add(listener);
    return () => {
      this.faultListeners.delete(listener);
    };
  }

  /** Sends reply descriptors toDevice[deviceReplyBase, deviceReplyBase + n) now; what the kernel refuses is counted. */
  protected sendDeviceReplies(n: number): void {
    if (n === 0) return;
    const sent = this.device.send(this.deviceReplyBase, n);
    this.counts[Counter.dropSendError] += n - sent;
  }

  /** Sends reply descriptors toUdp[udpReplyBase, udpReplyBase + n) now; what the kernel refuses is counted. */
  protected sendUdpReplies(n: number): void {
    if (n === 0) return;
    const sent = this.socket.send(this.udpReplyBase, n);
    this.counts[Counter.dropSendError] += n - sent;
  }

  /** Counters, with the packets the kernel refused for good (no route, too big) as send errors. */
  counterSnapshot(): CounterSnapshot {
    const values = Float64Array.from(this.counts);
    for (const stats of [this.socket.stats(), this.device.stats()]) {
      if (stats) values[Counter.dropSendError] += stats.sendErrors + stats.badDescriptors;
    }
    return snapshotCounters(values);
  }

  protected stopPump(): void {
    this.stopped = true;
    this.faultListeners.clear();
    this.device.close();
    this.socket.close();
  }
}

/** The most datagrams one UDP GSO send carries (the kernel's UDP_MAX_SEGMENTS). */
const GSO_MAX_SEGMENTS = 64;
/** The most bytes one UDP GSO send carries (an IPv4 datagram's 64 KiB, less headers). */
const GSO_MAX_BYTES = 65_000;

/**
 * Hot path: turns each run of consecutive single-descriptor datagrams in table[start, end) that
 * go to one destination and are of one size (the run's last may be shorter) into one UDP GSO send
 * gathered from where each lies: the first keeps its destination and gets the size as its GSO
 * size, the others become its pieces. The kernel sends the same datagrams, but as one skb
 * through its stack and the underlay (and a receiver with UDP GRO takes them in one read).
 * Descriptors already gathered or with a GSO size are left as they are.
 */
export function mergeSends(table: SendTable, start: number, end: number): void {
  const flags = table.flags;
  const lengths = table.lengths;
  const gso = table.gso;
  const addrs = table.addrs;
  const ports = table.ports;
  let i = start;
  while (i < end) {
    // A packet already in pieces, or already a GSO send: skip it whole.
    if (gso[i] !== 0 || (i + 1 < end && flags[i + 1] & SendFlag.continues)) {
      i++;
      while (i < end && flags[i] & SendFlag.continues) i++;
      continue;
    }
    const size = lengths[i];
    let j = i + 1;
    let total = size;
    while (
      j < end &&
      j - i < GSO_MAX_SEGMENTS &&
      gso[j] === 0 &&
      (flags[j] & SendFlag.continues) === 0 &&
      !(j + 1 < end && flags[j + 1] & SendFlag.continues) &&
      lengths[j] <= size &&
      lengths[j] > 0 &&
      total + lengths[j] <= GSO_MAX_BYTES &&
      ports[j] === ports[i] &&
      addrs[j * 4] === addrs[i * 4] &&
      addrs[j * 4 + 1] === addrs[i * 4 + 1] &&
      addrs[j * 4 + 2] === addrs[i * 4 + 2] &&
      addrs[j * 4 + 3] === addrs[i * 4 + 3]
    ) {
      flags[j] = SendFlag.continues;
      total += lengths[j];
      j++;
      // A shorter datagram can only be the last of a GSO send.
      if (lengths[j - 1] < size) break;
    }
    if (j - i > 1) gso[i] = size;
    i = j;
  }
}

/** EBADF for 9, for messages. */
function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}
