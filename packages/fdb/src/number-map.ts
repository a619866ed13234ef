import { FdbErrorCode, fdbError } from './errors.js';
/**
 * A map from a whole number in [0, 2^53) (an IPv4 address, a MAC) to a value, kept in typed
 * arrays: open addressing with linear probing over the key's two 32-bit words. A `Map` keyed by a
 * number >= 2^31 boxes the key on every lookup on Node 20 (16 bytes per packet), and so does any
 * call that passes such a number to a function V8 did not inline. The hot path therefore looks up
 * by words, which are always small integers: `getWords(0, ip | 0)` for an IPv4 address,
 * `getWords(macHigh16, mac | 0)` for a MAC (see macHigh). Deletion shifts later entries of the run
 * back (no tombstones), so a lookup always ends at an empty slot.
 */
export class NumberMap<V> {
  /** High word of each key (below 2^21), EMPTY for a free slot; low word as a signed 32-bit number. */
  private hi: Int32Array;
  private lo: Int32Array;
  private vals: (V | undefined)[];
  private mask: number;
  private count = 0;

  /** Room for `capacity` keys before the first growth (the table doubles as it fills). */
  constructor(capacity = 8) {
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.hi = new Int32Array(slots).fill(EMPTY);
    this.lo = new Int32Array(slots);
    this.vals = new Array<V | undefined>(slots).fill(undefined);
    this.mask = slots - 1;
  }

  /** How many keys are set. */
  get size(): number {
    return this.count;
  }

  /** The value for `key`, or undefined (also for anything that is not a key). */
  get(key: number): V | undefined {
    if (!Number.isSafeInteger(key) || key < 0) return undefined;
    return this.getWords(macHigh(key), key | 0);
  }

  /**
   * Hot path: the value for the key whose high word is `high` (key / 2^32, rounded down) and whose
   * low 32 bits are `low` (either sign). Never allocates, never throws.
   */
  getWords(high: number, low: number): V | undefined {
    const hi = this.hi;
    const lo = this.lo;
    const mask = this.mask;
    for (let i = slotOf(high, low) & mask; ; i = (i + 1) & mask) {
      const h = hi[i];
      if (h === high && lo[i] === (low | 0)) return this.vals[i];
      if (h === EMPTY) return undefined;
    }
  }

  /** Whether `key` is set. */
  has(key: number): boolean {
    return this.get(key) !== undefined;
  }

  /** Sets `key` (a whole number, 0 <= key < 2^53) to `value`; an undefined value deletes it. */
  set(key: number, value: V): this {
    if (!Number.isSafeInteger(key) || key < 0)
      throw fdbError(
        FdbErrorCode.badEntry,
        `NumberMap key ${key} is not a whole number in [0, 2^53)`,
      );
    if (value === undefined) {
      this.delete(key);
      return this;
    }
    if ((this.count + 1) * 2 > this.hi.length) this.grow();
    const i = this.find(macHigh(key), key | 0);
    if (this.hi[i] === EMPTY) this.count++;
    this.hi[i] = macHigh(key);
    this.lo[i] = key | 0;
    this.vals[i] = value;
    return this;
  }

  /** Removes `key`; false when it was not set (or is not a key at all). */
  delete(key: number): boolean {
    if (!Number.isSafeInteger(key) || key < 0) return false;
    const hi = this.hi;
    const lo = this.lo;
    const mask = this.mask;
    const i = this.find(macHigh(key), key | 0);
    if (hi[i] === EMPTY) return false;
    // Shift back every later entry of the run whose home is not between the hole and it (Knuth 6.4 R).
    let hole = i;
    for (let j = (i + 1) & mask; hi[j] !== EMPTY; j = (j + 1) & mask) {
      const home = slotOf(hi[j], lo[j]) & mask;
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      hi[hole] = hi[j];
      lo[hole] = lo[j];
      this.vals[hole] = this.vals[j];
      hole = j;
    }
    hi[hole] = EMPTY;
    this.vals[hole] = undefined;
    this.count--;
    return true;
  }

  /** Removes every key, keeping the capacity. */
  clear(): void {
    this.hi.fill(EMPTY);
    this.vals.fill(undefined);
    this.count = 0;
  }

  /** Every key and its value, in slot order (not insertion order). */
  *entries(): IterableIterator<[number, V]> {
    for (let i = 0; i < this.hi.length; i++)
      if (this.hi[i] !== EMPTY)
        yield [this.hi[i] * 0x100000000 + (this.lo[i] >>> 0), this.vals[i] as V];
  }

  /** Every value, in slot order (not insertion order). */
  *values(): IterableIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  /** The slot holding the key, or the empty slot that ends its run. */
  private find(high: number, low: number): number {
    const mask = this.mask;
    let i = slotOf(high, low) & mask;
    while (this.hi[i] !== EMPTY && (this.hi[i] !== high || this.lo[i] !== low)) i = (i + 1) & mask;
    return i;
  }

  private grow(): void {
    const entries = [...this.entries()];
    const slots = this.hi.length * 2;
    this.hi = new Int32Array(slots).fill(EMPTY);
    this.lo = new Int32Array(slots);
    this.vals = new Array<V | undefined>(slots).fill(undefined);
    this.mask = slots - 1;
    this.count = 0;
    for (const [k, v] of entries) this.set(k, v);
  }
}

const EMPTY = -1;

/** The high word of a number below 2^53 (for a MAC, its first two octets). */
export function macHigh(key: number): number {
  return Math.floor(key / 0x100000000);
}

/** Mixes a key's two words into a 32-bit slot hash. */
function slotOf(high: number, low: number): number {
  const h = Math.imul(low ^ Math.imul(high, 0x27d4eb2d), 0x9e3779b1);
  return h ^ (h >>> 15);
}
