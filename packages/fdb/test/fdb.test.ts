import { formatIpv4, isWeftError, parseIpv4, parseIpv6, parseMac } from '@weft/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Fdb, type FdbEntryInput } from '../src/index.js';

const mac = (s: string) => parseMac(s);
const B = mac('02:00:00:00:02:01');
const C = mac('02:00:00:00:03:01');
const ip = (s: string) => parseIpv4(s);

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('FDB', () => {
  it('static beats learned: learning never overrides a static entry', () => {
    const fdb = new Fdb();
    fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0.2' });
    expect(fdb.learn4(B, ip('198.18.0.66'), 8472, 1)).toBe(false);
    expect(formatIpv4(fdb.lookup(B)!.remote4)).toBe('198.18.0.2');
    expect(fdb.lookup(B)!.isStatic).toBe(true);
    expect(fdb.learnedCount).toBe(0);
  });

  it('a static entry added later replaces a learned one', () => {
    const fdb = new Fdb();
    fdb.learn4(B, ip('198.18.0.66'), 8472, 1);
    const events = fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0.2' });
    expect(events.map((e) => `${e.kind} ${e.entry.dst} ${e.entry.static}`)).toEqual([
      'removed 198.18.0.66 false',
      'added 198.18.0.2 true',
    ]);
    expect(fdb.lookup(B)!.remote4).toBe(ip('198.18.0.2'));
  });

  it('learned entries age out after 300 s unseen (fake clock), and seeing them refreshes', () => {
    const c = clock();
    const fdb = new Fdb({ now: c.now });
    expect(fdb.learn4(B, ip('198.18.0.2'), 8472, 1)).toBe(true);
    c.advance(299_000);
    expect(fdb.lookup(B)).toBeDefined();
    expect(fdb.learn4(B, ip('198.18.0.2'), 8472, 1)).toBe(false); // refresh, no change
    c.advance(299_000);
    expect(fdb.lookup(B)).toBeDefined();
    c.advance(1_000);
    expect(fdb.lookup(B)).toBeUndefined();
    expect(fdb.dump()).toEqual([]);
    expect(fdb.expire().map((e) => e.kind)).toEqual(['removed']);
    expect(fdb.learnedCount).toBe(0);
  });

  it('a moved MAC updates in place and says so', () => {
    const fdb = new Fdb();
    fdb.learn4(B, ip('198.18.0.2'), 8472, 1);
    const entry = fdb.lookup(B);
    const events: string[] = [];
    fdb.onChange((e) => events.push(`${e.kind} ${e.previous?.dst} -> ${e.entry.dst}`));
    expect(fdb.learn4(B, ip('198.18.0.3'), 8472, 1)).toBe(true);
    expect(fdb.lookup(B)).toBe(entry);
    expect(fdb.lookup(B)!.remote4).toBe(ip('198.18.0.3'));
    expect(events).toEqual(['changed 198.18.0.2 -> 198.18.0.3']);
  });

  it('evicts the least recently seen learned entry, never a static one', () => {
    const c = clock();
    const fdb = new Fdb({ maxLearned: 3, now: c.now });
    fdb.add({ mac: '02:00:00:00:00:99', dst: '198.18.0.99' });
    for (let i = 1; i <= 3; i++) {
      fdb.learn4(i * 2 * 2 ** 40 + i, ip(`198.18.0.${i}`), 8472, 1);
      c.advance(1_500);
    }
    fdb.learn4(2 * 2 ** 40 + 1, ip('198.18.0.1'), 8472, 1); // the first is seen again
    const evicted: string[] = [];
    fdb.onChange((e) => e.kind === 'removed' && evicted.push(e.entry.dst));
    fdb.learn4(8 * 2 ** 40 + 4, ip('198.18.0.4'), 8472, 1);
    expect(evicted).toEqual(['198.18.0.2']);
    expect(fdb.overflows).toBe(1);
    expect(fdb.learnedCount).toBe(3);
    expect(fdb.lookup(mac('02:00:00:00:00:99'))).toBeDefined();
    expect(fdb.lookup(2 * 2 ** 40 + 1)).toBeDefined();
  });

  it("the hot path's word and byte forms agree with lookup, destinations and learn4", () => {
    const c = clock();
    const fdb = new Fdb({ now: c.now });
    fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0.2' });
    fdb.appendDefault('198.18.0.9');
    const frame = Buffer.from('02000000030100000000000000', 'hex');
    // Learned from a frame's source MAC (here at offset 0), behind an underlay address >= 2^31 given signed.
    expect(fdb.learn4At(frame, 0, ip('198.18.0.3') | 0, 8472, 1)).toBe(true);
    expect(fdb.learn4At(frame, 0, ip('198.18.0.3'), 8472, 1)).toBe(false);
    expect(fdb.lookup(C)?.remote4).toBe(ip('198.18.0.3'));
    for (const m of [B, C, mac('02:00:00:00:04:01')]) {
      expect(fdb.lookupWords(Math.floor(m / 2 ** 32), m | 0)).toBe(fdb.lookup(m));
      const at = Buffer.alloc(8);
      at.writeUIntBE(m, 2, 6);
      expect(fdb.destinationsAt(at, 2)).toBe(fdb.destinations(m));
    }
    // Group and all-zeros sources are never learned, nor a static MAC.
    for (const hex of ['ffffffffffff', '01005e000001', '000000000000', '020000000201'])
      expect(fdb.learn4At(Buffer.from(hex, 'hex'), 0, 1, 8472, 1)).toBe(false);
    // The hot path judges age by the last expire() (or tick()).
    c.advance(300_000);
    expect(fdb.lookupWords(Math.floor(C / 2 ** 32), C | 0)).toBeDefined();
    fdb.tick();
    expect(fdb.lookupWords(Math.floor(C / 2 ** 32), C | 0)).toBeUndefined();
  });

  it('never learns group or all-zeros source MACs', () => {
    const fdb = new Fdb();
    expect(fdb.learn4(0xffffffffffff, ip('198.18.0.2'), 8472, 1)).toBe(false);
    expect(fdb.learn4(mac('01:00:5e:00:00:01'), ip('198.18.0.2'), 8472, 1)).toBe(false);
    expect(fdb.learn4(0, ip('198.18.0.2'), 8472, 1)).toBe(false);
    expect(fdb.learnedCount).toBe(0);
  });

  it('learns behind IPv6 underlay addresses', () => {
    const fdb = new Fdb();
    const pkt = new Uint8Array(40);
    pkt.set(parseIpv6('fd00::2'), 8);
    expect(fdb.learn6(B, pkt, 8, 4789, 42)).toBe(true);
    expect(fdb.learn6(B, pkt, 8, 4789, 42)).toBe(false);
    expect(fdb.dump()).toEqual([
      {
        mac: '02:00:00:00:02:01',
        dst: 'fd00::2',
        port: 4789,
        vni: 42,
        static: false,
        ageSeconds: 0,
      },
    ]);
    expect(fdb.lookup(B)!.remote4).toBe(-1);
  });
});

