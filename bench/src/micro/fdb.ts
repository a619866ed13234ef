import { formatIpv4, formatMac } from '@weft/core';
import { Fdb, NeighborTable, type NextHop, RouteTable } from '@weft/fdb';
import { consume, type MicroCase, type MicroSuite } from './suite.js';

const OPS = 1000;
const SIZES = [10, 1_000, 10_000];

/** Deterministic pseudo-random numbers, so every run measures the same tables. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
}

/**
 * `n` routes: mostly /24s (one per node), a few /16s and /32s. `cluster` places them inside
 * 10.0.0.0/8, as a flannel network for a 5,000-node cluster would be; `anywhere` scatters them
 * over the whole address space, the worst case for the trie's memory footprint.
 */
function routeTable(
  n: number,
  spread: 'cluster' | 'anywhere' = 'cluster',
): { table: RouteTable; probes: Uint32Array } {
  const next = rng(n);
  const routes = new Map<string, { dst: string; underlay: string }>();
  while (routes.size < n) {
    const r = spread === 'cluster' ? (0x0a000000 | (next() & 0x00ffffff)) >>> 0 : next();
    const kind = r % 20;
    const len = kind === 0 ? 16 : kind === 1 ? 32 : 24;
    const net = len === 32 ? r : len === 24 ? r & 0xffffff00 : r & 0xffff0000;
    const dst = `${formatIpv4(net >>> 0)}/${len}`;
    routes.set(dst, { dst, underlay: formatIpv4((0xc6120000 | (routes.size & 0xffff)) >>> 0) });
  }
  const table = new RouteTable();
  table.applySnapshot([...routes.values()]);
  const list = [...routes.values()];
  const probes = new Uint32Array(OPS);
  for (let i = 0; i < OPS; i++) {
    const [addr, len] = list[next() % list.length].dst.split('/');
    const base = addr.split('.').reduce((a, o) => (a << 8) | Number(o), 0) >>> 0;
    probes[i] = (base | (next() & (Number(len) === 32 ? 0 : (1 << (32 - Number(len))) - 1))) >>> 0;
  }
  return { table, probes };
}

/** `n` IPv6 routes: a /64 per node under fc00::/16, probed with addresses inside them. */
function routeTable6(n: number): { table: RouteTable; probes: Uint8Array } {
  const next = rng(n + 6);
  const nets = new Set<number>();
  while (nets.size < n) nets.add(next() & 0xffffff);
  const list = [...nets];
  const hex = (v: number) => (v & 0xffff).toString(16);
  const table = new RouteTable();
  table.applySnapshot(
    list.map((v) => ({ dst: `fc00:${hex(v >>> 16)}:${hex(v)}::/64`, underlay: '198.18.0.2' })),
  );
  // OPS addresses of 16 bytes each, back to back, as they would sit in packet buffers.
  const probes = new Uint8Array(OPS * 16);
  for (let i = 0; i < OPS; i++) {
    const v = list[next() % list.length];
    const o = i * 16;
    probes[o] = 0xfc;
    probes[o + 3] = (v >>> 16) & 0xff;
    probes[o + 4] = (v >>> 8) & 0xff;
    probes[o + 5] = v & 0xff;
    for (let b = 8; b < 16; b++) probes[o + b] = next() & 0xff;
  }
  return { table, probes };
}

/**
 * The "small cache of recent destinations": 256 direct-mapped slots in front of
 * lookup4. Measured against the plain lookup on traffic with locality (16 hot destinations),
 * where a cache has its best case; the table keeps no cache because it does not win here.
 */
function cachedLookup(table: RouteTable): (ip: number) => NextHop | undefined {
  const keys = new Float64Array(256).fill(-1);
  const hops: (NextHop | undefined)[] = new Array(256).fill(undefined);
  return (ip) => {
    const slot = (ip ^ (ip >>> 8) ^ (ip >>> 16)) & 0xff;
    if (keys[slot] === ip) return hops[slot];
    const hop = table.lookup4(ip);
    keys[slot] = ip;
    hops[slot] = hop;
    return hop;
  };
}

