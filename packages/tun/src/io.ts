import { WeftError } from '@weft/core';
import { errnoName, show, TunErrorCode, toWeftError } from './errors.js';
import type { NativeHandle, NativeStats } from './native.js';
import type { PacketRing, SendTable } from './ring.js';
import { isSlab } from './slab.js';

export type { NativeStats as IoStats } from './native.js';

/** Slab indices a send descriptor can name. */
const MAX_SLAB_INDEX = 255;

function checkSlabIndex(index: unknown): void {
  if (!Number.isInteger(index) || (index as number) < 0 || (index as number) > MAX_SLAB_INDEX)
    throw new WeftError(
      TunErrorCode.badOption,
      `slab index ${show(index)} is not valid: use 0 to ${MAX_SLAB_INDEX}`,
    );
}

/**
 * What TUN/TAP queues and UDP sockets share: a non-blocking fd polled by libuv on Node's loop,
 * a read ring the addon fills a batch at a time, and a send table it sends from in one call.
 */
export abstract class BatchIo {
  protected handle: NativeHandle | undefined;
  private ring: PacketRing | undefined;
  private ringSlabIndex = -1;
  private sendCapacity = 0;
  private failure: WeftError | undefined;

  protected constructor(handle: NativeHandle) {
    this.handle = handle;
  }

  /** What this is, for error messages ("TUN device weft0", "UDP socket 0.0.0.0:8472"). */
  protected abstract describe(): string;

  get closed(): boolean {
    return this.handle === undefined;
  }

  /** The file descriptor, or -1 once closed. */
  get fd(): number {
    return this.handle?.fd ?? -1;
  }

  /**
   * Why this handle stopped for good, once it has: its fd failed (a TUN queue whose device was
   * deleted reports EBADFD). The read callback heard it once as a negative count; the fd is no
   * longer polled; send() consumes every descriptor and counts it in stats().sendErrors.
   */
  get error(): WeftError | undefined {
    if (this.failure) return this.failure;
    const errno = this.handle?.failedErrno ?? 0;
    if (errno === 0) return undefined;
    const name = errnoName(errno);
    const hint =
      name === 'EBADFD'
        ? 'its device was deleted (ip link del): open the device again'
        : 'close it and open a new one';
    this.failure = new WeftError(
      TunErrorCode.ioFailed,
      `${this.describe()} failed (${name}): ${hint}`,
      { cause: Object.assign(new Error(name), { code: name, errno }) },
    );
    return this.failure;
  }

  /** True once `error` is set. */
  get failed(): boolean {
    return this.error !== undefined;
  }

  protected live(): NativeHandle {
    if (this.handle === undefined)
      throw new WeftError(TunErrorCode.closed, 'this device or socket is closed');
    return this.handle;
  }

  /**
   * Attaches `slab` as index `index` (0..255), for send descriptors to point into. Only a Buffer
   * from allocSlab() or a PacketRing's slab will do. The ring's slab is attached by
   * `startReading` at its own index, which then holds it; attach others (e.g. another handle's
   * ring) at other indices.
   */
  attachSlab(index: number, slab: Buffer): void {
    const h = this.live();
    checkSlabIndex(index);
    if (!isSlab(slab))
      throw new WeftError(
        TunErrorCode.badOption,
        'attachSlab takes a Buffer made by allocSlab() or a PacketRing: other memory may be pooled, transferred or resized under the addon',
      );
    if (this.ring !== undefined && index === this.ringSlabIndex && slab !== this.ring.slab)
      throw new WeftError(
        TunErrorCode.badOption,
        `slab ${index} holds the read ring: attach this slab at another index`,
      );
    try {
      h.attachSlab(index, slab);
    } catch (err) {
      throw toWeftError(err, `attaching slab ${index} to ${this.describe()}`);
    }
  }

  /**
   * Starts reading batches into `ring` (attached as slab `slabIndex`, default 0); `onBatch(n)`
   * runs once per batch with slots 0..n-1 filled. The slots are reused by the next batch: use or
   * copy them before returning (or pause). A negative n is -errno: the handle failed (see
   * `error`), and no batch follows.
   */
  startReading(ring: PacketRing, onBatch: (count: number) => void, slabIndex = 0): void {
    const h = this.live();
    if (!isSlab((ring as PacketRing | undefined)?.slab))
      throw new WeftError(TunErrorCode.badOption, 'startReading takes a PacketRing');
    if (typeof onBatch !== 'function')
      throw new WeftError(TunErrorCode.badOption, 'startReading: onBatch must be a function');
    checkSlabIndex(slabIndex);
    if (this.error) throw this.error;
    try {
      this.setRing(h, ring, slabIndex);
      h.startReading(onBatch as (n: number | Buffer) => void);
    } catch (err) {
      throw toWeftError(err, `reading from ${this.describe()}`);
    }
    this.ring = ring;
    this.ringSlabIndex = slabIndex;
  }

