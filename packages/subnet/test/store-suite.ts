import { type Cidr4, isWeftError, parseCidr } from '@weft/core';
import { waitFor } from '@weft/testkit';
import { expect, it } from 'vitest';
import {
  EtcdStore,
  type LeaseEvent,
  type LeaseWatch,
  SubnetManager,
  type SubnetManagerOptions,
  type SubnetStore,
  silentLogger,
} from '../src/index.js';

/**
 * The behaviour every store must have, run against the embedded store and against a real etcd.
 * `fresh()` gives a new, empty store (a new file, or a new etcd prefix); `open(sameAs)` another
 * client of the same store, as a second node would have.
 */
export interface StoreUnderTest {
  fresh(): Promise<SubnetStore>;
  open(sameAs: SubnetStore): Promise<SubnetStore>;
}

export const CONFIG = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}';
const attrs = (publicIp: string, mac = '02:00:00:00:00:01') => ({
  publicIp,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
});

function manager(store: SubnetStore, options: SubnetManagerOptions = {}): SubnetManager {
  return new SubnetManager(store, { logger: silentLogger, ...options });
}

/** Collects a watch's events, as strings `added 10.244.5.0/24`. */
function collect(m: SubnetManager, ownKey?: string, ownPublicIp?: string) {
  const events: string[] = [];
  const lost: string[] = [];
  const taken: string[] = [];
  let initial = false;
  const watch: LeaseWatch = m.watchLeases(
    {
      onEvents: (evs: LeaseEvent[], isInitial) => {
        if (isInitial) initial = true;
        for (const e of evs) events.push(`${e.type} ${e.lease.subnet}`);
      },
      onOwnLeaseLost: (key) => lost.push(key),
      onOwnLeaseTaken: (key, lease) => taken.push(`${key} ${lease.attrs.publicIp}`),
    },
    { ownKey, ownPublicIp },
  );
  return {
    events,
    lost,
    taken,
    watch,
    ready: () => waitFor(() => initial, 'the initial snapshot'),
  };
}

