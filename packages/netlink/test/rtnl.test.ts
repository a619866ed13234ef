import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createNetns, createTwoNodes, privileged, sweepNetns, waitFor } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { attr, constants, IfaFlag, NlmFlag, RtmType, Rtnl } from '../src/index.js';

const TAG = 'nl';

interface IpLink {
  ifname: string;
  mtu: number;
  address: string;
  operstate: string;
  flags: string[];
  linkinfo?: {
    info_kind: string;
    info_data: { id: number; local?: string; port: number; learning: boolean; link?: string };
  };
}

async function ipJson<T>(
  ns: { exec(a: string[]): Promise<{ stdout: string }> },
  args: string[],
): Promise<T> {
  return JSON.parse((await ns.exec(args)).stdout) as T;
}

describe.skipIf(!privileged('rtnetlink tests'))('rtnetlink against the kernel', () => {
  afterAll(() => sweepNetns(TAG));

  it('installs exactly the set flannel installs for one remote node, as iproute2 sees it', async () => {
    const nodes = createTwoNodes(TAG);
    const nl = Rtnl.open({ netns: nodes.a.name });
    try {
      const veth = await nl.link('veth0');
      expect(veth?.up).toBe(true);
      const { link, created } = await nl.ensureVxlan({
        name: 'flannel.1',
        vni: 1,
        local: nodes.ipA,
        port: 8472,
        parentIndex: veth!.index,
        mtu: 1450,
        mac: '02:00:00:00:01:01',
      });
      expect(created).toBe(true);
      await nl.setLink(link.index, { up: true });
      await nl.replaceAddress(link.index, '10.244.1.0/32');
      await nl.replaceRoute({
        dst: '10.244.2.0/24',
        gateway: '10.244.2.0',
        oif: link.index,
        onlink: true,
      });
      await nl.replaceNeighbor(link.index, '10.244.2.0', '02:00:00:00:02:01');
      await nl.replaceFdb(link.index, '02:00:00:00:02:01', nodes.ipB);

      const [dev] = await ipJson<IpLink[]>(nodes.a, [
        'ip',
        '-d',
        '-j',
        'link',
        'show',
        'flannel.1',
      ]);
      expect(dev.mtu).toBe(1450);
      expect(dev.address).toBe('02:00:00:00:01:01');
      expect(dev.flags).toContain('UP');
      expect(dev.linkinfo?.info_kind).toBe('vxlan');
      expect(dev.linkinfo?.info_data).toMatchObject({
        id: 1,
        local: nodes.ipA,
        port: 8472,
        learning: false,
        link: 'veth0',
      });
      const addrs = await ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>(nodes.a, [
        'ip',
        '-j',
        'addr',
        'show',
        'dev',
        'flannel.1',
      ]);
      expect(addrs[0].addr_info.filter((x) => x.local.includes('.'))).toEqual([
        expect.objectContaining({ local: '10.244.1.0', prefixlen: 32 }),
      ]);
      const routes = await ipJson<{ dst: string; gateway: string; dev: string; flags: string[] }[]>(
        nodes.a,
        ['ip', '-j', 'route', 'show', 'dev', 'flannel.1'],
      );
      expect(routes).toEqual([
        expect.objectContaining({ dst: '10.244.2.0/24', gateway: '10.244.2.0', flags: ['onlink'] }),
      ]);
      const neigh = await ipJson<{ dst: string; lladdr: string; state: string[] }[]>(nodes.a, [
        'ip',
        '-j',
        'neigh',
        'show',
        'dev',
        'flannel.1',
      ]);
      expect(neigh).toEqual([
        expect.objectContaining({
          dst: '10.244.2.0',
          lladdr: '02:00:00:00:02:01',
          state: ['PERMANENT'],
        }),
      ]);
      const fdb = await ipJson<{ mac: string; dst?: string; flags: string[]; state: string }[]>(
        nodes.a,
        ['bridge', '-j', 'fdb', 'show', 'dev', 'flannel.1'],
      );
      expect(fdb.filter((f) => f.dst)).toEqual([
        expect.objectContaining({
          mac: '02:00:00:00:02:01',
          dst: nodes.ipB,
          flags: ['self'],
          state: 'permanent',
        }),
      ]);

      // And our own dumps read back the same set.
      expect(await nl.routes({ family: 4, oif: link.index })).toEqual([
        expect.objectContaining({ dst: '10.244.2.0/24', gateway: '10.244.2.0', onlink: true }),
      ]);
      expect(await nl.neighbors({ family: 4, ifindex: link.index })).toEqual([
        expect.objectContaining({ ip: '10.244.2.0', mac: '02:00:00:00:02:01', state: 0x80 }),
      ]);
      expect(await nl.fdb(link.index)).toEqual([
        expect.objectContaining({ mac: '02:00:00:00:02:01', dst: nodes.ipB }),
      ]);
      expect((await nl.link('flannel.1'))?.vxlan).toMatchObject({
        vni: 1,
        local: nodes.ipA,
        port: 8472,
        learning: false,
        parentIndex: veth!.index,
      });

      // Deleting removes exactly those entries.
      await nl.deleteRoute({
        dst: '10.244.2.0/24',
        gateway: '10.244.2.0',
        oif: link.index,
        onlink: true,
      });
      await nl.deleteNeighbor(link.index, '10.244.2.0');
      await nl.deleteFdb(link.index, '02:00:00:00:02:01', nodes.ipB);
      expect(await nl.routes({ family: 4, oif: link.index })).toEqual([]);
      expect(await nl.neighbors({ family: 4, ifindex: link.index })).toEqual([]);
      expect(await nl.fdb(link.index)).toEqual([]);
      expect(
        (await nl.addresses(link.index)).map((a) => `${a.address}/${a.prefixLength}`),
      ).toContain('10.244.1.0/32');
    } finally {
      nl.close();
      nodes.delete();
    }
  });

  it('builds a working kernel VXLAN overlay between two namespaces through this API alone', async () => {
    const nodes = createTwoNodes(TAG);
    const sides = [
      { ns: nodes.a, me: 1, peer: 2, local: nodes.ipA, remote: nodes.ipB },
      { ns: nodes.b, me: 2, peer: 1, local: nodes.ipB, remote: nodes.ipA },
    ];
    const clients = sides.map((s) => Rtnl.open({ netns: s.ns.name }));
    try {
      for (const [i, s] of sides.entries()) {
        const nl = clients[i];
        const parent = await nl.link('veth0');
        const { link } = await nl.ensureVxlan({
          name: 'flannel.1',
          vni: 1,
          local: s.local,
          parentIndex: parent!.index,
          mtu: 1450,
          mac: `02:00:00:00:0${s.me}:01`,
        });
        await nl.setLink(link.index, { up: true });
        await nl.replaceAddress(link.index, `10.244.${s.me}.0/32`);
        await nl.replaceRoute({
          dst: `10.244.${s.peer}.0/24`,
          gateway: `10.244.${s.peer}.0`,
          oif: link.index,
          onlink: true,
        });
        await nl.replaceNeighbor(link.index, `10.244.${s.peer}.0`, `02:00:00:00:0${s.peer}:01`);
        await nl.replaceFdb(link.index, `02:00:00:00:0${s.peer}:01`, s.remote);
      }
      const { stdout } = await nodes.a.exec([
        'ping',
        '-c',
        '3',
        '-i',
        '0.2',
        '-W',
        '2',
        '10.244.2.0',
      ]);
      expect(stdout).toMatch(/3 packets transmitted, 3 received/);
      // ensureVxlan again with the same spec reuses the device; a conflicting one replaces it.
      const parent = await clients[0].link('veth0');
      const again = await clients[0].ensureVxlan({
        name: 'flannel.1',
        vni: 1,
        local: nodes.ipA,
        parentIndex: parent!.index,
      });
      expect(again.created).toBe(false);
      const other = await clients[0].ensureVxlan({
        name: 'flannel.1',
        vni: 7,
        local: nodes.ipA,
        parentIndex: parent!.index,
      });
      expect(other.created).toBe(true);
      expect(other.link.vxlan?.vni).toBe(7);
    } finally {
      for (const c of clients) c.close();
      nodes.delete();
    }
  });

  it('builds flannel-v6.1: a kernel VXLAN over an IPv6 underlay carrying IPv6, through this API alone', async () => {
    const nodes = createTwoNodes(TAG);
    const sides = [
      { ns: nodes.a, me: 1, peer: 2 },
      { ns: nodes.b, me: 2, peer: 1 },
    ];
    const clients = sides.map((s) => Rtnl.open({ netns: s.ns.name }));
    try {
      for (const [i, s] of sides.entries()) {
        const nl = clients[i];
        const parent = await nl.link('veth0');
        // The underlay's IPv6 address: tentative while duplicate address detection runs, unless nodad.
        await nl.replaceAddress(parent!.index, `2001:2::${s.me}/64`, { noDad: s.me === 2 });
        const addr = (await nl.addresses(parent!.index)).find(
          (a) => a.address === `2001:2::${s.me}`,
        );
        expect(addr?.scope).toBe(0);
        expect(addr!.flags & IfaFlag.nodad).toBe(s.me === 2 ? IfaFlag.nodad : 0);
        if (s.me === 1) expect(addr!.flags & IfaFlag.tentative).toBe(IfaFlag.tentative);
        const { link } = await nl.ensureVxlan({
          name: 'flannel-v6.1',
          vni: 1,
          local: `2001:2::${s.me}`,
          parentIndex: parent!.index,
          mtu: 1430,
          mac: `02:00:00:00:0${s.me}:06`,
        });
        expect(link.vxlan?.local).toBe(`2001:2::${s.me}`);
        await nl.setLink(link.index, { up: true });
        await nl.replaceAddress(link.index, `fd00:10:244:${s.me}::/128`, { noDad: true });
        await nl.replaceNeighbor(
          link.index,
          `fd00:10:244:${s.peer}::`,
          `02:00:00:00:0${s.peer}:06`,
        );
        await nl.replaceFdb(link.index, `02:00:00:00:0${s.peer}:06`, `2001:2::${s.peer}`);
        await nl.replaceRoute({
          dst: `fd00:10:244:${s.peer}::/64`,
          gateway: `fd00:10:244:${s.peer}::`,
          oif: link.index,
          onlink: true,
        });
        const linkLocal = (await nl.addresses(link.index)).filter((a) => a.scope === 253);
        expect(linkLocal.every((a) => a.address.startsWith('fe80:'))).toBe(true);
        expect(await nl.routes({ family: 6, oif: link.index })).toContainEqual(
          expect.objectContaining({
            dst: `fd00:10:244:${s.peer}::/64`,
            gateway: `fd00:10:244:${s.peer}::`,
            onlink: true,
          }),
        );
        expect(await nl.neighbors({ family: 6, ifindex: link.index })).toEqual([
          expect.objectContaining({
            ip: `fd00:10:244:${s.peer}::`,
            mac: `02:00:00:00:0${s.peer}:06`,
            state: 0x80,
          }),
        ]);
        expect(await nl.fdb(link.index)).toContainEqual(
          expect.objectContaining({ mac: `02:00:00:00:0${s.peer}:06`, dst: `2001:2::${s.peer}` }),
        );
      }
      await waitFor(
        async () =>
          !(
            (await clients[0].addresses()).find((a) => a.address === '2001:2::1')!.flags &
            IfaFlag.tentative
          ),
        'duplicate address detection on 2001:2::1',
      );
      const { stdout } = await nodes.a.exec([
        'ping',
        '-6',
        '-c',
        '3',
        '-i',
        '0.2',
        '-W',
        '2',
        'fd00:10:244:2::',
      ]);
      expect(stdout).toMatch(/3 packets transmitted, 3 received/);
      // ensureVxlan with the same IPv6 local reuses the device.
      const parent = await clients[0].link('veth0');
      const again = await clients[0].ensureVxlan({
        name: 'flannel-v6.1',
        vni: 1,
        local: '2001:2:0::1',
        parentIndex: parent!.index,
      });
      expect(again.created).toBe(false);
    } finally {
      for (const c of clients) c.close();
      nodes.delete();
    }
  });

  it('runs dumps asked for at once one after another: the kernel takes one per socket (else EBUSY)', async () => {
    const nodes = createTwoNodes(TAG);
    const nl = Rtnl.open({ netns: nodes.a.name });
    try {
      await nodes.a.sh(
        'for i in $(seq 1 200); do echo "route add 10.9.$((i / 250)).$((i % 250))/32 dev veth0"; done | ip -batch -',
      );
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          i % 3 === 0 ? nl.routes({ family: 4 }) : i % 3 === 1 ? nl.neighbors() : nl.addresses(),
        ),
      );
      expect(results.filter((_, i) => i % 3 === 0).every((r) => r.length >= 200)).toBe(true);
    } finally {
      nl.close();
      nodes.delete();
    }
  });

  it('turns kernel refusals into WeftErrors with the errno and what was attempted', async () => {
    const nodes = createTwoNodes(TAG);
    const nl = Rtnl.open({ netns: nodes.a.name });
    try {
      await nl.createVxlan({ name: 'vx0', vni: 5, local: nodes.ipA });
      await expect(nl.createVxlan({ name: 'vx0', vni: 5, local: nodes.ipA })).rejects.toThrow(
        expect.objectContaining({
          code: 'ERR_NETLINK_EEXIST',
          message: expect.stringMatching(/^RTM_NEWLINK vx0: File already exists \(EEXIST\)/),
        }),
      );
      await expect(nl.deleteLink(9999)).rejects.toThrow(
        expect.objectContaining({ code: 'ERR_NETLINK_ENODEV' }),
      );
      expect(await nl.link('no-such-dev')).toBeUndefined();
      await expect(
        nl.replaceRoute({ dst: '10.9.0.0/16', gateway: '10.8.0.1', oif: 1 }),
      ).rejects.toThrow(/RTM_NEWROUTE 10\.9\.0\.0\/16 via 10\.8\.0\.1: .*\((ENETUNREACH|EINVAL)\)/);
      // A link kind the kernel has no driver for: what weftd's --vxlan-mode auto reads as "no VXLAN".
      await expect(
        nl.request(
          RtmType.newLink,
          NlmFlag.create | NlmFlag.excl,
          Buffer.alloc(16),
          [
            attr.string(constants.IflaAttr.ifname, 'nokind0'),
            attr.nested(constants.IflaAttr.linkinfo, [
              attr.bareString(constants.IflaInfo.kind, 'weftnokind'),
            ]),
          ],
          'nokind0',
        ),
      ).rejects.toThrow(
        expect.objectContaining({
          code: 'ERR_NETLINK_EOPNOTSUPP',
          message: expect.stringMatching(/^RTM_NEWLINK nokind0: Operation not supported/),
        }),
      );
    } finally {
      nl.close();
      nodes.delete();
    }
  });

  it('says it needs CAP_NET_ADMIN when the process lacks it', () => {
    const script = fileURLToPath(new URL('./fixtures/no-cap.mjs', import.meta.url));
    // In a namespace of its own, so that even a wrongly granted create touches nothing shared.
    const ns = createNetns(TAG);
    try {
      const result = spawnSync(
        'ip',
        [
          'netns',
          'exec',
          ns.name,
          'setpriv',
          '--inh-caps=-net_admin',
          '--bounding-set=-net_admin',
          process.execPath,
          script,
        ],
        { encoding: 'utf8' },
      );
      const outcome = JSON.parse(result.stdout) as { code: string; message: string };
      expect(outcome.code).toBe('ERR_NETLINK_EPERM');
      expect(outcome.message).toMatch(/Operation not permitted \(EPERM\).*needs CAP_NET_ADMIN/);
    } finally {
      ns.delete();
    }
  });
});