  protected abstract setRing(handle: NativeHandle, ring: PacketRing, slabIndex: number): void;

  /** The ring reads go to, if reading. */
  get readRing(): PacketRing | undefined {
    return this.ring;
  }

  /** Stops reading (the kernel queues, then drops) until resume(). */
  pause(): void {
    this.handle?.pauseReading();
  }

  /** Starts reading again after {@link BatchIo.pause}. */
  resume(): void {
    this.handle?.resumeReading();
  }

  /** Uses `table` for send(); its descriptors refer to attached slabs. */
  setSendTable(table: SendTable): void {
    const h = this.live();
    try {
      h.setSendTable(
        table.slabs,
        table.offsets,
        table.lengths,
        table.addrs,
        table.ports,
        table.gso,
        table.flags,
      );
    } catch (err) {
      throw toWeftError(err, `setting the send table of ${this.describe()}`);
    }
    this.sendCapacity = table.capacity;
  }

  /**
   * Sends descriptors [start, start + count) in one call and returns how many were consumed
   * (sent, or dropped on a bad descriptor or a hard error, which stats() counts). Fewer than
   * `count` means the kernel is full (EAGAIN): call onWritable() and send the rest from there.
   * Never throws on a closed handle: it consumes nothing.
   */
  send(start: number, count: number): number {
    if (this.handle === undefined) return 0;
    if (
      !(
        Number.isInteger(start) &&
        Number.isInteger(count) &&
        start >= 0 &&
        count >= 0 &&
        start + count <= this.sendCapacity
      )
    ) {
      throw new WeftError(
        TunErrorCode.badOption,
        this.sendCapacity === 0
          ? 'send() needs a send table: call setSendTable() first'
          : `send(${show(start)}, ${show(count)}) is outside the send table of ${this.sendCapacity} descriptors`,
      );
    }
    return this.handle.send(start, count);
  }

  /** Calls `callback` once, the next time the kernel can take more. */
  onWritable(callback: () => void): void {
    if (typeof callback !== 'function')
      throw new WeftError(TunErrorCode.badOption, 'onWritable: callback must be a function');
    this.handle?.armWritable(callback);
  }

  /**
   * The addon's counters for this fd (reads, sends, errors, truncations); undefined once closed.
   */
  stats(): NativeStats | undefined {
    return this.handle?.stats();
  }

  /**
   * Busy polling: after each batch this reads, Node's event loop polls its fds without sleeping
   * for `microseconds` (0, the default, turns it off; at most 10,000), so a packet that follows
   * soon, on this fd or any other of the loop (the other side of a pump), is read without a
   * wakeup. It trades CPU (spinning while nothing comes) for latency.
   */
  setBusyPoll(microseconds: number): void {
    const h = this.live();
    try {
      h.setBusyPoll(microseconds);
    } catch (err) {
      throw toWeftError(err, `busy polling on ${this.describe()}`);
    }
  }

  /** Lets the process exit while this is open (like socket.unref()). */
  unref(): void {
    this.handle?.unref();
  }

  /** Keeps the process alive while this is open again, after unref() (like socket.ref()). */
  ref(): void {
    this.handle?.ref();
  }

  /**
   * Hands the fd over, for a worker thread to adopt (TunQueue.adopt, UdpSocket.adopt): this object
   * is closed as by close(), but the fd stays open and is returned. Whoever holds the number owns
   * it: adopt it, or close it (fs.closeSync).
   */
  release(): number {
    const h = this.live();
    if (this.error) throw this.error;
    this.handle = undefined;
    this.ring = undefined;
    this.ringSlabIndex = -1;
    return h.release();
  }

  /** Closes the fd. No callback runs after close; safe to call twice. */
  close(): void {
    const h = this.handle;
    // A failure stays readable after close.
    if (h) void this.error;
    this.handle = undefined;
    this.ring = undefined;
    this.ringSlabIndex = -1;
    h?.close();
  }
}
