import { createNetns, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AddressFamily,
  Rtnl,
  type RtnlEvent,
  RtnlGroup,
  RtnlMonitor,
  RtnType,
} from '../src/index.js';

const TAG = 'nlmon';

describe.skipIf(!privileged('the rtnetlink monitor'))('RtnlMonitor, against iproute2', () => {
  afterAll(() => sweepNetns(TAG));

  it('reports the links, neighbors, FDB entries and routes iproute2 adds and deletes, as `ip monitor` does', async () => {
    const ns = createNetns(TAG);
    const events: RtnlEvent[] = [];
    const errors: Error[] = [];
    const monitor = RtnlMonitor.open(
      (e) => events.push(e),
      (err) => errors.push(err),
      { netns: ns.name, groups: RtnlGroup.link | RtnlGroup.neigh | RtnlGroup.ipv4Route },
    );
    try {
      const ip = (...args: string[]) => ns.exec(['ip', ...args]);
      await ip('link', 'add', 'vx9', 'type', 'vxlan', 'id', '9', 'dstport', '8472', 'nolearning');
      await ip('addr', 'add', '10.9.0.0/32', 'dev', 'vx9');
      await ip('link', 'set', 'vx9', 'up');
      await ip(
        'neigh',
        'replace',
        '10.9.1.0',
        'lladdr',
        '02:00:00:00:09:01',
        'dev',
        'vx9',
        'nud',
        'permanent',
      );
      await ns.exec([
        'bridge',
        'fdb',
        'append',
        '02:00:00:00:09:01',
        'dev',
        'vx9',
        'dst',
        '198.18.9.1',
        'self',
        'permanent',
      ]);
      await ip('route', 'add', '10.9.1.0/24', 'via', '10.9.1.0', 'dev', 'vx9', 'onlink');
      await ip('route', 'del', '10.9.1.0/24', 'via', '10.9.1.0', 'dev', 'vx9', 'onlink');
      await ip('neigh', 'del', '10.9.1.0', 'dev', 'vx9');
      await ip('link', 'del', 'vx9');
      const has = (pred: (e: RtnlEvent) => boolean) => events.some(pred);
      await waitFor(() => has((e) => e.kind === 'link' && e.action === 'del'), 'the link deletion');
      const newLink = events.find((e) => e.kind === 'link' && e.action === 'new');
      expect(newLink?.kind === 'link' && newLink.link.name).toBe('vx9');
      const delLink = events.find((e) => e.kind === 'link' && e.action === 'del');
      expect(delLink?.kind === 'link' && delLink.link.name).toBe('vx9');
      expect(
        has(
          (e) =>
            e.kind === 'neighbor' &&
            e.action === 'new' &&
            e.family === AddressFamily.inet &&
            e.neighbor.ip === '10.9.1.0' &&
            e.neighbor.mac === '02:00:00:00:09:01',
        ),
      ).toBe(true);
      expect(
        has(
          (e) =>
            e.kind === 'neighbor' &&
            e.action === 'new' &&
            e.family === AddressFamily.bridge &&
            e.neighbor.ip === '198.18.9.1' &&
            e.neighbor.mac === '02:00:00:00:09:01',
        ),
      ).toBe(true);
      expect(
        has((e) => e.kind === 'neighbor' && e.action === 'del' && e.neighbor.ip === '10.9.1.0'),
      ).toBe(true);
      expect(
        has(
          (e) =>
            e.kind === 'route' &&
            e.action === 'new' &&
            e.route.dst === '10.9.1.0/24' &&
            e.route.gateway === '10.9.1.0' &&
            e.route.onlink === true,
        ),
      ).toBe(true);
      expect(
        has((e) => e.kind === 'route' && e.action === 'del' && e.route.dst === '10.9.1.0/24'),
      ).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      monitor.close();
      ns.delete();
    }
  });

  it('routeGet answers as `ip route get`, and blackhole routes read back as iproute2 shows them', async () => {
    const ns = createNetns(TAG);
    const nl = Rtnl.open({ netns: ns.name });
    try {
      await ns.exec(['ip', 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
      await ns.exec(['ip', 'link', 'set', 'd1', 'up']);
      await ns.exec(['ip', 'addr', 'add', '192.0.2.5/24', 'dev', 'd0']);
      await ns.exec(['ip', 'link', 'set', 'd0', 'up']);
      await ns.exec(['ip', 'route', 'add', '198.51.100.0/24', 'via', '192.0.2.1']);
      const got = await nl.routeGet('198.51.100.7');
      const ipSays = JSON.parse(
        (await ns.exec(['ip', '-j', 'route', 'get', '198.51.100.7'])).stdout,
      )[0];
      expect(got?.prefsrc).toBe(ipSays.prefsrc);
      expect(got?.gateway).toBe(ipSays.gateway);
      expect((await nl.links()).find((l) => l.index === got?.oif)?.name).toBe(ipSays.dev);
      await nl.replaceRoute({ dst: '10.244.7.0/24', type: RtnType.blackhole });
      const shown = JSON.parse(
        (await ns.exec(['ip', '-j', 'route', 'show', 'type', 'blackhole'])).stdout,
      );
      expect(shown.map((r: { dst: string }) => r.dst)).toEqual(['10.244.7.0/24']);
      const mine = (await nl.routes({ family: 4 })).filter((r) => r.type === RtnType.blackhole);
      expect(mine.map((r) => r.dst)).toEqual(['10.244.7.0/24']);
      await nl.replaceRoute({ dst: '10.244.7.0/24', type: RtnType.blackhole });
      const again = await nl
        .addRoute({ dst: '10.244.7.0/24', type: RtnType.blackhole })
        .catch((e: Error & { code?: string }) => e.code);
      expect(again).toBe('ERR_NETLINK_EEXIST');
      await nl.deleteRoute({ dst: '10.244.7.0/24', type: RtnType.blackhole });
      expect(
        JSON.parse((await ns.exec(['ip', '-j', 'route', 'show', 'type', 'blackhole'])).stdout),
      ).toEqual([]);
    } finally {
      nl.close();
      ns.delete();
    }
  });
});
