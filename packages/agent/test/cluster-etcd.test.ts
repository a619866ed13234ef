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
      const start = async (node: ClusterNode, mode: string, extra: string[] = []) => {
        const d = startWeftd(node.ns, [
          '--etcd-endpoints',
          'http://198.18.0.100:2379',
          '--subnet-file',
          join(dir.path, `${node.name}.env`),
          '--iface',
          'eth0',
          '--vxlan-mode',
          mode,
          '--metrics-port',
          '9472',
          ...extra,
        ]);
        daemons.set(node, d);
        await d.waitForLog('ready');
        if (node.pods.length === 0) cluster.addPods(node, join(dir.path, `${node.name}.env`), 1);
        return d;
      };
      const modes = ['kernel', 'userspace', 'kernel'];
      const nodes = modes.map(() => cluster.addNode());
      for (const [i, n] of nodes.entries()) await start(n, modes[i]);
      const everyPair = async (pods: Pod[]) => {
        for (const a of pods)
          for (const b of pods) if (a !== b && !(await cluster.reaches(a, b))) return false;
        return true;
      };
      await waitFor(() => everyPair(cluster.pods), 'the three nodes reaching each other', {
        timeoutMs: 15_000,
      });

      // A fourth node joins: within seconds every other node reaches its pods.
      const n4 = cluster.addNode();
      const t0 = Date.now();
      await start(n4, 'kernel', ['--release-on-exit']);
      await waitFor(() => everyPair(cluster.pods), "every node reaching the new node's pod", {
        timeoutMs: 15_000,
      });
      const joinSeconds = (Date.now() - t0) / 1000;
      expect(joinSeconds).toBeLessThan(15);
      const n4Subnet = (await daemons.get(n4)!.waitForLog('lease acquired')).subnet as string;
      const n4Vtep = n4Subnet.replace('/24', '');
      expect((await kernelState(nodes[0])).routes).toContain(n4Subnet);

      // It leaves, releasing its lease: its route, neighbor and FDB entry go from every node.
      await daemons.get(n4)!.stop();
      expect(
        (await etcd.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/', '--keys-only']))
          .split('\n')
          .filter(Boolean).length,
      ).toBe(3);
      for (const k of [nodes[0], nodes[2]]) {
        await waitFor(
          async () => {
            const s = await kernelState(k);
            return (
              !s.routes.includes(n4Subnet) &&
              !s.neighbors.includes(n4Vtep) &&
              !s.fdb.includes(n4.ip)
            );
          },
          `n4's entries gone from ${k.name}`,
          { timeoutMs: 10_000 },
        );
        const s = await kernelState(k);
        expect(s.routes.length).toBe(2);
        expect(s.fdb.length).toBe(2);
      }
      await waitFor(
        async () => {
          const { stdout } = await nodes[1].ns.exec([
            process.execPath,
            '-e',
            "fetch('http://127.0.0.1:9472/metrics').then(r=>r.text()).then(console.log)",
          ]);
          return /weft_remote_nodes 2\b/.test(stdout);
        },
        'the userspace node forgetting n4',
        { timeoutMs: 10_000 },
      );

      // etcd crashes and comes back: the daemons carry on, and a node joining afterwards is seen by all.
      await etcd.kill();
      await new Promise((r) => setTimeout(r, 1000));
      await etcd.restart();
      for (const n of nodes) expect(daemons.get(n)!.child.exitCode).toBeNull();
      await start(n4, 'userspace');
      await waitFor(() => everyPair(cluster.pods), 'every pod reachable after the etcd restart', {
        timeoutMs: 30_000,
      });
    } finally {
      await Promise.all([...daemons.values()].map((d) => d.stop().catch(() => undefined)));
      await etcd?.stop();
      cluster.delete();
      dir.remove();
    }
  }, 150_000);
});
