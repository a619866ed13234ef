import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedStore } from '@weft/subnet';
import {
  Cluster,
  type ClusterNode,
  haveTools,
  type Pod,
  privileged,
  REFERENCE_CNI_DIR,
  type RunningWeftd,
  startWeftd,
  sweepNetns,
  tcpTransfer,
  tempDir,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * Pods made by weft-cni on weft nodes, across the overlay: a kernel-VXLAN node and a
 * userspace-VXLAN node, and a pair of udp nodes, each running weftd with --ip-masq as kube-flannel
 * runs flanneld (so subnet.env says FLANNEL_IPMASQ=true and the bridge does not masquerade: pod
 * addresses cross the overlay unchanged). Each pair pings and moves 50 MB both ways, checked by
 * SHA-256.
 */
const TAG = 'cnie2e';
const MB50 = 50 * 1024 * 1024;

/** The address a TCP server in `server` sees a connection from `client` come from. */
async function peerAddress(server: Pod, client: Pod): Promise<string> {
  const srv = server.ns.spawn([
    process.execPath,
    '-e',
    `const s = require('node:net').createServer((c) => { console.log(c.remoteAddress); c.end(); s.close(); }).listen(7000, ${JSON.stringify(server.ip)}, () => console.log('up'));`,
  ]);
  let out = '';
  srv.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  try {
    await waitFor(() => out.includes('up'), 'the peer-address server');
    await client.ns.exec([
      process.execPath,
      '-e',
      `require('node:net').connect(7000, ${JSON.stringify(server.ip)}).on('data', () => {}).on('error', (e) => { console.error(e.message); process.exit(1); })`,
    ]);
    await waitFor(() => out.split('\n').length > 2, 'the peer address');
    return out.split('\n')[1];
  } finally {
    srv.kill('SIGKILL');
  }
}

describe.skipIf(
  !(
    privileged('CNI cross-node tests') &&
    haveTools('CNI cross-node tests', `${REFERENCE_CNI_DIR}/bridge`, 'iptables')
  ),
)('pods made by weft-cni, across the overlay', () => {
  afterAll(() => sweepNetns(TAG));

  it('kernel VXLAN <-> userspace VXLAN, and udp <-> udp: ping, 50 MB each way intact, pod addresses unchanged', async () => {
    const dir = tempDir('weft-cni-e2e-');
    const cluster = new Cluster(TAG);
    const daemons: RunningWeftd[] = [];
    try {
      const store = join(dir.path, 'subnets.json');
      await new EmbeddedStore(store).putConfig(
        '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}',
      );
      const start = async (flags: string[]): Promise<{ node: ClusterNode; pod: Pod }> => {
        const node = cluster.addNode();
        const env = join(dir.path, node.name, 'subnet.env');
        mkdirSync(join(dir.path, node.name));
        const d = startWeftd(node.ns, [
          '--store-path',
          store,
          '--subnet-file',
          env,
          '--iface',
          'eth0',
          '--ip-masq',
          ...flags,
        ]);
        daemons.push(d);
        await d.waitForLog('ready');
        const [pod] = cluster.addPods(node, env, 1);
        return { node, pod };
      };
      const kernel = await start(['--vxlan-mode', 'kernel']);
      const userspace = await start(['--vxlan-mode', 'userspace']);
      const udpA = await start(['--backend-type', 'udp']);
      const udpB = await start(['--backend-type', 'udp']);

      for (const [a, b, what] of [
        [kernel.pod, userspace.pod, 'kernel VXLAN <-> userspace VXLAN'],
        [udpA.pod, udpB.pod, 'udp <-> udp'],
      ] as const) {
        await waitFor(() => cluster.reaches(a, b), `${what}: first ping`, { timeoutMs: 15_000 });
        expect(await cluster.reaches(b, a)).toBe(true);
        // No masquerade anywhere on the path: each side sees the other pod's own address.
        expect(await peerAddress(b, a)).toBe(a.ip);
        expect(await peerAddress(a, b)).toBe(b.ip);
        for (const [server, client] of [
          [a, b],
          [b, a],
        ]) {
          const t = await tcpTransfer(server.ns, client.ns, server.ip, 5201, MB50);
          expect(t.receivedBytes, `${what}: ${client.name} -> ${server.name}`).toBe(MB50);
          expect(t.receivedSha256).toBe(t.sentSha256);
        }
      }
      // The pods have addresses from their nodes' leases, handed out by host-local after the gateway.
      for (const { pod } of [kernel, userspace, udpA, udpB])
        expect(pod.ip).toMatch(/^10\.244\.\d+\.2$/);
    } finally {
      await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)));
      cluster.delete();
      dir.remove();
    }
  }, 180_000);
});
