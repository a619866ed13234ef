import { isWeftError, parseIpv4, parseIpv6, parseMac } from '@weft/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NeighborTable } from '../src/index.js';

describe('neighbor table', () => {
  it('holds permanent entries as flannel installs them, IPv4 and IPv6', () => {
    const t = new NeighborTable();
    t.applySnapshot([
      { ip: '10.244.2.0', mac: '02:00:00:00:02:01' },
      { ip: 'fc00:0:0:2::', mac: '02:00:00:00:02:01' },
    ]);
    expect(t.lookup4(parseIpv4('10.244.2.0'))).toBe(parseMac('02:00:00:00:02:01'));
    expect(t.lookup4(parseIpv4('10.244.3.0'))).toBe(-1);
    const pkt = new Uint8Array(40);
    pkt.set(parseIpv6('fc00:0:0:2::'), 24);
    expect(t.lookup6(pkt, 24)).toBe(parseMac('02:00:00:00:02:01'));
    expect(t.get('10.244.2.0')).toEqual({
      ip: '10.244.2.0',
      mac: '02:00:00:00:02:01',
      state: 'permanent',
      proxy: false,
      learned: false,
    });
  });

  it('answers ARP only for addresses we own or proxy', () => {
    const t = new NeighborTable();
    t.applySnapshot([
      { ip: '10.244.1.0', mac: '02:00:00:00:01:01', proxy: true },
      { ip: '10.244.2.0', mac: '02:00:00:00:02:01' },
    ]);
    expect(t.answerArp4(parseIpv4('10.244.1.0'))).toBe(parseMac('02:00:00:00:01:01'));
    expect(t.answerArp4(parseIpv4('10.244.2.0'))).toBe(-1);
    expect(t.answerArp4(parseIpv4('10.244.9.9'))).toBe(-1);
  });

  it('learned entries go reachable -> stale on a fake clock, never override configured ones', () => {
    let now = 0;
    const t = new NeighborTable({ reachableMs: 30_000, now: () => now });
    t.add({ ip: '10.244.2.0', mac: '02:00:00:00:02:01' });
    expect(t.learn4(parseIpv4('10.244.2.0'), 0x0a0000000001)).toBe(false);
    expect(t.lookup4(parseIpv4('10.244.2.0'))).toBe(parseMac('02:00:00:00:02:01'));
    expect(t.learn4(parseIpv4('10.244.3.0'), parseMac('02:00:00:00:03:01'))).toBe(true);
    expect(t.get('10.244.3.0')?.state).toBe('reachable');
    now += 30_000;
    expect(t.get('10.244.3.0')?.state).toBe('stale');
    expect(t.lookup4(parseIpv4('10.244.3.0'))).toBe(parseMac('02:00:00:00:03:01'));
    expect(t.learn4(parseIpv4('10.244.3.0'), parseMac('02:00:00:00:03:01'))).toBe(false);
    expect(t.get('10.244.3.0')?.state).toBe('reachable');
  });

  it('a snapshot keeps learned entries and is idempotent', () => {
    const t = new NeighborTable();
    t.learn4(parseIpv4('10.244.9.9'), 1);
    const snapshot = [{ ip: '10.244.2.0', mac: '02:00:00:00:02:01' }];
    expect(t.applySnapshot(snapshot).map((e) => e.kind)).toEqual(['added']);
    expect(t.applySnapshot(snapshot)).toEqual([]);
    expect(
      t
        .dump()
        .map((d) => d.ip)
        .sort(),
    ).toEqual(['10.244.2.0', '10.244.9.9']);
    expect(t.applySnapshot([]).map((e) => `${e.kind} ${e.entry.ip}`)).toEqual([
      'removed 10.244.2.0',
    ]);
  });

  it('emits added, changed and removed, after the whole batch is applied', () => {
    const t = new NeighborTable();
    const seen: string[] = [];
    t.onChange((e) => seen.push(`${e.kind} ${e.entry.ip} ${e.entry.mac} ${t.size}`));
    t.applySnapshot([
      { ip: '10.244.2.0', mac: '02:00:00:00:02:01' },
      { ip: '10.244.3.0', mac: '02:00:00:00:03:01' },
    ]);
    const events = t.applyDiff({
      add: [{ ip: '10.244.2.0', mac: '02:00:00:00:02:02' }],
      remove: ['10.244.3.0'],
    });
    expect(events.map((e) => `${e.kind} ${e.entry.ip} ${e.previous?.mac ?? '-'}`)).toEqual([
      'removed 10.244.3.0 -',
      'changed 10.244.2.0 02:00:00:00:02:01',
    ]);
    // Listeners of a batch see the table after the whole batch: size 2 after the first, 1 after.
    expect(seen).toEqual([
      'added 10.244.2.0 02:00:00:00:02:01 2',
      'added 10.244.3.0 02:00:00:00:03:01 2',
      'removed 10.244.3.0 02:00:00:00:03:01 1',
      'changed 10.244.2.0 02:00:00:00:02:02 1',
    ]);
  });

  it('snapshot idempotence holds for random entry sets', () => {
    const entry = fc.record({
      ip: fc.constantFrom('10.244.2.0', '10.244.3.0', 'fc00::2', 'fc00::3'),
      mac: fc.constantFrom('02:00:00:00:02:01', '02:00:00:00:03:01'),
      proxy: fc.boolean(),
    });
    const dedupe = (xs: { ip: string; mac: string; proxy: boolean }[]) => [
      ...new Map(xs.map((x) => [x.ip, x])).values(),
    ];
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 6 }), fc.array(entry, { maxLength: 6 }), (a, b) => {
        const t = new NeighborTable({ now: () => 0 });
        t.applySnapshot(dedupe(a));
        t.applySnapshot(dedupe(b));
        const dump = t.dump();
        expect(t.applySnapshot(dedupe(b))).toEqual([]);
        expect(t.dump()).toEqual(dump);
        expect(dump.map((d) => d.ip).sort()).toEqual(
          dedupe(b)
            .map((x) => x.ip)
            .sort(),
        );
      }),
    );
  });

  it('rejects bad input by code, applying nothing', () => {
    const t = new NeighborTable();
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return isWeftError(err) ? err.code : 'not a WeftError';
      }
    };
    expect(
      code(() =>
        t.applySnapshot([
          { ip: '10.244.2.0', mac: '02:00:00:00:02:01' },
          { ip: '10.244.2', mac: '02:00:00:00:02:01' },
        ]),
      ),
    ).toBe('ERR_BAD_IP');
    expect(code(() => t.add({ ip: '10.244.2.0', mac: '02:00:00:00:02' }))).toBe('ERR_BAD_MAC');
    expect(
      code(() =>
        t.add({ ip: '10.244.2.0', mac: '02:00:00:00:02:01', state: 'stale' as 'reachable' }),
      ),
    ).toBe('ERR_FDB_BAD_ENTRY');
    expect(t.size).toBe(0);
  });
});
