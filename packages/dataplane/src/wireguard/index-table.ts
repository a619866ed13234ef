import { randomBytes } from 'node:crypto';

/** What lookup returns for an index nobody holds. */
export const NO_INDEX = 0x7fffffff;

/**
 * Receiver indices (the paper, 5.4.2: "a randomly generated 32-bit index") to what they name: a
 * keypair slot (>= 0) or a peer's handshake in progress (-(peer slot) - 1). Open addressing with
 * linear probing over typed arrays. Indices are handled as int32 (the same 32 bits, read with
 * `| 0`): a u32 >= 2^31 would be a boxed heap number on every call, an int32 never is.
 */
export class IndexTable {
  private keys = new Int32Array(64);
  private values = new Int32Array(64);
  /** 0 empty, 1 used, 2 deleted. */
  private state = new Uint8Array(64);
  private used = 0;
  private deleted = 0;
  private mask = 63;
  private readonly random = new Int32Array(64);
  private randomLeft = 0;

  get size(): number {
    return this.used;
  }

  private slotOf(index: number): number {
    return Math.imul(index, 0x9e3779b1) >>> 0;
  }

  /** Hot path: the value held for `index` (int32), or NO_INDEX. */
  lookup(index: number): number {
    const mask = this.mask;
    for (let i = this.slotOf(index) & mask; ; i = (i + 1) & mask) {
      const st = this.state[i];
      if (st === 0) return NO_INDEX;
      if (st === 1 && this.keys[i] === index) return this.values[i];
    }
  }

  /** A new random index (int32, never 0), not in use, holding `value`. */
  add(value: number): number {
    for (;;) {
      if (this.randomLeft === 0) {
        const b = randomBytes(this.random.byteLength);
        this.random.set(new Int32Array(b.buffer, b.byteOffset, this.random.length));
        this.randomLeft = this.random.length;
      }
      const index = this.random[--this.randomLeft];
      if (index !== 0 && this.lookup(index) === NO_INDEX) {
        this.insert(index, value);
        return index;
      }
    }
  }

  /** Points an existing index at a new value (a handshake's index becoming its keypair's). */
  set(index: number, value: number): void {
    const mask = this.mask;
    for (let i = this.slotOf(index) & mask; ; i = (i + 1) & mask) {
      const st = this.state[i];
      if (st === 0) {
        this.insert(index, value);
        return;
      }
      if (st === 1 && this.keys[i] === index) {
        this.values[i] = value;
        return;
      }
    }
  }

  remove(index: number): void {
    if (index === 0) return;
    const mask = this.mask;
    for (let i = this.slotOf(index) & mask; ; i = (i + 1) & mask) {
      const st = this.state[i];
      if (st === 0) return;
      if (st === 1 && this.keys[i] === index) {
        this.state[i] = 2;
        this.used--;
        this.deleted++;
        return;
      }
    }
  }

  private insert(index: number, value: number): void {
    if ((this.used + this.deleted + 1) * 2 > this.keys.length) this.rehash();
    const mask = this.mask;
    for (let i = this.slotOf(index) & mask; ; i = (i + 1) & mask) {
      if (this.state[i] !== 1) {
        if (this.state[i] === 2) this.deleted--;
        this.keys[i] = index;
        this.values[i] = value;
        this.state[i] = 1;
        this.used++;
        return;
      }
    }
  }

  private rehash(): void {
    const { keys, values, state } = this;
    let size = this.keys.length;
    while ((this.used + 1) * 4 > size) size *= 2;
    this.keys = new Int32Array(size);
    this.values = new Int32Array(size);
    this.state = new Uint8Array(size);
    this.mask = size - 1;
    this.used = 0;
    this.deleted = 0;
    for (let i = 0; i < state.length; i++) if (state[i] === 1) this.insert(keys[i], values[i]);
  }
}
