import { isWeftError, parseCidr } from '@weft/core';
import { type EtcdServer, haveTools, startEtcd, waitFor } from '@weft/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EtcdStore,
  type LeaseEvent,
  SubnetManager,
  type SubnetStore,
  silentLogger,
  type WatchHandlers,
} from '../src/index.js';
import { CONFIG, storeSuite } from './store-suite.js';

const haveEtcd = haveTools('the etcd store tests', '/usr/bin/etcd', '/usr/bin/etcdctl');

let etcd: EtcdServer;
let prefixes = 0;
const nextPrefix = () => `/weft-test/${process.pid}-${prefixes++}`;
const manager = (store: SubnetStore) => new SubnetManager(store, { logger: silentLogger });
const attrs = (publicIp: string) => ({
  publicIp,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' },
});

describe.skipIf(!haveEtcd)('the etcd store, against a real etcd', () => {
  beforeAll(async () => {
    etcd = await startEtcd();
  }, 30_000);
  afterAll(async () => {
    await etcd?.stop();
  });

  storeSuite({
    fresh: async () => new EtcdStore({ endpoints: [etcd.endpoint], prefix: nextPrefix() }),
    open: async (sameAs) =>
      new EtcdStore({ endpoints: [etcd.endpoint], prefix: (sameAs as EtcdStore).prefix }),
  });

  it('200 concurrent acquirers get 200 distinct subnets', async () => {
    const prefix = nextPrefix();
    const seed = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    await seed.putConfig(CONFIG);
    const clients = Array.from(
      { length: 10 },
      () => new EtcdStore({ endpoints: [etcd.endpoint], prefix }),
    );
    try {
      const leases = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          manager(clients[i % 10]).acquireLease({
            attrs: attrs(`198.18.${i >> 8}.${(i & 0xff) + 1}`),
          }),
        ),
      );
      expect(new Set(leases.map((l) => l.subnet)).size).toBe(200);
      expect((await manager(seed).listLeases()).leases.length).toBe(200);
    } finally {
      await Promise.all([seed, ...clients].map((c) => c.close()));
    }
  }, 120_000);

  it('with room for only 50, exactly 50 of 200 succeed and the rest fail clearly', async () => {
    const prefix = nextPrefix();
    const seed = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    // 10.50.0.0/16 cut into /24s from 10.50.1.0 to 10.50.50.0: 50 subnets.
    await seed.putConfig('{"Network": "10.50.0.0/16", "SubnetMax": "10.50.50.0"}');
    const clients = Array.from(
      { length: 10 },
      () => new EtcdStore({ endpoints: [etcd.endpoint], prefix }),
    );
    try {
      const results = await Promise.allSettled(
        Array.from({ length: 200 }, (_, i) =>
          manager(clients[i % 10]).acquireLease({
            attrs: attrs(`198.19.${i >> 8}.${(i & 0xff) + 1}`),
          }),
        ),
      );
      const ok = results.filter((r) => r.status === 'fulfilled');
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(ok.length).toBe(50);
      expect(
        new Set(ok.map((r) => (r as PromiseFulfilledResult<{ subnet: string }>).value.subnet)).size,
      ).toBe(50);
      expect(failed.length).toBe(150);
      for (const f of failed) {
        expect(isWeftError(f.reason, 'ERR_SUBNET_NONE_FREE')).toBe(true);
        expect(f.reason.message).toMatch(
          /no free subnet in 10\.50\.0\.0\/16 \(10\.50\.1\.0\/24 \.\. 10\.50\.50\.0\/24\)/,
        );
      }
    } finally {
      await Promise.all([seed, ...clients].map((c) => c.close()));
    }
  }, 120_000);

  it("reads a config and leases written by etcdctl in flannel's format, and writes leases etcdctl reads back", async () => {
    const prefix = nextPrefix();
    const flannelLease =
      '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
    await etcd.etcdctl([
      'put',
      `${prefix}/config`,
      '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}',
    ]);
    await etcd.etcdctl(['put', `${prefix}/subnets/10.244.3.0-24`, flannelLease]);
    // An operator's typo: skipped and logged, never a crash nor a free subnet.
    await etcd.etcdctl(['put', `${prefix}/subnets/10.244.4.0-24`, '{"PublicIP":"192.168.64.']);
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    try {
      const warnings: string[] = [];
      const m = new SubnetManager(store, {
        logger: { ...silentLogger, warn: (o, msg) => warnings.push(`${msg} ${JSON.stringify(o)}`) },
      });
      const config = await m.getNetworkConfig();
      expect(config.backend).toMatchObject({ type: 'vxlan', vni: 1, port: 8472 });
      expect(config.subnetLen).toBe(24);
      const { leases } = await m.listLeases();
      expect(warnings).toEqual([
        expect.stringMatching(/^skipping a malformed lease .*10\.244\.4\.0-24: not JSON/),
      ]);
      expect(leases).toEqual([
        expect.objectContaining({
          subnet: '10.244.3.0/24',
          attrs: {
            publicIp: '192.168.64.3',
            backendType: 'vxlan',
            backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' },
          },
        }),
      ]);
      expect(leases[0].expiresAt).toBeUndefined(); // no etcd lease: a reservation
      const mine = await m.acquireLease({
        attrs: {
          publicIp: '198.18.0.1',
          backendType: 'vxlan',
          backendData: { VNI: 1, VtepMAC: '02:00:00:00:01:01' },
        },
      });
      const key = `${prefix}/subnets/${mine.key}`;
      expect(key).toMatch(/\/subnets\/10\.244\.\d+\.0-24$/);
      const out = await etcd.etcdctl(['get', key, '--print-value-only']);
      expect(out.trim()).toBe(
        '{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:01:01"}}',
      );
      const withLease = JSON.parse(await etcd.etcdctl(['get', key, '-w', 'json'])) as {
        kvs: { lease: number }[];
      };
      expect(withLease.kvs[0].lease).toBeGreaterThan(0);
      expect(mine.subnet).not.toBe('10.244.4.0/24');
      // A config an operator broke with etcdctl: a clear error, no lease taken.
      await etcd.etcdctl(['put', `${prefix}/config`, '{"Network":"10.244.0.0/16",']);
      const err = await m.acquireLease({ attrs: attrs('198.18.0.2') }).catch((e) => e);
      expect(isWeftError(err, 'ERR_CONFIG_INVALID')).toBe(true);
      expect(err.message).toMatch(/network config is not JSON/);
      expect((await m.listLeases()).leases.length).toBe(2);
    } finally {
      await store.close();
    }
  });

  it('a watcher carries on across an etcd crash and restart, losing and repeating nothing', async () => {
    const prefix = nextPrefix();
    const writer = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    const watching = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    try {
      await writer.putConfig(CONFIG);
      const w = manager(writer);
      const events: string[] = [];
      const watch = manager(watching).watchLeases({
        onEvents: (evs: LeaseEvent[]) =>
          events.push(...evs.map((e) => `${e.type} ${e.lease.subnet}`)),
      });
      const a = await w.acquireLease({
        attrs: attrs('198.18.3.1'),
        previousSubnet: parseCidr('10.244.31.0/24'),
      });
      await waitFor(() => events.length === 1, 'the first lease');
      await etcd.kill();
      await etcd.restart();
      // Changes right after the restart, likely before the watcher has reconnected.
      const b = await retry(() =>
        w.acquireLease({ attrs: attrs('198.18.3.2'), previousSubnet: parseCidr('10.244.32.0/24') }),
      );
      await retry(() => w.releaseLease(a));
      await waitFor(() => events.length >= 3, 'the changes made across the restart', {
        timeoutMs: 30_000,
      });
      const c = await w.acquireLease({
        attrs: attrs('198.18.3.3'),
        previousSubnet: parseCidr('10.244.33.0/24'),
      });
      await waitFor(() => events.length >= 4, 'a change after reconnecting', { timeoutMs: 15_000 });
      await new Promise((r) => setTimeout(r, 500));
      expect(events).toEqual([
        `added ${a.subnet}`,
        `added ${b.subnet}`,
        `removed ${a.subnet}`,
        `added ${c.subnet}`,
      ]);
      expect(
        watch
          .leases()
          .map((l) => l.subnet)
          .sort(),
      ).toEqual([b.subnet, c.subnet].sort());
      watch.close();
    } finally {
      await writer.close();
      await watching.close();
    }
  }, 60_000);

  it('a watch from a compacted revision beside a running lease watch: a resync, no uncaught etcd3 error, the running watch goes on', async () => {
    const prefix = nextPrefix();
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    const uncaught: Error[] = [];
    const onUncaught = (err: Error) => uncaught.push(err);
    process.prependListener('uncaughtException', onUncaught);
    try {
      await store.putConfig(CONFIG);
      const m = manager(store);
      const seen: string[] = [];
      const watch = m.watchLeases({
        onEvents: (evs: LeaseEvent[]) =>
          seen.push(...evs.map((e) => `${e.type} ${e.lease.subnet}`)),
      });
      const a = await m.acquireLease({ attrs: attrs('198.18.5.1') });
      await waitFor(() => seen.includes(`added ${a.subnet}`), 'the first lease');
      const old = await store.revision();
      await m.acquireLease({ attrs: attrs('198.18.5.2') });
      await etcd.compact(await store.revision());
      for (let round = 0; round < 3; round++) {
        const reasons: string[] = [];
        const stale = store.watchSubnets(old - 1, {
          onEvents: () => undefined,
          onResync: (reason) => reasons.push(reason),
        });
        await waitFor(() => reasons.length > 0, 'the stale watch asking for a re-list');
        expect(reasons[0]).toMatch(/compacted/);
        stale.close();
      }
      const c = await m.acquireLease({ attrs: attrs('198.18.5.3') });
      await waitFor(() => seen.includes(`added ${c.subnet}`), 'a change after the stale watches');
      await new Promise((r) => setTimeout(r, 500));
      expect(uncaught.map((e) => e.message)).toEqual([]);
      watch.close();
    } finally {
      process.removeListener('uncaughtException', onUncaught);
      await store.close();
    }
  }, 30_000);

  it('acquisition waits out a stopped etcd: 60 concurrent acquirers, etcd down for 3 s, 60 distinct subnets', async () => {
    const prefix = nextPrefix();
    const seed = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    await seed.putConfig(CONFIG);
    const clients = Array.from(
      { length: 6 },
      () => new EtcdStore({ endpoints: [etcd.endpoint], prefix, requestTimeoutMs: 1000 }),
    );
    try {
      await etcd.kill();
      const started = Date.now();
      const pending = Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          new SubnetManager(clients[i % 6], {
            logger: silentLogger,
            acquireBackoffMs: { initial: 100, max: 1000 },
          }).acquireLease({ attrs: attrs(`198.18.6.${i + 1}`) }),
        ),
      );
      const settled = pending.then(
        (leases) => ({ leases, err: undefined }),
        (err: Error) => ({ leases: [], err }),
      );
      await new Promise((r) => setTimeout(r, 3000));
      await etcd.restart();
      const { leases, err } = await settled;
      expect(err?.message).toBeUndefined();
      expect(Date.now() - started).toBeGreaterThanOrEqual(3000);
      expect(new Set(leases.map((l) => l.subnet)).size).toBe(60);
      expect((await manager(seed).listLeases()).leases.length).toBe(60);
    } finally {
      await Promise.all([seed, ...clients].map((c) => c.close()));
    }
  }, 60_000);

  it("a compaction past the watcher's revision makes it re-list and emit the difference", async () => {
    const prefix = nextPrefix();
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    // A store whose watches start only when the test opens the gate: the watcher is cut off
    // while the leases change and etcd compacts its history.
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const gated: SubnetStore = Object.create(store, {
      watchSubnets: {
        value: (from: number, handlers: WatchHandlers) => {
          let inner: { close(): void } | undefined;
          let closed = false;
          void gate.then(() => {
            if (!closed) inner = store.watchSubnets(from, handlers);
          });
          return {
            close: () => {
              closed = true;
              inner?.close();
            },
          };
        },
      },
    });
    try {
      await store.putConfig(CONFIG);
      const m = manager(store);
      const a = await m.acquireLease({
        attrs: attrs('198.18.4.1'),
        previousSubnet: parseCidr('10.244.41.0/24'),
      });
      const b = await m.acquireLease({
        attrs: attrs('198.18.4.2'),
        previousSubnet: parseCidr('10.244.42.0/24'),
      });
      const seen: string[] = [];
      const warnings: string[] = [];
      const watcher = new SubnetManager(gated, {
        logger: {
          ...silentLogger,
          warn: (o, msg) => warnings.push(`${msg}: ${JSON.stringify(o)}`),
        },
      });
      const watch = watcher.watchLeases({
        onEvents: (evs: LeaseEvent[]) =>
          seen.push(...evs.map((e) => `${e.type} ${e.lease.subnet}`)),
      });
      await waitFor(() => seen.length === 2, 'the snapshot');
      await m.releaseLease(a);
      const c = await m.acquireLease({
        attrs: attrs('198.18.4.3'),
        previousSubnet: parseCidr('10.244.43.0/24'),
      });
      await etcd.compact(await store.revision());
      open();
      await waitFor(() => seen.length === 4, 'the difference after re-listing');
      expect(seen.slice(0, 2).sort()).toEqual([`added ${a.subnet}`, `added ${b.subnet}`].sort());
      expect(seen.slice(2).sort()).toEqual([`added ${c.subnet}`, `removed ${a.subnet}`].sort());
      expect(warnings.join('\n')).toMatch(/resynchronising.*compacted history past revision/);
      watch.close();
    } finally {
      await store.close();
    }
  }, 30_000);

  it('says clearly when etcd cannot be reached', async () => {
    const store = new EtcdStore({
      endpoints: ['http://127.0.0.1:1'],
      prefix: '/x',
      requestTimeoutMs: 1000,
    });
    try {
      const err = await manager(store)
        .getNetworkConfig()
        .catch((e) => e);
      expect(isWeftError(err, 'ERR_STORE_UNAVAILABLE')).toBe(true);
      expect(err.message).toMatch(/etcd get config failed \(http:\/\/127\.0\.0\.1:1\)/);
    } finally {
      await store.close();
    }
  }, 15_000);
});

/** Retries an operation while etcd comes back (the client's circuit breaker may still be open). */
async function retry<T>(fn: () => Promise<T>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