describe('the all-zeros default list: head-end replication like the kernel', () => {
  it('append adds a destination, a duplicate append is a no-op, delete removes one', () => {
    const fdb = new Fdb();
    expect(fdb.appendDefault('198.18.0.2').length).toBe(1);
    expect(fdb.appendDefault('198.18.0.3').length).toBe(1);
    expect(fdb.appendDefault('198.18.0.2')).toEqual([]);
    expect(fdb.defaults.map((e) => formatIpv4(e.remote4))).toEqual(['198.18.0.2', '198.18.0.3']);
    expect(fdb.removeDefault('198.18.0.2').map((e) => `${e.kind} ${e.entry.dst}`)).toEqual([
      'removed 198.18.0.2',
    ]);
    expect(fdb.defaults.map((e) => formatIpv4(e.remote4))).toEqual(['198.18.0.3']);
  });

  it('broadcast, multicast and unknown unicast get the whole list; a known unicast only its entry', () => {
    const fdb = new Fdb();
    fdb.applySnapshot([
      { mac: '00:00:00:00:00:00', dst: '198.18.0.2' },
      { mac: '00:00:00:00:00:00', dst: '198.18.0.3' },
      { mac: '02:00:00:00:02:01', dst: '198.18.0.2' },
    ]);
    const list = (m: number) => fdb.destinations(m).map((e) => formatIpv4(e.remote4));
    expect(list(0xffffffffffff)).toEqual(['198.18.0.2', '198.18.0.3']);
    expect(list(mac('33:33:00:00:00:01'))).toEqual(['198.18.0.2', '198.18.0.3']);
    expect(list(C)).toEqual(['198.18.0.2', '198.18.0.3']);
    expect(list(B)).toEqual(['198.18.0.2']);
    fdb.learn4(C, ip('198.18.0.3'), 8472, 1);
    expect(list(C)).toEqual(['198.18.0.3']);
    // The same list object comes back each time: nothing allocated per packet.
    expect(fdb.destinations(0xffffffffffff)).toBe(fdb.destinations(C + 1));
  });

  it('a static entry for a group MAC wins over the list, as the kernel looks up exact MACs first', () => {
    const fdb = new Fdb();
    fdb.appendDefault('198.18.0.2');
    fdb.appendDefault('198.18.0.3');
    fdb.add({ mac: 'ff:ff:ff:ff:ff:ff', dst: '198.18.0.6' });
    const list = (m: number) => fdb.destinations(m).map((e) => formatIpv4(e.remote4));
    expect(list(0xffffffffffff)).toEqual(['198.18.0.6']);
    expect(list(mac('33:33:00:00:00:01'))).toEqual(['198.18.0.2', '198.18.0.3']);
    fdb.remove('ff:ff:ff:ff:ff:ff');
    expect(list(0xffffffffffff)).toEqual(['198.18.0.2', '198.18.0.3']);
  });

  it('an aged learned entry falls back to the list until it is seen again', () => {
    const c = clock();
    const fdb = new Fdb({ now: c.now });
    fdb.appendDefault('198.18.0.2');
    fdb.appendDefault('198.18.0.3');
    fdb.learn4(C, ip('198.18.0.3'), 8472, 1);
    expect(fdb.destinations(C).map((e) => formatIpv4(e.remote4))).toEqual(['198.18.0.3']);
    c.advance(300_000);
    expect(fdb.destinations(C)).toBe(fdb.defaults);
    expect(fdb.learn4(C, ip('198.18.0.3'), 8472, 1)).toBe(false);
    expect(fdb.destinations(C).map((e) => formatIpv4(e.remote4))).toEqual(['198.18.0.3']);
  });

  it('an empty list means drop', () => {
    expect(new Fdb().destinations(0xffffffffffff)).toEqual([]);
  });

  it('a reader holding the list keeps a consistent copy across updates', () => {
    const fdb = new Fdb();
    fdb.appendDefault('198.18.0.2');
    const held = fdb.defaults;
    fdb.appendDefault('198.18.0.3');
    expect(held.length).toBe(1);
    expect(fdb.defaults.length).toBe(2);
  });
});

