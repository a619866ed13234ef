import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { macHigh, NumberMap } from '../src/index.js';

describe('NumberMap', () => {
  it('behaves as a Map under any sequence of set, delete and get (IPv4-sized and MAC-sized keys)', () => {
    const key = fc.oneof(
      fc.integer({ min: 0, max: 40 }),
      fc.integer({ min: 0x7ffffff0, max: 0x80000010 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffffffff }),
    );
    const op = fc.tuple(fc.constantFrom('set', 'delete', 'get'), key, fc.nat());
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const m = new NumberMap<number>();
        const ref = new Map<number, number>();
        for (const [kind, k, v] of ops) {
          if (kind === 'set') {
            m.set(k, v);
            ref.set(k, v);
          } else if (kind === 'delete') {
            expect(m.delete(k)).toBe(ref.delete(k));
          }
          expect(m.get(k)).toBe(ref.get(k));
          expect(m.getWords(macHigh(k), k | 0)).toBe(ref.get(k));
          expect(m.size).toBe(ref.size);
        }
        for (const [k, v] of ref) expect(m.get(k)).toBe(v);
        expect(new Map(m.entries())).toEqual(ref);
      }),
      { numRuns: 300 },
    );
  });

  it('grows past its first capacity and keeps every entry', () => {
    const m = new NumberMap<number>();
    for (let i = 0; i < 10_000; i++) m.set(0xc0a80000 + i * 7, i);
    expect(m.size).toBe(10_000);
    for (let i = 0; i < 10_000; i++) expect(m.get(0xc0a80000 + i * 7)).toBe(i);
    for (let i = 0; i < 10_000; i += 2) m.delete(0xc0a80000 + i * 7);
    for (let i = 0; i < 10_000; i++) expect(m.get(0xc0a80000 + i * 7)).toBe(i % 2 ? i : undefined);
  });

  it('refuses keys that are not whole numbers in [0, 2^53); lookups of such keys find nothing', () => {
    const m = new NumberMap<number>();
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53, Number.POSITIVE_INFINITY])
      expect(() => m.set(bad, 1)).toThrow(expect.objectContaining({ code: 'ERR_FDB_BAD_ENTRY' }));
    m.set(0, 1);
    for (const bad of [-1, 0.5, Number.NaN, 'x' as unknown as number])
      expect(m.get(bad)).toBeUndefined();
    expect(m.delete(-1)).toBe(false);
  });
});
