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

  it('learned entries are bounded: the least recently confirmed is evicted and counted', () => {
    let now = 0;
    const t = new NeighborTable({ maxLearned: 3, now: () => now });
    t.add({ ip: '10.244.2.0', mac: '02:00:00:00:02:01' });
    for (let i = 1; i <= 3; i++) {
      t.learn4(parseIpv4(`10.244.2.${i}`), i);
      now += 1_500;
    }
    t.learn4(parseIpv4('10.244.2.1'), 1); // confirmed again: now the most recent
    const removed: string[] = [];
    t.onChange((e) => e.kind === 'removed' && removed.push(e.entry.ip));
    t.learn4(parseIpv4('10.244.2.4'), 4);
    expect(removed).toEqual(['10.244.2.2']);
    expect(t.overflows).toBe(1);
    expect(t.learnedCount).toBe(3);
    expect(t.size).toBe(4);
    expect(t.lookup4(parseIpv4('10.244.2.0'))).toBe(parseMac('02:00:00:00:02:01'));
  });

  it('60,000 learned addresses leave at most maxLearned entries (default 4096)', () => {
    const t = new NeighborTable();
    for (let i = 0; i < 60_000; i++) t.learn4(0x0af40000 + i, 0x020000000000 + i);
    expect(t.learnedCount).toBe(4096);
    expect(t.size).toBe(4096);
    expect(t.overflows).toBe(60_000 - 4096);
    // The most recent stay.
    expect(t.lookup4(0x0af40000 + 59_999)).toBe(0x020000000000 + 59_999);
    expect(t.lookup4(0x0af40000)).toBe(-1);
  });

  it('expire() forgets learned entries unconfirmed for ageingMs, never configured ones', () => {
    let now = 0;
    const t = new NeighborTable({ ageingMs: 60_000, now: () => now });
    t.add({ ip: '10.244.2.0', mac: '02:00:00:00:02:01', state: 'reachable' });
    t.learn4(parseIpv4('10.244.2.5'), 5);
    now += 30_000;
    t.learn4(parseIpv4('10.244.2.6'), 6);
    now += 30_000;
    expect(t.expire().map((e) => `${e.kind} ${e.entry.ip}`)).toEqual(['removed 10.244.2.5']);
    expect(t.lookup4(parseIpv4('10.244.2.6'))).toBe(6);
    now += 30_000;
    t.expire();
    expect(t.learnedCount).toBe(0);
    expect(t.dump().map((d) => d.ip)).toEqual(['10.244.2.0']);
  });

  it('looks up addresses given unsigned or signed (ip | 0), above 128.0.0.0 too', () => {
    const t = new NeighborTable();
    t.add({ ip: '192.168.2.0', mac: '02:00:00:00:02:01' });
    const a = parseIpv4('192.168.2.0');
    expect(t.entry4(a)?.mac).toBe(parseMac('02:00:00:00:02:01'));
    expect(t.entry4(a | 0)).toBe(t.entry4(a));
    t.learn4(parseIpv4('192.168.2.9') | 0, 9);
    expect(t.get('192.168.2.9')?.mac).toBe('00:00:00:00:00:09');
  });

  it('refuses a bad maxLearned or ageingMs', () => {
    for (const options of [{ maxLearned: 0 }, { ageingMs: Number.NaN }, { maxLearned: 1.5 }])
      expect(() => new NeighborTable(options)).toThrow(
        expect.objectContaining({ code: 'ERR_FDB_BAD_OPTION' }),
      );
  });
});
