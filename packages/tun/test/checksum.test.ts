import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SumOp, sumRanges } from '../src/index.js';

/** RFC 1071 by the book: big-endian 16-bit words, an odd last byte padded, folded. */
function reference(buf: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2)
    sum += (buf[off + i] << 8) | (i + 1 < len ? buf[off + i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

describe('sumRanges: ones-complement sums of byte ranges in one native call', () => {
  it('agrees with RFC 1071 for any ranges, at odd and even offsets and lengths', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 5000 }),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 20 }),
        (bytes, picks) => {
          const ops = new Int32Array(picks.length * SumOp.words);
          picks.forEach(([a, b], k) => {
            const off = bytes.length === 0 ? 0 : a % (bytes.length + 1);
            ops[k * SumOp.words + SumOp.offset] = off;
            ops[k * SumOp.words + SumOp.length] = b % (bytes.length - off + 1);
          });
          sumRanges(bytes, ops, picks.length);
          for (let k = 0; k < picks.length; k++) {
            const o = k * SumOp.words;
            const want = reference(bytes, ops[o + SumOp.offset], ops[o + SumOp.length]);
            // 0 and 0xffff are the same number in ones' complement; the native sum keeps 0 only for all zero.
            expect(ops[o + SumOp.result] % 0xffff).toBe(want % 0xffff);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('sums a 64 KiB range of 0xff bytes without overflowing, and an empty one to 0', () => {
    const buf = Buffer.alloc(65_536, 0xff);
    const ops = new Int32Array([0, 65_536, -1, 3, 0, -1]);
    sumRanges(buf, ops, 2);
    expect(ops[2]).toBe(0xffff);
    expect(ops[5]).toBe(0);
  });

  it('checks every op before it writes any result, and names the bad one', () => {
    const buf = Buffer.alloc(100, 1);
    const ops = new Int32Array([0, 10, 7, 95, 10, 7]);
    expect(() => sumRanges(buf, ops, 2)).toThrow(
      expect.objectContaining({
        code: 'ERR_TUN_BAD_OPTION',
        message: expect.stringMatching(/op 1 \(offset 95, length 10\) lies outside buf/),
      }),
    );
    expect([ops[2], ops[5]]).toEqual([7, 7]);
    for (const bad of [
      [-1, 4],
      [0, -4],
      [0x7fffffff, 0x7fffffff],
    ]) {
      expect(() => sumRanges(buf, new Int32Array([...bad, 0]), 1)).toThrow(/op 0/);
    }
    // More ops than the table holds, a count that is not a whole number, the wrong array types.
    expect(() => sumRanges(buf, ops, 3)).toThrow(/count/);
    expect(() => sumRanges(buf, ops, 1.5)).toThrow(/count/);
    expect(() => sumRanges(buf, new Uint32Array(3) as unknown as Int32Array, 1)).toThrow(/ops/);
    expect(() => sumRanges('x' as unknown as Buffer, ops, 1)).toThrow(/buf/);
    const detached = new Uint8Array(64);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expect(() => sumRanges(detached, new Int32Array([0, 1, 0]), 1)).toThrow(/detached/);
  });
});
