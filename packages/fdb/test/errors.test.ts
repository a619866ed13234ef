import { WeftError } from '@weft/core';
import { describe, expect, it } from 'vitest';
import { Fdb, type FdbOptions, NeighborTable, RouteTable } from '../src/index.js';

/**
 * Every kind of bad input the tables refuse, each pinned by stable code and by the message a
 * person reads; and after each refusal the table is exactly as it was (batches are all or nothing).
 */
function thrown(fn: () => unknown): WeftError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WeftError);
    return err as WeftError;
  }
  throw new Error('expected a throw');
}

interface Row {
  name: string;
  fn: () => unknown;
  code: string;
  message: RegExp;
}

function table(rows: Row[], state: () => unknown): void {
  for (const row of rows) {
    it(row.name, () => {
      const before = JSON.stringify(state());
      const err = thrown(row.fn);
      expect(err.code).toBe(row.code);
      expect(err.message).toMatch(row.message);
      expect(JSON.stringify(state())).toBe(before);
    });
  }
}

describe('routes: bad input', () => {
  const routes = new RouteTable();
  routes.add({ dst: '10.244.2.0/24', via: '10.244.2.0', underlay: '198.18.0.2' });
  table(
    [
      {
        name: 'a CIDR without a prefix length',
        fn: () => routes.add({ dst: '10.244.1.0' }),
        code: 'ERR_BAD_CIDR',
        message: /route entry 0 \(10\.244\.1\.0\): .*10\.244\.1\.0/,
      },
      {
        name: 'a malformed CIDR',
        fn: () => routes.add({ dst: 'ten/8' }),
        code: 'ERR_BAD_CIDR',
        message: /route entry 0 \(ten\/8\)/,
      },
      {
        name: 'host bits set',
        fn: () => routes.add({ dst: '10.244.1.1/24' }),
        code: 'ERR_CIDR_HOST_BITS',
        message: /host bits set.*did you mean 10\.244\.1\.0\/24\?/,
      },
      {
        name: 'an IPv4 prefix length over 32',
        fn: () => routes.add({ dst: '10.0.0.0/33' }),
        code: 'ERR_BAD_PREFIX_LENGTH',
        message: /33/,
      },
      {
        name: 'an IPv6 prefix length over 128',
        fn: () => routes.add({ dst: 'fc00::/129' }),
        code: 'ERR_BAD_PREFIX_LENGTH',
        message: /129/,
      },
      {
        name: 'an IPv6 next hop for an IPv4 route',
        fn: () => routes.add({ dst: '10.244.1.0/24', via: 'fc00::1' }),
        code: 'ERR_FDB_FAMILY_MISMATCH',
        message: /gateway fc00::1 is IPv6 but the route to 10\.244\.1\.0\/24 is IPv4/,
      },
      {
        name: 'an IPv4 next hop for an IPv6 route',
        fn: () => routes.add({ dst: 'fc00::/64', via: '10.0.0.1' }),
        code: 'ERR_FDB_FAMILY_MISMATCH',
        message: /gateway 10\.0\.0\.1 is IPv4 but the route to fc00::\/64 is IPv6/,
      },
      {
        name: 'a malformed gateway',
        fn: () => routes.add({ dst: '10.244.1.0/24', via: '10.1' }),
        code: 'ERR_BAD_IP',
        message: /"10\.1"/,
      },
      {
        name: 'a malformed underlay address',
        fn: () => routes.add({ dst: '10.244.1.0/24', underlay: '198.18.0.300' }),
        code: 'ERR_BAD_IP',
        message: /"198\.18\.0\.300"/,
      },
      {
        name: 'a port out of range',
        fn: () => routes.add({ dst: '10.244.1.0/24', port: 70000 }),
        code: 'ERR_FDB_BAD_PORT',
        message: /port 70000 is not a UDP port \(0\.\.65535\)/,
      },
      {
        name: 'two different routes to one prefix in a batch',
        fn: () =>
          routes.applySnapshot([
            { dst: '10.0.0.0/8', tag: 'a' },
            { dst: '10.0.0.0/8', tag: 'b' },
          ]),
        code: 'ERR_FDB_DUPLICATE',
        message:
          /two different routes to 10\.0\.0\.0\/8 in one batch; nothing in this batch was applied/,
      },
      {
        name: 'a malformed removal',
        fn: () => routes.applyDiff({ remove: ['10.244.2.0/24', '10.244.2.0/40'] }),
        code: 'ERR_BAD_PREFIX_LENGTH',
        message: /route remove entry 1 \(10\.244\.2\.0\/40\)/,
      },
    ],
    () => [routes.dump(), routes.lookup('10.244.2.1')],
  );
});