function neighborTable(n: number): { table: NeighborTable; probes: Uint32Array } {
  const table = new NeighborTable();
  const ips: number[] = [];
  for (let i = 0; i < n; i++) ips.push((0x0a000000 + i * 256) >>> 0);
  table.applySnapshot(
    ips.map((ip, i) => ({ ip: formatIpv4(ip), mac: formatMac(0x020000000000 + i) })),
  );
  const next = rng(7);
  return { table, probes: Uint32Array.from({ length: OPS }, () => ips[next() % n]) };
}

function fdb(n: number) {
  const nowMs = 1_000_000;
  const table = new Fdb({ maxLearned: n, now: () => nowMs });
  const macs: number[] = [];
  const remoteOf = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const mac = 0x020000000000 + i * 7;
    macs.push(mac);
    remoteOf.set(mac, 0xc6120000 + (i & 0xff));
    table.learn4(mac, remoteOf.get(mac)!, 8472, 1, nowMs);
  }
  const next = rng(11);
  const probes = Float64Array.from({ length: OPS }, () => macs[next() % n]);
  const remotes = Uint32Array.from(probes, (mac) => remoteOf.get(mac)!);
  // Within the same second as the last sighting: the per-packet case for a busy MAC.
  return { table, probes, remotes, nowMs: nowMs + 200 };
}

const cases: MicroCase[] = [];
for (const n of SIZES) {
  const { table, probes } = routeTable(n);
  cases.push({
    name: `route lookup4 @ ${n} routes`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += table.lookup4(probes[i])?.port ?? 1;
      consume(s);
    },
  });
}
for (const n of SIZES) {
  const { table, probes } = routeTable(n, 'anywhere');
  cases.push({
    name: `route lookup4, routes anywhere @ ${n} routes`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += table.lookup4(probes[i])?.port ?? 1;
      consume(s);
    },
  });
}
for (const n of SIZES) {
  const { table, probes } = routeTable(n);
  // 16 hot destinations repeated: the locality real traffic has, the best case for a cache.
  const hot = Uint32Array.from({ length: OPS }, (_, i) => probes[i % 16]);
  const cached = cachedLookup(table);
  cases.push({
    name: `route lookup4, 16 hot dsts @ ${n} routes`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += table.lookup4(hot[i])?.port ?? 1;
      consume(s);
    },
  });
  cases.push({
    name: `route lookup4 + 256-slot cache, 16 hot dsts @ ${n} routes`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += cached(hot[i])?.port ?? 1;
      consume(s);
    },
  });
}
for (const n of SIZES) {
  const { table, probes } = routeTable6(n);
  cases.push({
    name: `route lookup6 @ ${n} routes`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += table.lookup6(probes, i * 16)?.port ?? 1;
      consume(s);
    },
  });
}
for (const n of SIZES) {
  const { table, probes } = neighborTable(n);
  cases.push({
    name: `neighbor lookup4 @ ${n} entries`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += table.lookup4(probes[i]);
      consume(s);
    },
  });
}
for (const n of SIZES) {
  const { table, probes, remotes, nowMs } = fdb(n);
  cases.push({
    name: `fdb lookup @ ${n} entries`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++) s += table.lookup(probes[i], nowMs)?.port ?? 1;
      consume(s);
    },
  });
  cases.push({
    name: `fdb learn, seen again @ ${n} entries`,
    opsPerCall: OPS,
    fn() {
      let s = 0;
      for (let i = 0; i < OPS; i++)
        s += table.learn4(probes[i], remotes[i], 8472, 1, nowMs) ? 1 : 0;
      consume(s);
    },
  });
}

export const fdbSuite: MicroSuite = { name: 'fdb', cases };