export function storeSuite(t: StoreUnderTest): void {
  const withStores = async (fn: (a: SubnetStore, b: SubnetStore) => Promise<void>) => {
    const a = await t.fresh();
    const b = await t.open(a);
    try {
      await fn(a, b);
    } finally {
      await b.close();
      await a.close();
    }
  };

  it('says how to create the config when there is none, and refuses a malformed one', async () => {
    await withStores(async (store) => {
      await expect(manager(store).getNetworkConfig()).rejects.toThrow(
        /no network config in .*: create it, e\.g\. .*"Network": "10\.244\.0\.0\/16"/,
      );
      const missing = await manager(store)
        .getNetworkConfig()
        .catch((e) => e);
      expect(isWeftError(missing, 'ERR_CONFIG_MISSING')).toBe(true);
      // The hint names the key under this store's own prefix, not flannel's default.
      if (store instanceof EtcdStore)
        expect(missing.message).toContain(`etcdctl put ${store.prefix}config '{`);
      await store.putConfig('{"Network": "10.244.0.0/16", "SubnetLen": 40}');
      const rule = await manager(store)
        .getNetworkConfig()
        .catch((e) => e);
      expect(isWeftError(rule, 'ERR_CONFIG_INVALID')).toBe(true);
      expect(rule.message).toMatch(/network config: SubnetLen 40 must be <= 30/);
      await store.putConfig('{"Network": "10.244.0.0/16", ');
      const broken = await manager(store)
        .acquireLease({ attrs: attrs('198.18.0.1') })
        .catch((e) => e);
      expect(isWeftError(broken, 'ERR_CONFIG_INVALID')).toBe(true);
      expect(broken.message).toMatch(/network config is not JSON/);
      expect((await store.listSubnets()).values).toEqual([]);
    });
  });

  it('leases a subnet in range, and gives the same node the same lease again', async () => {
    await withStores(async (store, other) => {
      await store.putConfig(CONFIG);
      const m = manager(store);
      const lease = await m.acquireLease({ attrs: attrs('198.18.0.1') });
      const c = parseCidr(lease.subnet!) as Cidr4;
      expect(c.prefixLength).toBe(24);
      expect(c.address).toBeGreaterThanOrEqual(0x0af40100);
      expect(lease.expiresAt).toBeGreaterThan(Date.now() + 23 * 3600_000);
      // Another client (a restart) with the same public IP gets the same subnet, with new attributes.
      const again = await manager(other).acquireLease({
        attrs: attrs('198.18.0.1', '02:00:00:00:00:99'),
      });
      expect(again.subnet).toBe(lease.subnet);
      const { leases } = await manager(other).listLeases();
      expect(leases.length).toBe(1);
      expect(leases[0].attrs.backendData).toEqual({ VNI: 1, VtepMAC: '02:00:00:00:00:99' });
    });
  });

  it("asks for the subnet in the node's subnet.env first, when it is free", async () => {
    await withStores(async (store) => {
      await store.putConfig(CONFIG);
      const lease = await manager(store).acquireLease({
        attrs: attrs('198.18.0.7'),
        previousSubnet: parseCidr('10.244.77.0/24'),
      });
      expect(lease.subnet).toBe('10.244.77.0/24');
      const taken = await manager(store).acquireLease({
        attrs: attrs('198.18.0.8'),
        previousSubnet: parseCidr('10.244.77.0/24'),
      });
      expect(taken.subnet).not.toBe('10.244.77.0/24');
    });
  });

  it('never hands out a reservation, which keeps no TTL when its owner takes it', async () => {
    await withStores(async (store) => {
      await store.putConfig('{"Network": "10.9.0.0/28"}'); // room for three /30s: .4, .8, .12
      const m = manager(store);
      await m.reserve(parseCidr('10.9.0.8/30') as Cidr4, attrs('198.18.0.50'));
      const a = await m.acquireLease({ attrs: attrs('198.18.0.1') });
      const b = await m.acquireLease({ attrs: attrs('198.18.0.2') });
      expect([a.subnet, b.subnet].sort()).toEqual(['10.9.0.12/30', '10.9.0.4/30']);
      const err = await m.acquireLease({ attrs: attrs('198.18.0.3') }).catch((e) => e);
      expect(isWeftError(err, 'ERR_SUBNET_NONE_FREE')).toBe(true);
      expect(err.message).toMatch(/no free subnet in 10\.9\.0\.0\/28 .*all 3 are leased/);
      const owner = await m.acquireLease({ attrs: attrs('198.18.0.50') });
      expect(owner.subnet).toBe('10.9.0.8/30');
      expect(owner.expiresAt).toBeUndefined();
      const stored = (await m.listLeases()).leases.find((l) => l.subnet === '10.9.0.8/30');
      expect(stored?.expiresAt).toBeUndefined();
    });
  });

  it('renews with a fresh TTL and releases on request', async () => {
    await withStores(async (store) => {
      await store.putConfig(CONFIG);
      const m = manager(store, { leaseTtlSeconds: 60 });
      const lease = await m.acquireLease({ attrs: attrs('198.18.0.1') });
      const renewed = await m.renewLease(lease);
      expect(renewed.expiresAt! - Date.now()).toBeGreaterThan(55_000);
      const stored = await store.getSubnet(lease.key);
      expect(stored?.ttlSeconds).toBeGreaterThan(50);
      await m.releaseLease(renewed);
      expect(await store.getSubnet(lease.key)).toBeUndefined();
    });
  });

  it("watches other nodes' leases: a snapshot, then added, changed and removed", async () => {
    await withStores(async (store, other) => {
      await store.putConfig(CONFIG);
      const me = await manager(store).acquireLease({ attrs: attrs('198.18.0.1') });
      const early = await manager(other).acquireLease({ attrs: attrs('198.18.0.2') });
      const w = collect(manager(store), me.key);
      await w.ready();
      expect(w.events).toEqual([`added ${early.subnet}`]);
      const late = await manager(other).acquireLease({ attrs: attrs('198.18.0.3') });
      await waitFor(() => w.events.length === 2, 'the added event');
      // A watched lease keeps its expiry; only a reservation has none.
      const watched = w.watch.leases().find((l) => l.subnet === late.subnet);
      expect(watched?.expiresAt).toBeGreaterThan(Date.now() + 23 * 3600_000);
      await manager(other).acquireLease({ attrs: attrs('198.18.0.3', '02:00:00:00:00:33') });
      await waitFor(() => w.events.length === 3, 'the changed event');
      await manager(other).releaseLease(late);
      await waitFor(() => w.events.length === 4, 'the removed event');
      expect(w.events).toEqual([
        `added ${early.subnet}`,
        `added ${late.subnet}`,
        `changed ${late.subnet}`,
        `removed ${late.subnet}`,
      ]);
      // Renewing a lease with the same attributes is not a change.
      await manager(other).renewLease(early);
      await new Promise((r) => setTimeout(r, 400));
      expect(w.events.length).toBe(4);
      expect(w.lost).toEqual([]);
      await manager(other).releaseLease(me);
      await waitFor(() => w.lost.length === 1, 'the own-lease-lost signal');
      expect(w.lost).toEqual([me.key]);
      const reserved = await manager(other).reserve(
        parseCidr('10.244.250.0/24') as Cidr4,
        attrs('198.18.0.250'),
      );
      await waitFor(() => w.events.length === 5, 'the reservation');
      expect(w.events[4]).toBe(`added ${reserved.subnet}`);
      const seen = w.watch.leases().find((l) => l.subnet === reserved.subnet);
      expect(seen).toBeDefined();
      expect(seen?.expiresAt).toBeUndefined();
      w.watch.close();
    });
  });

  it('says when another node overwrites our own lease, once per takeover, and not for our renewals', async () => {
    await withStores(async (store, other) => {
      await store.putConfig(CONFIG);
      const me = await manager(store).acquireLease({ attrs: attrs('198.18.0.1') });
      const w = collect(manager(store), me.key, '198.18.0.1');
      await w.ready();
      // Our own renewal (same public IP) is neither a takeover nor an event.
      await manager(store).renewLease(me);
      // Another node writes its own attributes under our key, twice (its renewal).
      const theirs = JSON.stringify({
        PublicIP: '198.18.0.9',
        BackendType: 'vxlan',
        BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:09' },
      });
      await other.putSubnet(me.key, theirs, 60);
      await waitFor(() => w.taken.length === 1, 'the own-lease-taken signal');
      await other.putSubnet(me.key, theirs, 60);
      await new Promise((r) => setTimeout(r, 400));
      expect(w.taken).toEqual([`${me.key} 198.18.0.9`]);
      expect(w.lost).toEqual([]);
      expect(w.events).toEqual([]);
      // Ours again, then theirs again: a second takeover is reported again.
      await manager(store).renewLease(me);
      await other.putSubnet(me.key, theirs, 60);
      await waitFor(() => w.taken.length === 2, 'the second own-lease-taken signal');
      // A re-listing (as after a reconnect) sees the same takeover and does not repeat it.
      w.watch.close();
      const again = collect(manager(store), me.key, '198.18.0.1');
      await again.ready();
      expect(again.taken).toEqual([`${me.key} 198.18.0.9`]);
      expect(again.lost).toEqual([]);
      again.watch.close();
    });
  });

  it('skips and logs a malformed lease; the watch goes on', async () => {
    await withStores(async (store, other) => {
      await store.putConfig(CONFIG);
      const warnings: string[] = [];
      const m = manager(store, {
        logger: { ...silentLogger, warn: (_o, msg) => warnings.push(msg) },
      });
      const w = collect(m);
      await w.ready();
      await other.putSubnet('10.244.66.0-24', '{"PublicIP": "not an address"}', 0);
      await other.putSubnet('10.244.67.0-24', '{broken', 0);
      const good = await manager(other).acquireLease({ attrs: attrs('198.18.0.9') });
      await waitFor(() => w.events.length === 1, 'the good lease');
      expect(w.events).toEqual([`added ${good.subnet}`]);
      expect(warnings.filter((x) => x === 'skipping a malformed lease').length).toBe(2);
      expect((await m.listLeases()).leases.map((l) => l.subnet)).toEqual([good.subnet]);
      w.watch.close();
    });
  });

  it('counts the subnet of a malformed lease as taken, even when subnet.env asks for it', async () => {
    await withStores(async (store) => {
      await store.putConfig('{"Network": "10.9.0.0/28"}'); // three /30s: .4, .8, .12
      await store.putSubnet('10.9.0.4-30', '{"PublicIP": 7}', 0);
      const m = manager(store);
      const a = await m.acquireLease({
        attrs: attrs('198.18.0.1'),
        previousSubnet: parseCidr('10.9.0.4/30'),
      });
      const b = await m.acquireLease({ attrs: attrs('198.18.0.2') });
      expect([a.subnet, b.subnet].sort()).toEqual(['10.9.0.12/30', '10.9.0.8/30']);
      const err = await m.acquireLease({ attrs: attrs('198.18.0.3') }).catch((e) => e);
      expect(isWeftError(err, 'ERR_SUBNET_NONE_FREE')).toBe(true);
      expect((await store.getSubnet('10.9.0.4-30'))?.value).toBe('{"PublicIP": 7}');
    });
  });

  it('retries a failed renewal every renewRetrySeconds until it succeeds', async () => {
    await withStores(async (store) => {
      await store.putConfig(CONFIG);
      let failures = 2;
      // The same store, with renewals failing while `failures` lasts (an unreachable store).
      const flaky: SubnetStore = Object.create(store, {
        putSubnet: {
          value: (key: string, value: string, ttl: number) => {
            if (failures > 0) {
              failures--;
              return Promise.reject(new Error('store unreachable'));
            }
            return store.putSubnet(key, value, ttl);
          },
        },
      });
      const errors: string[] = [];
      // TTL 60 s, margin 59 s: the first renewal is due a second after the lease is taken.
      const m = manager(flaky, {
        leaseTtlSeconds: 60,
        renewMarginSeconds: 59,
        renewRetrySeconds: 1,
      });
      const lease = await manager(store, { leaseTtlSeconds: 60 }).acquireLease({
        attrs: attrs('198.18.0.1'),
      });
      const started = Date.now();
      let renewedAt = 0;
      const handle = m.keepRenewed(lease, {
        onRenewed: () => {
          renewedAt ||= Date.now();
        },
        onRenewFailed: (err) => errors.push(err.message),
      });
      try {
        await waitFor(() => renewedAt > 0, 'the renewal after two failures', { timeoutMs: 8_000 });
      } finally {
        handle.stop();
      }
      expect(errors).toEqual(['store unreachable', 'store unreachable']);
      // Due after 1 s, then two retries a second apart.
      expect(renewedAt - started).toBeGreaterThanOrEqual(2_800);
      expect((await store.getSubnet(lease.key))?.ttlSeconds).toBeGreaterThan(50);
    });
  }, 15_000);

  it('a lease left to expire frees its subnet, and watchers see it removed', async () => {
    await withStores(async (store, other) => {
      await store.putConfig(CONFIG);
      const w = collect(manager(store));
      await w.ready();
      const short = await manager(other, { leaseTtlSeconds: 2 }).acquireLease({
        attrs: attrs('198.18.0.4'),
      });
      await waitFor(() => w.events.includes(`added ${short.subnet}`), 'the lease');
      await waitFor(() => w.events.includes(`removed ${short.subnet}`), 'its expiry', {
        timeoutMs: 10_000,
      });
      expect(await store.getSubnet(short.key)).toBeUndefined();
      const next = await manager(store).acquireLease({
        attrs: attrs('198.18.0.5'),
        previousSubnet: parseCidr(short.subnet!),
      });
      expect(next.subnet).toBe(short.subnet);
      w.watch.close();
    });
  });

  it('keeps a lease renewed before it expires', async () => {
    await withStores(async (store) => {
      await store.putConfig(CONFIG);
      // TTL 4 s, renew 3 s ahead: a renewal about every second.
      const m = manager(store, { leaseTtlSeconds: 4, renewMarginSeconds: 3 });
      const lease = await m.acquireLease({ attrs: attrs('198.18.0.6') });
      let renewals = 0;
      const handle = m.keepRenewed(lease, { onRenewed: () => renewals++ });
      await new Promise((r) => setTimeout(r, 6_000));
      handle.stop();
      expect(renewals).toBeGreaterThanOrEqual(3);
      expect(await store.getSubnet(lease.key)).toBeDefined();
    });
  }, 15_000);

  it('racing acquirers never share a subnet', async () => {
    await withStores(async (store) => {
      await store.putConfig(CONFIG);
      const clients = await Promise.all(Array.from({ length: 20 }, () => t.open(store)));
      try {
        const leases = await Promise.all(
          clients.map((c, i) => manager(c).acquireLease({ attrs: attrs(`198.18.1.${i + 1}`) })),
        );
        expect(new Set(leases.map((l) => l.subnet)).size).toBe(20);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    });
  }, 60_000);

  it('leases dual-stack subnets under one key, and IPv6-only ones keyed as flannel keys them', async () => {
    await withStores(async (store, other) => {
      await store.putConfig(DUAL_CONFIG);
      const m = manager(store);
      const a = await m.acquireLease({ attrs: dualAttrs('198.18.0.11', '2001:2::11') });
      expect(a.subnet).toMatch(/^10\.244\.\d+\.0\/24$/);
      expect(a.subnet6).toMatch(/^fd00:10:244:[0-9a-f]+::\/64$/);
      expect(a.key).toBe(`${a.subnet!.replace('/', '-')}&${a.subnet6!.replace('/', '-')}`);
      // The same node again (by its public IP) keeps both.
      const again = await manager(other).acquireLease({
        attrs: dualAttrs('198.18.0.11', '2001:2::11'),
      });
      expect([again.subnet, again.subnet6]).toEqual([a.subnet, a.subnet6]);
      // subnet.env's subnets are asked for again, each family on its own.
      const b = await m.acquireLease({
        attrs: dualAttrs('198.18.0.12', '2001:2::12'),
        previousSubnet: parseCidr('10.244.77.0/24'),
        previousSubnet6: parseCidr('fd00:10:244:77::/64'),
      });
      expect([b.subnet, b.subnet6]).toEqual(['10.244.77.0/24', 'fd00:10:244:77::/64']);
      const c = await m.acquireLease({
        attrs: dualAttrs('198.18.0.13', '2001:2::13'),
        previousSubnet: parseCidr('10.244.78.0/24'),
        previousSubnet6: parseCidr('fd00:10:244:77::/64'), // b holds it: another is picked
      });
      expect(c.subnet).toBe('10.244.78.0/24');
      expect(c.subnet6).not.toBe('fd00:10:244:77::/64');
      const { leases } = await manager(other).listLeases();
      expect(leases.map((l) => l.attrs.publicIpv6).sort()).toEqual([
        '2001:2::11',
        '2001:2::12',
        '2001:2::13',
      ]);
      const stored = await store.getSubnet(b.key);
      expect(stored?.value).toBe(
        '{"PublicIP":"198.18.0.12","PublicIPv6":"2001:2::12","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:61"}}',
      );

      // The config turns IPv6-only: the dual-stack leases no longer fit; each node gets an IPv6-only one.
      await store.putConfig(V6_CONFIG);
      const v6a = await m.acquireLease({ attrs: v6Attrs('2001:2::11') });
      const v6b = await manager(other).acquireLease({ attrs: v6Attrs('2001:2::12') });
      expect(v6a.subnet).toBeUndefined();
      expect(v6a.key).toBe(`0.0.0.0-0&${v6a.subnet6!.replace('/', '-')}`);
      expect(v6b.subnet6).not.toBe(v6a.subnet6);
      // A restart of the same IPv6-only node (found by its public IPv6, as "0.0.0.0" names no one).
      const v6again = await manager(other).acquireLease({ attrs: v6Attrs('2001:2:0::11') });
      expect(v6again.key).toBe(v6a.key);
      expect((await store.getSubnet(v6a.key))?.value).toBe(
        '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::11","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:61"}}',
      );
    });
  });
}

const DUAL_CONFIG =
  '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", "Backend": {"Type": "vxlan"}}';
const V6_CONFIG =
  '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", "Backend": {"Type": "vxlan"}}';
const dualAttrs = (publicIp: string, publicIpv6: string) => ({
  ...attrs(publicIp),
  publicIpv6,
  backendV6Data: { VNI: 1, VtepMAC: '02:00:00:00:00:61' },
});
const v6Attrs = (publicIpv6: string) => ({
  publicIpv6,
  backendType: 'vxlan',
  backendV6Data: { VNI: 1, VtepMAC: '02:00:00:00:00:61' },
});