describe('neighbors: bad input', () => {
  const neighbors = new NeighborTable();
  neighbors.add({ ip: '10.244.2.0', mac: '02:00:00:00:02:01' });
  table(
    [
      {
        name: 'a malformed IP',
        fn: () => neighbors.add({ ip: '10.244.2', mac: '02:00:00:00:02:01' }),
        code: 'ERR_BAD_IP',
        message: /neighbor entry 0 \(10\.244\.2 -> 02:00:00:00:02:01\): .*"10\.244\.2"/,
      },
      {
        name: 'a malformed MAC',
        fn: () => neighbors.add({ ip: '10.244.3.0', mac: '02:00:00:00:03' }),
        code: 'ERR_BAD_MAC',
        message: /not a MAC address/,
      },
      {
        name: 'a state that is not configurable',
        fn: () =>
          neighbors.add({
            ip: '10.244.3.0',
            mac: '02:00:00:00:03:01',
            state: 'stale' as 'reachable',
          }),
        code: 'ERR_FDB_BAD_ENTRY',
        message: /state "stale": configure permanent or reachable/,
      },
      {
        name: 'two different entries for one address in a batch',
        fn: () =>
          neighbors.applySnapshot([
            { ip: '10.244.3.0', mac: '02:00:00:00:03:01' },
            { ip: '10.244.3.0', mac: '02:00:00:00:03:02' },
          ]),
        code: 'ERR_FDB_DUPLICATE',
        message: /two different entries for 10\.244\.3\.0 in one batch/,
      },
      {
        name: 'a malformed removal',
        fn: () => neighbors.applyDiff({ remove: ['10.244.2.0', 'nope'] }),
        code: 'ERR_BAD_IP',
        message: /neighbor remove entry 1 \(nope\)/,
      },
      {
        name: 'a reachable time that is not a number',
        fn: () => new NeighborTable({ reachableMs: Number.NaN }),
        code: 'ERR_FDB_BAD_OPTION',
        message: /reachableMs NaN must be a whole number of at least 1/,
      },
    ],
    () => neighbors.dump(),
  );
});

describe('FDB: bad input', () => {
  const fdb = new Fdb();
  fdb.add({ mac: '02:00:00:00:02:01', dst: '198.18.0.2' });
  fdb.appendDefault('198.18.0.2');
  const options = (o: FdbOptions) => () => new Fdb(o);
  table(
    [
      {
        name: 'a malformed MAC',
        fn: () => fdb.add({ mac: '02:00:00:00:02', dst: '198.18.0.3' }),
        code: 'ERR_BAD_MAC',
        message: /fdb entry 0 \(02:00:00:00:02 dst 198\.18\.0\.3\): not a MAC address/,
      },
      {
        name: 'a malformed remote',
        fn: () => fdb.add({ mac: '02:00:00:00:03:01', dst: '198.18.0' }),
        code: 'ERR_BAD_IP',
        message: /"198\.18\.0"/,
      },
      {
        name: 'a VNI over 24 bits',
        fn: () => fdb.add({ mac: '02:00:00:00:03:01', dst: '198.18.0.3', vni: 2 ** 24 }),
        code: 'ERR_FDB_BAD_VNI',
        message: /VNI 16777216 does not fit 24 bits/,
      },
      {
        name: 'port 0',
        fn: () => fdb.add({ mac: '02:00:00:00:03:01', dst: '198.18.0.3', port: 0 }),
        code: 'ERR_FDB_BAD_PORT',
        message: /port 0 is not a UDP port \(1\.\.65535\)/,
      },
      {
        name: 'two different entries for one MAC in a batch',
        fn: () =>
          fdb.applySnapshot([
            { mac: '02:00:00:00:03:01', dst: '198.18.0.3' },
            { mac: '02:00:00:00:03:01', dst: '198.18.0.4' },
          ]),
        code: 'ERR_FDB_DUPLICATE',
        message: /two different entries for 02:00:00:00:03:01 in one batch/,
      },
      {
        name: 'a malformed removal',
        fn: () => fdb.applyDiff({ remove: [{ mac: '00:00:00:00:00:00', dst: 'x' }] }),
        code: 'ERR_BAD_IP',
        message: /fdb remove entry 0 \(00:00:00:00:00:00 dst x\)/,
      },
      {
        name: 'an ageing time of zero',
        fn: options({ ageingMs: 0 }),
        code: 'ERR_FDB_BAD_OPTION',
        message: /ageingMs 0 must be a whole number of at least 1/,
      },
      {
        name: 'no room for learned entries',
        fn: options({ maxLearned: 0 }),
        code: 'ERR_FDB_BAD_OPTION',
        message: /maxLearned 0 must be a whole number of at least 1/,
      },
      {
        name: 'a default port out of range',
        fn: options({ defaultPort: 65536 }),
        code: 'ERR_FDB_BAD_PORT',
        message: /defaultPort 65536 is not a UDP port/,
      },
      {
        name: 'a default VNI over 24 bits',
        fn: options({ defaultVni: 2 ** 24 }),
        code: 'ERR_FDB_BAD_VNI',
        message: /defaultVni 16777216 does not fit 24 bits/,
      },
      {
        name: 'the removed learnedStore option',
        fn: options({ learnedStore: 'lru-cache' } as FdbOptions),
        code: 'ERR_FDB_BAD_OPTION',
        message: /learnedStore was removed: learned entries are always kept in the built-in table/,
      },
    ],
    () => [fdb.dump(), fdb.defaults.length],
  );
});
