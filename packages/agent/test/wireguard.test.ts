import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import {
  Cluster,
  type ClusterNode,
  createNetns,
  type EtcdServer,
  haveTools,
  privileged,
  type RunningWeftd,
  startEtcd,
  startWeftd,
  startWireguardGo,
  sweepNetns,
  tempDir,
  type WireguardGo,
  waitFor,
  wgKeyPair,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';

const TAG = 'wdwg';
const canRun =
  privileged('the weftd wireguard cluster') &&
  haveTools('the weftd wireguard cluster', 'wireguard-go', 'wg', 'etcd', 'etcdctl');

/** The lease flanneld writes for a wireguard node (pkg/backend/wireguard newSubnetAttrs, IPv4 only). */
function flannelLease(publicIp: string, publicKey: string): string {
  return JSON.stringify({
    PublicIP: publicIp,
    BackendType: 'wireguard',
    BackendData: { PublicKey: publicKey, Port: 51820 },
  });
}

describe.skipIf(!canRun)('weftd with the wireguard backend', () => {
  afterAll(() => sweepNetns(TAG));

  it('two weftd nodes and a flannel wireguard node (wireguard-go, its lease as flanneld writes it) reach each other; keys are kept across a restart', async () => {
    const cluster = new Cluster(TAG);
    const dir = tempDir('weft-wgcluster-');
    const daemons = new Map<ClusterNode, RunningWeftd>();
    let etcd: EtcdServer | undefined;
    let wgo: WireguardGo | undefined;
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
        '{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard", "PersistentKeepaliveInterval": 0}}',
      ]);
      const [n1, n2, flannelNode] = [cluster.addNode(), cluster.addNode(), cluster.addNode('fl')];

      // The flannel node: its lease first (as flanneld acquires it), then flannel-wg.
      const flKey = await wgKeyPair();
      const grant = await etcd.etcdctl(['lease', 'grant', '86400']);
      const leaseId = /lease ([0-9a-f]+) granted/.exec(grant)![1];
      await etcd.etcdctl([
        'put',
        `--lease=${leaseId}`,
        '/coreos.com/network/subnets/10.244.200.0-24',
        flannelLease(flannelNode.ip, flKey.publicKey),
      ]);
      wgo = await startWireguardGo(flannelNode.ns, {
        privateKey: flKey.privateKey,
        listenPort: 51820,
        address: '10.244.200.0',
        network: '10.244.0.0/16',
      });

      const start = async (node: ClusterNode, extra: string[] = []) => {
        const d = startWeftd(
          node.ns,
          [
            '--etcd-endpoints',
            'http://198.18.0.100:2379',
            '--subnet-file',
            join(dir.path, `${node.name}.env`),
            '--iface',
            'eth0',
            ...extra,
          ],
          { env: { WIREGUARD_KEY_FILE: join(dir.path, `${node.name}.wgkey`) } },
        );
        daemons.set(node, d);
        await d.waitForLog('ready');
        return d;
      };
      const d1 = await start(n1);
      await start(n2);
      for (const n of [n1, n2]) cluster.addPods(n, join(dir.path, `${n.name}.env`), 1);

      // Each weftd made its key file (0600), published its public key in its lease as flannel does,
      // and fell back to userspace WireGuard on this kernel.
      const leaseOf = async (node: ClusterNode) => {
        const subnet = (await daemons.get(node)!.waitForLog('lease acquired')).subnet as string;
        const key = `/coreos.com/network/subnets/${subnet.replace('/', '-')}`;
        return {
          subnet,
          value: JSON.parse(await etcd!.etcdctl(['get', '--print-value-only', key])),
        };
      };
      const keys = new Map<ClusterNode, string>();
      for (const n of [n1, n2]) {
        const keyFile = join(dir.path, `${n.name}.wgkey`);
        expect(statSync(keyFile).mode & 0o777).toBe(0o600);
        const pub = execFileSync('sh', ['-c', `wg pubkey < ${keyFile}`], {
          encoding: 'utf8',
        }).trim();
        const { subnet, value } = await leaseOf(n);
        expect(value).toMatchObject({
          PublicIP: n.ip,
          BackendType: 'wireguard',
          BackendData: { PublicKey: pub, Port: 51820 },
        });
        keys.set(n, pub);
        // flannel's addPeer on the flannel node, from this lease.
        await wgo.wg([
          'set',
          wgo.name,
          'peer',
          pub,
          'endpoint',
          `${n.ip}:51820`,
          'allowed-ips',
          subnet,
        ]);
      }
      expect(await d1.waitForLog("wireguard: running weft's userspace WireGuard")).toMatchObject({
        reason: expect.stringMatching(/^auto: the kernel cannot make a wireguard device/),
      });
      // flannel-wg with flannel's MTU (1500 - 80), address and route.
      const link = JSON.parse(
        (await n1.ns.exec(['ip', '-j', '-d', 'link', 'show', 'flannel-wg'])).stdout,
      )[0];
      expect(link.mtu).toBe(1420);
      const env = (await n1.ns.exec(['cat', join(dir.path, `${n1.name}.env`)])).stdout;
      expect(env).toMatch(/FLANNEL_MTU=1420/);

      const [p1] = n1.pods;
      const [p2] = n2.pods;
      await waitFor(
        () => cluster.reaches(p1, p2),
        'pods of the two weftd nodes reaching each other',
        {
          timeoutMs: 15_000,
        },
      );
      expect(await cluster.reaches(p2, p1)).toBe(true);
      // The flannel node reaches weft's pods and weft's pods reach it.
      const flPing = (to: string) =>
        flannelNode.ns.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', to]).then(
          (r) => /2 received/.test(r.stdout),
          () => false,
        );
      await waitFor(() => flPing(p1.ip), 'the flannel node reaching a pod on n1', {
        timeoutMs: 15_000,
      });
      expect(await flPing(p2.ip)).toBe(true);
      const fromPod = await p2.ns.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.244.200.0']);
      expect(fromPod.stdout).toMatch(/2 received/);
      const [, ...peerRows] = await wgo.dump();
      expect(peerRows.map((r) => r[2]).sort()).toEqual([`${n1.ip}:51820`, `${n2.ip}:51820`]);
      expect(peerRows.every((r) => Number(r[4]) > 0)).toBe(true);

      // A restart keeps the key: the same PublicKey, and the peers reach it again without reconfiguring.
      expect(await daemons.get(n1)!.stop()).toBe(0);
      const again = await start(n1);
      expect(await again.waitForLog('WireGuard key pair read back')).toMatchObject({
        publicKey: keys.get(n1),
      });
      expect((await leaseOf(n1)).value.BackendData.PublicKey).toBe(keys.get(n1));
      await waitFor(() => cluster.reaches(p2, p1), 'n2 reaching n1 after the restart', {
        timeoutMs: 20_000,
      });
      await waitFor(() => flPing(p1.ip), 'the flannel node reaching n1 after the restart', {
        timeoutMs: 20_000,
      });

      // --wireguard-mode kernel on a kernel without WireGuard: a clear error, nothing left behind.
      const n3 = cluster.addNode();
      const strict = startWeftd(
        n3.ns,
        [
          '--etcd-endpoints',
          'http://198.18.0.100:2379',
          '--subnet-file',
          join(dir.path, 'n3.env'),
          '--iface',
          'eth0',
          '--wireguard-mode',
          'kernel',
        ],
        { env: { WIREGUARD_KEY_FILE: join(dir.path, 'n3.wgkey') } },
      );
      expect(await strict.exited).not.toBe(0);
      expect(`${strict.stderr()}${JSON.stringify(strict.logs)}`).toMatch(
        /--wireguard-mode kernel: the kernel cannot make a wireguard device.*use --wireguard-mode auto or userspace/,
      );
      expect((await n3.ns.exec(['ip', '-j', 'link', 'show'])).stdout).not.toContain('flannel-wg');
    } finally {
      await Promise.all([...daemons.values()].map((d) => d.stop().catch(() => undefined)));
      await wgo?.stop().catch(() => undefined);
      await etcd?.stop();
      cluster.delete();
      dir.remove();
    }
  }, 150_000);
});