describe('FDB control plane', () => {
  const entries: FdbEntryInput[] = [
    { mac: '02:00:00:00:02:01', dst: '198.18.0.2' },
    { mac: '02:00:00:00:03:01', dst: '198.18.0.3', port: 4789, vni: 4096 },
    { mac: '00:00:00:00:00:00', dst: '198.18.0.2' },
  ];

  it('snapshots are idempotent and emit differences', () => {
    const fdb = new Fdb();
    expect(fdb.applySnapshot(entries).length).toBe(3);
    expect(fdb.applySnapshot(entries)).toEqual([]);
    const events = fdb.applySnapshot([entries[0], { ...entries[1], vni: 7 }]);
    expect(events.map((e) => `${e.kind} ${e.entry.mac} ${e.entry.vni}`).sort()).toEqual([
      'changed 02:00:00:00:03:01 7',
      'removed 00:00:00:00:00:00 1',
    ]);
    expect(fdb.dump()).toEqual([
      { mac: '02:00:00:00:02:01', dst: '198.18.0.2', port: 8472, vni: 1, static: true },
      { mac: '02:00:00:00:03:01', dst: '198.18.0.3', port: 4789, vni: 7, static: true },
    ]);
  });

  it('snapshot idempotence holds for random entry sets', () => {
    const entry = fc.record({
      mac: fc.constantFrom(
        '00:00:00:00:00:00',
        '02:00:00:00:02:01',
        '02:00:00:00:03:01',
        '0a:00:00:00:00:01',
      ),
      dst: fc.constantFrom('198.18.0.2', '198.18.0.3', 'fd00::9'),
      port: fc.constantFrom(8472, 4789),
    });
    fc.assert(
      fc.property(
        fc.array(entry, { maxLength: 8 }),
        fc.array(entry, { maxLength: 8 }),
        (first, second) => {
          const dedupe = (xs: typeof first) => [
            ...new Map(
              xs.map((x) => [
                x.mac === '00:00:00:00:00:00' ? `${x.mac}${x.dst}${x.port}` : x.mac,
                x,
              ]),
            ).values(),
          ];
          const fdb = new Fdb();
          fdb.applySnapshot(dedupe(first));
          fdb.applySnapshot(dedupe(second));
          const dump = fdb.dump();
          expect(fdb.applySnapshot(dedupe(second))).toEqual([]);
          expect(fdb.dump()).toEqual(dump);
        },
      ),
    );
  });

  it('rejects bad input by code, applying nothing', () => {
    const fdb = new Fdb();
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return isWeftError(err) ? err.code : 'not a WeftError';
      }
    };
    expect(
      code(() => fdb.applySnapshot([entries[0], { mac: '02:00:00:00:02', dst: '198.18.0.2' }])),
    ).toBe('ERR_BAD_MAC');
    expect(code(() => fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0' }))).toBe('ERR_BAD_IP');
    expect(code(() => fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0.2', vni: 2 ** 24 }))).toBe(
      'ERR_FDB_BAD_VNI',
    );
    expect(code(() => fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0.2', port: 0 }))).toBe(
      'ERR_FDB_BAD_PORT',
    );
    expect(code(() => fdb.applySnapshot([entries[0], { ...entries[0], dst: '198.18.0.9' }]))).toBe(
      'ERR_FDB_DUPLICATE',
    );
    expect(fdb.size).toBe(0);
    expect(() => fdb.applySnapshot([entries[0], { mac: 'zz', dst: '198.18.0.2' }])).toThrow(
      /fdb entry 1 \(zz dst 198\.18\.0\.2\): not a MAC address/,
    );
  });
});
