import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedStore } from '@weft/subnet';
import {
  BUSYBOX,
  busyboxRootfs,
  Cluster,
  type ClusterNode,
  haveTools,
  installWeftCni,
  KUBE_FLANNEL_CNI_CONF,
  Podman,
  privileged,
  REFERENCE_CNI_DIR,
  type RunningWeftd,
  startWeftd,
  sweepNetns,
  tempDir,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * A real container runtime: Debian's podman with its CNI network backend and runc, on two weft
 * nodes (kernel VXLAN and weft's userspace VXLAN). Each node's podman has kube-flannel's
 * cni-conf.json with weft-cni installed as `flannel` in its CNI plugin directory, and runs busybox
 * containers from a local root filesystem (no registry). The containers reach each other across
 * the overlay; removing them runs the plugin's DEL, which leaves nothing behind.
 */
const TAG = 'cnipod';

describe.skipIf(
  !(
    privileged('podman tests') &&
    haveTools('podman tests', 'podman', 'runc', 'nsenter', BUSYBOX, `${REFERENCE_CNI_DIR}/bridge`)
  ),
)('podman runs containers through weft-cni', () => {
  afterAll(() => sweepNetns(TAG));

  it('on a kernel-VXLAN node and a userspace-VXLAN node: containers ping and fetch from each other; rm leaves nothing', async () => {
    const dir = tempDir('weft-cni-podman-');
    const cluster = new Cluster(TAG);
    const daemons: RunningWeftd[] = [];
    const podmen: Podman[] = [];
    try {
      const rootfs = busyboxRootfs(join(dir.path, 'rootfs'));
      const bin = join(dir.path, 'cni-bin');
      installWeftCni(bin);
      const store = join(dir.path, 'subnets.json');
      await new EmbeddedStore(store).putConfig(
        '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}',
      );

      const nodes: { node: ClusterNode; podman: Podman; state: string }[] = [];
      for (const mode of ['kernel', 'userspace']) {
        const node = cluster.addNode();
        const state = join(dir.path, node.name);
        const subnetFile = join(state, 'subnet.env');
        const d = startWeftd(node.ns, [
          '--store-path',
          store,
          '--subnet-file',
          subnetFile,
          '--iface',
          'eth0',
          '--ip-masq',
          '--vxlan-mode',
          mode,
        ]);
        daemons.push(d);
        await d.waitForLog('ready');
        // kube-flannel's list; the flannel entry told where this node's files are.
        const list = JSON.parse(KUBE_FLANNEL_CNI_CONF);
        Object.assign(list.plugins[0], {
          subnetFile,
          dataDir: join(state, 'flannel'),
          ipam: { dataDir: join(state, 'ipam') },
        });
        const podman = new Podman(node.ns, {
          dir: join(state, 'podman'),
          networks: { '10-flannel.conflist': JSON.stringify(list, null, 2) },
          cniPluginDirs: [bin, REFERENCE_CNI_DIR],
        });
        podmen.push(podman);
        nodes.push({ node, podman, state });
      }

      const containers = [];
      for (const [i, { podman, state, node }] of nodes.entries()) {
        const name = `c${i + 1}`;
        const id = await podman.run([
          'run',
          '-d',
          '--name',
          name,
          '--network',
          'cbr0',
          '--tmpfs',
          '/tmp',
          '--rootfs',
          rootfs,
          'sh',
          '-c',
          'mkdir -p /tmp/www && head -c 5000000 /dev/urandom > /tmp/www/blob && sha256sum /tmp/www/blob > /tmp/sum && exec httpd -f -p 8080 -h /tmp/www',
        ]);
        const { ip, netns } = await podman.address(name, 'cbr0');
        const subnet = readFileSync(join(state, 'subnet.env'), 'utf8').match(
          /FLANNEL_SUBNET=(\S+)\.1\/24/,
        )![1];
        expect(ip, `${name} on ${node.name}`).toBe(`${subnet}.2`);
        // podman ran weft-cni: its record is under the container's ID.
        expect(readdirSync(join(state, 'flannel'))).toEqual([id]);
        containers.push({ name, id, ip, netns, podman, state });
      }

      const [a, b] = containers;
      for (const [from, to] of [
        [a, b],
        [b, a],
      ]) {
        await waitFor(
          async () => {
            try {
              await from.podman.run(['exec', from.name, 'ping', '-c', '1', '-W', '1', to.ip]);
              return true;
            } catch {
              return false;
            }
          },
          `${from.name} pinging ${to.name} across the overlay`,
          { timeoutMs: 15_000 },
        );
        // 5 MB over HTTP between the containers (busybox httpd and wget), checked by SHA-256.
        await waitFor(
          async () =>
            (await to.podman.run(['exec', to.name, 'cat', '/tmp/sum']).catch(() => '')) !== '',
          'the blob',
        );
        const want = (await to.podman.run(['exec', to.name, 'cat', '/tmp/sum'])).split(' ')[0];
        const got = await from.podman.run([
          'exec',
          from.name,
          'sh',
          '-c',
          `wget -q -O - http://${to.ip}:8080/blob | sha256sum`,
        ]);
        expect(got.split(' ')[0], `${from.name} fetching from ${to.name}`).toBe(want);
      }

      for (const c of containers) {
        await c.podman.run(['rm', '--force', '--time', '0', c.name]);
        // The plugin's DEL ran: no record, no address reserved.
        expect(readdirSync(join(c.state, 'flannel'))).toEqual([]);
        expect(readdirSync(join(c.state, 'ipam', 'cbr0')).filter((f) => /^\d/.test(f))).toEqual([]);
      }
    } finally {
      for (const p of podmen) p.removeAll();
      await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)));
      cluster.delete();
      dir.remove();
    }
  }, 180_000);
});
