import { join } from 'node:path';
import {
  Cluster,
  type ClusterNode,
  createNetns,
  type EtcdServer,
  type Pod,
  privileged,
  type RunningWeftd,
  startEtcd,
  startWeftd,
  sweepNetns,
  tempDir,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';

const TAG = 'wdetcd';

/** What a kernel-mode node has programmed on flannel.1: routes, neighbors, FDB destinations. */
async function kernelState(
  node: ClusterNode,
): Promise<{ routes: string[]; neighbors: string[]; fdb: string[] }> {
  const json = async (argv: string[]) =>
    JSON.parse((await node.ns.exec(argv)).stdout) as Record<string, string>[];
  return {
    routes: (await json(['ip', '-j', '-4', 'route', 'show', 'dev', 'flannel.1']))
      .map((r) => r.dst)
      .sort(),
    neighbors: (await json(['ip', '-j', '-4', 'neigh', 'show', 'dev', 'flannel.1']))
      .map((n) => n.dst)
      .sort(),
    fdb: (await json(['bridge', '-j', 'fdb', 'show', 'dev', 'flannel.1']))
      .filter((f) => f.dst)
      .map((f) => f.dst)
      .sort(),
  };
}

describe.skipIf(!privileged('the etcd-backed cluster'))('a weftd cluster over a real etcd', () => {
  afterAll(() => sweepNetns(TAG));

  it('a node joins and is reachable within seconds; it leaves and its entries are gone everywhere; etcd restarts and the daemons carry on', async () => {
    const cluster = new Cluster(TAG);
    const dir = tempDir('weft-cluster-');
    const daemons = new Map<ClusterNode, RunningWeftd>();
    let etcd: EtcdServer | undefined;
    try {
      const etcdNs = createNetns(TAG);
      cluster.plug(etcdNs, '198.18.0.100/24');
      etcd = await startEtcd({
        netns: etcdNs,
        host: '198.18.0.100',
        clientPort: 2379,
        peerPort: 2380,
      });
      await etcd.etcdctl([
        'put',
        '/coreos.com/network/config',
        '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}',
      ]);
      const backendOf = new Map<ClusterNode, 'udp' | 'vxlan'>();
      const start = async (node: ClusterNode, flags: string[], pods = 2) => {
        const d = startWeftd(node.ns, [
          '--etcd-endpoints',
          'http://198.18.0.100:2379',
          '--subnet-file',
          join(dir.path, `${node.name}.env`),
          '--iface',
          'eth0',
          '--metrics-port',
          '9472',
          ...flags,
        ]);
        daemons.set(node, d);
        backendOf.set(node, flags.includes('udp') ? 'udp' : 'vxlan');
        await d.waitForLog('ready');
        if (node.pods.length === 0) cluster.addPods(node, join(dir.path, `${node.name}.env`), pods);
        return d;
      };
      const remoteNodes = async (node: ClusterNode) => {
        const { stdout } = await node.ns.exec([
          process.execPath,
          '-e',
          "fetch('http://127.0.0.1:9472/metrics').then(r=>r.text()).then(console.log)",
        ]);
        return Number(stdout.match(/weft_remote_nodes (\d+)/)?.[1]);
      };
      // A udp node reaches only udp nodes, as in flannel; pods of one node always reach each other.
      const shouldReach = (a: Pod, b: Pod) =>
        a.node === b.node || backendOf.get(a.node) === backendOf.get(b.node);
      const everyPair = async (pods: Pod[]) => {
        for (const a of pods)
          for (const b of pods)
            if (a !== b && shouldReach(a, b) && !(await cluster.reaches(a, b))) return false;
        return true;
      };

      // The demo's cluster: n1 on udp, n2 the kernel's VXLAN, n3 weft's userspace VXLAN; two pods each.
      const [udp, kernel, userspace] = [cluster.addNode(), cluster.addNode(), cluster.addNode()];
      await start(udp, ['--backend-type', 'udp']);
      await start(kernel, ['--vxlan-mode', 'kernel']);
      await start(userspace, ['--vxlan-mode', 'userspace']);
      await waitFor(() => everyPair(cluster.pods), 'the three nodes reaching each other', {
        timeoutMs: 15_000,
      });
      expect(await cluster.reaches(udp.pods[0], kernel.pods[0])).toBe(false);

      // A fourth node joins: within seconds every vxlan node reaches its pods.
      const n4 = cluster.addNode();
      const t0 = Date.now();
      await start(n4, ['--vxlan-mode', 'kernel', '--release-on-exit'], 1);
      await waitFor(() => everyPair(cluster.pods), "every vxlan node reaching the new node's pod", {
        timeoutMs: 15_000,
      });
      const joinSeconds = (Date.now() - t0) / 1000;
      expect(joinSeconds).toBeLessThan(15);
      const n4Subnet = (await daemons.get(n4)!.waitForLog('lease acquired')).subnet as string;
      const n4Vtep = n4Subnet.replace('/24', '');
      expect(await kernelState(kernel)).toMatchObject({
        routes: expect.arrayContaining([n4Subnet]),
        neighbors: expect.arrayContaining([n4Vtep]),
        fdb: expect.arrayContaining([n4.ip]),
      });
      expect(await remoteNodes(userspace)).toBe(2);
      // The udp node saw it and, by design, does not forward to it.
      expect(
        await daemons
          .get(udp)!
          .waitForLog(/^not forwarding to a vxlan node: a udp node reaches only udp nodes$/),
      ).toMatchObject({ backend: 'vxlan' });
      expect(await remoteNodes(udp)).toBe(0);

      // It leaves, releasing its lease: its route, neighbor and FDB entry go from every node.
      expect(await daemons.get(n4)!.stop()).toBe(0);
      expect(
        (await etcd.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/', '--keys-only']))
          .split('\n')
          .filter(Boolean).length,
      ).toBe(3);
      await waitFor(
        async () => {
          const s = await kernelState(kernel);
          return (
            !s.routes.includes(n4Subnet) && !s.neighbors.includes(n4Vtep) && !s.fdb.includes(n4.ip)
          );
        },
        "n4's entries gone from the kernel node",
        { timeoutMs: 10_000 },
      );
      // Exactly its entries: the userspace node's set is still there.
      const left = await kernelState(kernel);
      expect([left.routes.length, left.neighbors.length, left.fdb.length]).toEqual([1, 1, 1]);
      expect(left.fdb).toEqual([userspace.ip]);
      await waitFor(
        async () => (await remoteNodes(userspace)) === 1,
        'the userspace node forgetting n4',
        {
          timeoutMs: 10_000,
        },
      );

      // etcd crashes and comes back: the daemons carry on, and a node joining afterwards is seen by all.
      await etcd.kill();
      await new Promise((r) => setTimeout(r, 1000));
      await etcd.restart();
      for (const n of [udp, kernel, userspace]) expect(daemons.get(n)!.child.exitCode).toBeNull();
      await start(n4, ['--vxlan-mode', 'userspace']);
      await waitFor(() => everyPair(cluster.pods), 'every pod reachable after the etcd restart', {
        timeoutMs: 30_000,
      });
      expect(await remoteNodes(kernel)).toBe(2);
    } finally {
      await Promise.all([...daemons.values()].map((d) => d.stop().catch(() => undefined)));
      await etcd?.stop();
      cluster.delete();
      dir.remove();
    }
  }, 150_000);
});
