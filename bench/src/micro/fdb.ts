import { formatIpv4, formatMac } from '@weft/core';
import { Fdb, NeighborTable, RouteTable } from '@weft/fdb';
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

/** `n` routes shaped like a big flannel cluster: /24s per node, a few /16s and /32s. */
function routeTable(n: number): { table: RouteTable; probes: Uint32Array } {
  const next = rng(n);
  const routes = new Map<string, { dst: string; underlay: string }>();
  while (routes.size < n) {
    const r = next();
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

function fdb(n: number, store: 'map' | 'lru-cache') {
  const nowMs = 1_000_000;
  const table = new Fdb({ learnedStore: store, maxLearned: n, now: () => nowMs });
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
for (const store of ['map', 'lru-cache'] as const) {
  for (const n of SIZES) {
    const { table, probes, remotes, nowMs } = fdb(n, store);
    cases.push({
      name: `fdb lookup (${store}) @ ${n} entries`,
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++) s += table.lookup(probes[i], nowMs)?.port ?? 1;
        consume(s);
      },
    });
    cases.push({
      name: `fdb learn, seen again (${store}) @ ${n} entries`,
      opsPerCall: OPS,
      fn() {
        let s = 0;
        for (let i = 0; i < OPS; i++)
          s += table.learn4(probes[i], remotes[i], 8472, 1, nowMs) ? 1 : 0;
        consume(s);
      },
    });
  }
}

export const fdbSuite: MicroSuite = { name: 'fdb', cases };
