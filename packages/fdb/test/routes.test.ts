import { formatCidr, formatIpv4, isWeftError, parseIpv6 } from '@weft/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type RouteInput, RouteTable } from '../src/index.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isWeftError(err) ? err.code : `not a WeftError: ${err}`;
  }
  return undefined;
}

/** The obvious LPM: scan every route, keep the longest that matches. */
function bruteForce4(
  routes: { net: number; len: number; tag: string }[],
  ip: number,
): string | undefined {
  let best: { len: number; tag: string } | undefined;
  for (const r of routes) {
    const mask = r.len === 0 ? 0 : (0xffffffff << (32 - r.len)) >>> 0;
    if ((ip & mask) >>> 0 === r.net && (!best || r.len > best.len)) best = r;
  }
  return best?.tag;
}

const mask4 = (ip: number, len: number) =>
  len === 0 ? 0 : (ip & ((0xffffffff << (32 - len)) >>> 0)) >>> 0;

describe('IPv4 longest-prefix match', () => {
  it('agrees with brute force on random route sets and addresses near them', () => {
    const route = fc.record({
      ip: fc.integer({ min: 0, max: 0xffffffff }),
      len: fc.integer({ min: 0, max: 32 }),
    });
    fc.assert(
      fc.property(
        fc.array(route, { maxLength: 40 }),
        fc.array(
          fc.tuple(
            fc.nat(39),
            fc.integer({ min: 0, max: 0xffffffff }),
            fc.integer({ min: 0, max: 32 }),
          ),
          { maxLength: 40 },
        ),
        (raw, probes) => {
          const byNet = new Map<string, { net: number; len: number; tag: string }>();
          for (const r of raw) {
            const net = mask4(r.ip, r.len);
            byNet.set(`${net}/${r.len}`, { net, len: r.len, tag: `${formatIpv4(net)}/${r.len}` });
          }
          const routes = [...byNet.values()];
          const table = new RouteTable();
          table.applySnapshot(routes.map((r) => ({ dst: r.tag, tag: r.tag })));
          // Probe addresses inside the routes (sharing a random number of leading bits), so matches happen.
          for (const [i, noise, keep] of probes) {
            const base = routes.length ? routes[i % routes.length].net : 0;
            const ip =
              (mask4(base, keep) |
                (noise & ~(keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0))) >>>
              0;
            expect(table.lookup4(ip)?.tag).toBe(bruteForce4(routes, ip));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('handles the flannel shape: /16 into the TUN, a /24 per remote node, /32 host routes', () => {
    const t = new RouteTable();
    t.applySnapshot([
      { dst: '10.244.0.0/16', tag: 'cluster' },
      {
        dst: '10.244.2.0/24',
        via: '10.244.2.0',
        underlay: '198.18.0.2',
        port: 8472,
        tag: 'node-b',
      },
      { dst: '10.244.3.0/24', via: '10.244.3.0', underlay: '198.18.0.3', tag: 'node-c' },
      { dst: '10.244.3.77/32', underlay: '198.18.0.9', tag: 'pinned' },
      { dst: '0.0.0.0/0', tag: 'default' },
    ]);
    expect(t.lookup('10.244.2.9')).toEqual({
      dst: '10.244.2.0/24',
      via: '10.244.2.0',
      underlay: '198.18.0.2',
      port: 8472,
      tag: 'node-b',
    });
    expect(t.lookup('10.244.3.77')?.tag).toBe('pinned');
    expect(t.lookup('10.244.3.78')?.tag).toBe('node-c');
    expect(t.lookup('10.244.9.1')?.tag).toBe('cluster');
    expect(t.lookup('8.8.8.8')?.tag).toBe('default');
    const hop = t.lookup4(0x0af40209)!;
    expect(hop.gateway4).toBe(0x0af40200);
    expect(hop.underlay4).toBe(0xc6120002);
  });
});

describe('IPv6 longest-prefix match', () => {
  it('agrees with brute force on random route sets', () => {
    const route = fc.record({
      bytes: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      len: fc.integer({ min: 0, max: 128 }),
    });
    fc.assert(
      fc.property(
        fc.array(route, { maxLength: 20 }),
        fc.array(
          fc.tuple(
            fc.nat(19),
            fc.uint8Array({ minLength: 16, maxLength: 16 }),
            fc.integer({ min: 0, max: 128 }),
          ),
          { maxLength: 30 },
        ),
        (raw, probes) => {
          const nets = new Map<string, { net: Uint8Array; len: number }>();
          for (const r of raw) {
            const net = maskBytes(r.bytes, r.len);
            nets.set(`${Buffer.from(net).toString('hex')}/${r.len}`, { net, len: r.len });
          }
          const routes = [...nets.values()].map((r) => ({
            ...r,
            dst: formatCidr({ family: 6, address: r.net, prefixLength: r.len }),
          }));
          const table = new RouteTable();
          table.applySnapshot(routes.map((r) => ({ dst: r.dst, tag: r.dst })));
          for (const [i, noise, keep] of probes) {
            const base = routes.length ? routes[i % routes.length].net : new Uint8Array(16);
            const probe = new Uint8Array(16);
            for (let b = 0; b < 128; b++) {
              const bit = b < keep ? base[b >> 3] : noise[b >> 3];
              probe[b >> 3] |= bit & (0x80 >> (b & 7));
            }
            let best: { len: number; dst: string } | undefined;
            for (const r of routes)
              if (bytesEqual(maskBytes(probe, r.len), r.net) && (!best || r.len > best.len))
                best = r;
            const padded = new Uint8Array(20);
            padded.set(probe, 4);
            expect(table.lookup6(padded, 4)?.tag).toBe(best?.dst);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('reads the destination straight from a packet buffer', () => {
    const t = new RouteTable();
    t.applySnapshot([
      { dst: 'fc00::/48', tag: 'cluster6' },
      { dst: 'fc00:0:0:2::/64', via: 'fc00:0:0:2::', underlay: '198.18.0.2', tag: 'node-b' },
    ]);
    const packet = Buffer.alloc(40);
    packet.set(parseIpv6('fc00:0:0:2::99'), 24);
    expect(t.lookup6(packet, 24)?.tag).toBe('node-b');
    packet.set(parseIpv6('fc00:0:0:3::1'), 24);
    expect(t.lookup6(packet, 24)?.tag).toBe('cluster6');
    expect(t.lookup('fd00::1')).toBeUndefined();
  });
});

function maskBytes(bytes: Uint8Array, len: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, len - i * 8));
    out[i] = bytes[i] & ((0xff00 >> bits) & 0xff);
  }
  return out;
}
function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.every((x, i) => x === b[i]);
}

describe('control plane', () => {
  const routes: RouteInput[] = [
    { dst: '10.244.2.0/24', via: '10.244.2.0', underlay: '198.18.0.2', tag: 'b' },
    { dst: '10.244.3.0/24', via: '10.244.3.0', underlay: '198.18.0.3', tag: 'c' },
  ];

  it('a snapshot applied twice changes nothing the second time and keeps next-hop identity', () => {
    const t = new RouteTable();
    const seen: string[] = [];
    t.onChange((e) => seen.push(`${e.kind} ${e.entry.dst}`));
    expect(t.applySnapshot(routes).map((e) => e.kind)).toEqual(['added', 'added']);
    const hop = t.lookup4(0x0af40201);
    expect(t.applySnapshot(routes)).toEqual([]);
    expect(t.lookup4(0x0af40201)).toBe(hop);
    expect(seen).toEqual(['added 10.244.2.0/24', 'added 10.244.3.0/24']);
  });

  it('snapshot idempotence holds for random route sets, and diffs reach the same state', () => {
    const route = fc.record({
      dst: fc.constantFrom(
        '10.244.0.0/16',
        '10.244.2.0/24',
        '10.244.3.0/24',
        'fc00::/64',
        '0.0.0.0/0',
      ),
      underlay: fc.constantFrom('198.18.0.2', '198.18.0.3', 'fd00::2'),
    });
    const dedupe = (xs: { dst: string; underlay: string }[]) => [
      ...new Map(xs.map((x) => [x.dst, x])).values(),
    ];
    fc.assert(
      fc.property(fc.array(route, { maxLength: 6 }), fc.array(route, { maxLength: 6 }), (a, b) => {
        const t = new RouteTable();
        t.applySnapshot(dedupe(a));
        const before = t.dump();
        t.applySnapshot(dedupe(b));
        const dump = t.dump();
        expect(t.applySnapshot(dedupe(b))).toEqual([]);
        expect(t.dump()).toEqual(dump);
        // The same change as a diff, from the same start, ends in the same table.
        const d = new RouteTable();
        d.applySnapshot(dedupe(a));
        expect(d.dump()).toEqual(before);
        d.applyDiff({
          remove: before.map((r) => r.dst).filter((dst) => !dedupe(b).some((x) => x.dst === dst)),
          add: dedupe(b),
        });
        const key = (rs: { dst: string }[]) => [...rs].sort((x, y) => x.dst.localeCompare(y.dst));
        expect(key(d.dump())).toEqual(key(dump));
        for (const probe of ['10.244.2.9', '10.244.9.9', '8.8.8.8', 'fc00::9'])
          expect(d.lookup(probe)).toEqual(t.lookup(probe));
      }),
    );
  });

  it('a snapshot emits the difference: added, changed, removed', () => {
    const t = new RouteTable();
    t.applySnapshot(routes);
    const events = t.applySnapshot([
      { ...routes[0], underlay: '198.18.0.22' },
      { dst: '10.244.4.0/24', via: '10.244.4.0', underlay: '198.18.0.4', tag: 'd' },
    ]);
    expect(events.map((e) => `${e.kind} ${e.entry.dst}`).sort()).toEqual([
      'added 10.244.4.0/24',
      'changed 10.244.2.0/24',
      'removed 10.244.3.0/24',
    ]);
    const changed = events.find((e) => e.kind === 'changed')!;
    expect(changed.previous?.underlay).toBe('198.18.0.2');
    expect(changed.entry.underlay).toBe('198.18.0.22');
    expect(t.lookup('10.244.3.1')).toBeUndefined();
  });

  it('a bad entry rejects the whole batch, naming it, and leaves the table as it was', () => {
    const t = new RouteTable();
    t.applySnapshot(routes);
    const before = t.dump();
    expect(() =>
      t.applyDiff({
        add: [{ dst: '10.244.5.0/24' }, { dst: '10.244.6.1/24' }],
        remove: ['10.244.2.0/24'],
      }),
    ).toThrow(
      /route entry 1 \(10\.244\.6\.1\/24\): host bits set .* did you mean 10\.244\.6\.0\/24\?; nothing in this batch was applied/,
    );
    expect(t.dump()).toEqual(before);
    expect(t.lookup('10.244.5.1')).toBeUndefined();
  });

  it('names every kind of bad input by code', () => {
    const t = new RouteTable();
    expect(codeOf(() => t.add({ dst: '10.244.1.0' }))).toBe('ERR_BAD_CIDR');
    expect(codeOf(() => t.add({ dst: 'ten/8' }))).toBe('ERR_BAD_CIDR');
    expect(codeOf(() => t.add({ dst: '10.244.1.1/24' }))).toBe('ERR_CIDR_HOST_BITS');
    expect(codeOf(() => t.add({ dst: '10.0.0.0/33' }))).toBe('ERR_BAD_PREFIX_LENGTH');
    expect(codeOf(() => t.add({ dst: '10.244.1.0/24', via: 'fc00::1' }))).toBe(
      'ERR_FDB_FAMILY_MISMATCH',
    );
    expect(codeOf(() => t.add({ dst: '10.244.1.0/24', via: '10.1' }))).toBe('ERR_BAD_IP');
    expect(codeOf(() => t.add({ dst: '10.244.1.0/24', port: 70000 }))).toBe('ERR_FDB_BAD_PORT');
    expect(
      codeOf(() =>
        t.applySnapshot([
          { dst: '10.0.0.0/8', tag: 'a' },
          { dst: '10.0.0.0/8', tag: 'b' },
        ]),
      ),
    ).toBe('ERR_FDB_DUPLICATE');
    expect(() => t.add({ dst: '10.244.1.0/24', via: 'fc00::1' })).toThrow(
      /gateway fc00::1 is IPv6 but the route to 10\.244\.1\.0\/24 is IPv4/,
    );
    // An IPv6 underlay for an IPv4 route is fine: IPv4 overlay over IPv6 underlay.
    expect(t.add({ dst: '10.244.1.0/24', underlay: 'fd00::2' })[0].entry.underlay).toBe('fd00::2');
  });

  it('removing and re-adding keeps lookups exact', () => {
    const t = new RouteTable();
    t.applySnapshot(routes);
    t.remove('10.244.2.0/24');
    expect(t.lookup('10.244.2.5')).toBeUndefined();
    expect(t.lookup('10.244.3.5')?.tag).toBe('c');
    t.add(routes[0]);
    expect(t.lookup('10.244.2.5')?.tag).toBe('b');
    expect(t.size).toBe(2);
  });
});
