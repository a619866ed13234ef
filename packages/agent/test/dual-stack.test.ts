import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedStore } from '@weft/subnet';
import {
  Cluster,
  type ClusterNode,
  createNetns,
  type EtcdServer,
  type FlannelDecoded,
  flannelDecodeLeases,
  flannelEncodeLeases,
  haveTools,
  type Pod,
  privileged,
  type RunningWeftd,
  startEtcd,
  startWeftd,
  startWireguardGo,
  sweepNetns,
  tcpTransfer,
  tempDir,
  type WireguardGo,
  waitFor,
  wgKeyPair,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * Dual-stack and IPv6-only clusters as flannel runs them: kernel-VXLAN nodes (flannel.1 and
 * flannel-v6.1) and userspace-VXLAN nodes side by side, pods from the CNI plugin with an address
 * of each family, a peer set up exactly as a dual-stack flanneld sets itself up (its lease put
 * with etcdctl, its devices programmed with iproute2), flannel's own lease types (Go) reading
 * weftd's leases, and the wire checked on a capture by tshark.
 */
const TAG = 'wddual';
const MB = 50 * 1024 * 1024;
const DUAL_CONFIG =
  '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", "Backend": {"Type": "vxlan"}}';
const V6_CONFIG =
  '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", "Backend": {"Type": "vxlan"}}';
/** Two nodes of each mode: every pair of modes (kernel-kernel, kernel-userspace, userspace-userspace). */
const MODES = ['kernel', 'kernel', 'userspace', 'userspace'] as const;
type VxlanMode = (typeof MODES)[number];

const log = (line: string) => process.stdout.write(`  [dual-stack] ${line}\n`);

async function ipJson(node: { ns: ClusterNode['ns'] }, argv: string[]) {
  return JSON.parse((await node.ns.exec(argv)).stdout || '[]') as Record<string, unknown>[];
}

function env(path: string): Record<string, string> {
  return Object.fromEntries(
    readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('=') as [string, string]),
  );
}

interface Member {
  node: ClusterNode;
  mode: VxlanMode;
  weftd: RunningWeftd;
  pod: Pod;
  env: string;
}

/** Every ordered pair of pods pings, in each family asked for. */
async function pingMatrix(cluster: Cluster, pods: Pod[], families: (4 | 6)[]): Promise<void> {
  for (const family of families)
    for (const a of pods)
      for (const b of pods)
        if (a !== b)
          await waitFor(
            () => cluster.reaches(a, b, 1, family),
            `${a.name} -> ${b.name} over IPv${family}`,
            { timeoutMs: 15_000, intervalMs: 200 },
          );
}

/** 50 MB each way between a node of each pair of modes, in each family: SHA-256 equal at both ends. */
async function transfers(members: Member[], families: (4 | 6)[]): Promise<void> {
  const pairs: [Member, Member][] = [
    [members[0], members[1]],
    [members[0], members[2]],
    [members[2], members[3]],
  ];
  let port = 7100;
  for (const family of families)
    for (const [a, b] of pairs)
      for (const [from, to] of [
        [a, b],
        [b, a],
      ]) {
        const address = family === 6 ? to.pod.ip6! : to.pod.ip;
        const r = await tcpTransfer(to.pod.ns, from.pod.ns, address, port++, MB);
        expect(r.receivedBytes, `${from.mode} -> ${to.mode} IPv${family}`).toBe(MB);
        expect(r.receivedSha256, `${from.mode} -> ${to.mode} IPv${family}`).toBe(r.sentSha256);
        log(
          `IPv${family} ${from.node.name} (${from.mode}) -> ${to.node.name} (${to.mode}): 50 MB in ${r.seconds.toFixed(2)} s, sha256 equal`,
        );
      }
}

/**
 * A live capture of VXLAN over IPv6 on the underlay switch, dissected by tshark as it comes:
 * outer and inner addresses, the UDP checksum and tshark's verdict on it, the VNI.
 */
function captureVxlan6(cluster: Cluster) {
  const fields = [
    'ipv6.src',
    'ipv6.dst',
    'udp.srcport',
    'udp.dstport',
    'udp.checksum',
    'udp.checksum.status',
    'vxlan.vni',
    'eth.dst',
    'icmpv6.type',
  ];
  const child = cluster.underlay.spawn([
    'tshark',
    '-l',
    '-n',
    '-i',
    'br0',
    '-f',
    'ip6 and udp port 8472',
    '-d',
    'udp.port==8472,vxlan',
    '-o',
    'udp.check_checksum:TRUE',
    '-T',
    'fields',
    '-E',
    'separator=|',
    ...fields.flatMap((f) => ['-e', f]),
  ]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return {
    rows: () =>
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => Object.fromEntries(l.split('|').map((v, i) => [fields[i], v.split(',')]))),
    stop: () => child.kill('SIGINT'),
  };
}

describe.skipIf(
  !privileged('the dual-stack clusters') ||
    !haveTools('the dual-stack clusters', 'tshark', 'go', '/usr/bin/etcdctl'),
)('dual-stack and IPv6-only clusters', () => {
  afterAll(() => sweepNetns(TAG));

  it("dual-stack over etcd: kernel and userspace VXLAN nodes and a flanneld-made peer reach each other in both families, 50 MB each way between every pair of modes; weftd's lease as flannel reads it; VXLAN over IPv6 on the wire", async () => {
    const cluster = new Cluster(TAG, { underlay: 'dual' });
    const dir = tempDir('weft-dual-');
    const members: Member[] = [];
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
      await etcd.etcdctl(['put', '/coreos.com/network/config', DUAL_CONFIG]);
      for (const mode of MODES) {
        const node = cluster.addNode();
        const subnetFile = join(dir.path, `${node.name}.env`);
        const weftd = startWeftd(node.ns, [
          '--etcd-endpoints',
          'http://198.18.0.100:2379',
          '--subnet-file',
          subnetFile,
          '--iface',
          'eth0',
          '--vxlan-mode',
          mode,
          '--healthz-ip',
          '127.0.0.1',
          '--healthz-port',
          '9481',
        ]);
        await weftd.waitForLog('ready');
        const [pod] = cluster.addPods(node, subnetFile, 1);
        members.push({ node, mode, weftd, pod, env: subnetFile });
      }

      // subnet.env as flanneld writes it, and an MTU for the larger IPv6 outer header.
      for (const m of members) {
        const e = env(m.env);
        expect(e.FLANNEL_NETWORK).toBe('10.244.0.0/16');
        expect(e.FLANNEL_SUBNET).toMatch(/^10\.244\.\d+\.1\/24$/);
        expect(e.FLANNEL_IPV6_NETWORK).toBe('fd00:10:244::/48');
        expect(e.FLANNEL_IPV6_SUBNET).toMatch(/^fd00:10:244:[0-9a-f]+::1\/64$/);
        expect(e.FLANNEL_MTU).toBe('1430');
        expect(m.pod.ip6).toBeDefined();
      }

      // Each node's lease, read with etcdctl and decoded by flannel's own types (Go).
      const listed = (
        await etcd.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/'])
      ).split('\n');
      const kvs: { key: string; value: string }[] = [];
      for (let i = 0; i + 1 < listed.length; i += 2)
        if (listed[i]) kvs.push({ key: listed[i], value: listed[i + 1] });
      expect(kvs.length).toBe(MODES.length);
      const decoded = await flannelDecodeLeases(kvs);
      const leaseOf = new Map<ClusterNode, { kv: (typeof kvs)[number]; d: FlannelDecoded }>();
      for (const [i, d] of decoded.entries()) {
        expect(d.ok, d.error).toBe(true);
        const m = members.find((x) => x.node.ip === d.publicIP)!;
        leaseOf.set(m.node, { kv: kvs[i], d });
        expect(d.publicIPv6).toBe(m.node.ip6);
        expect(d.backendType).toBe('vxlan');
        expect(d.vxlanError).toBeUndefined();
        expect(d.vxlan6Error).toBeUndefined();
        // The key and value flanneld would write back are the bytes weftd wrote.
        expect(`/coreos.com/network/subnets/${d.key}`).toBe(kvs[i].key);
        expect(d.value).toBe(kvs[i].value);
        const e = env(m.env);
        expect(d.subnet).toBe(e.FLANNEL_SUBNET.replace('.1/24', '.0/24'));
        expect(d.subnet6).toBe(e.FLANNEL_IPV6_SUBNET.replace('::1/64', '::/64'));
        // One VTEP MAC per family; on a kernel node, the devices' own.
        expect(d.vxlan!.vtepMac).not.toBe(d.vxlan6!.vtepMac);
        if (m.mode === 'kernel') {
          const mac = async (dev: string) =>
            (await ipJson(m.node, ['ip', '-j', 'link', 'show', dev]))[0].address;
          expect(d.vxlan).toEqual({ vni: 1, vtepMac: await mac('flannel.1') });
          expect(d.vxlan6).toEqual({ vni: 1, vtepMac: await mac('flannel-v6.1') });
        }
      }

      // The kernel nodes' devices are flannel's: flannel-v6.1 over the IPv6 underlay, a /128.
      const k1 = members[0];
      const v6dev = (await ipJson(k1.node, ['ip', '-d', '-j', 'link', 'show', 'flannel-v6.1']))[0];
      expect(v6dev.mtu).toBe(1430);
      expect((v6dev.linkinfo as { info_data: Record<string, unknown> }).info_data).toMatchObject({
        id: 1,
        local6: k1.node.ip6,
        learning: false,
        udp_zero_csum6_tx: false,
      });
      const v6sub = leaseOf.get(k1.node)!.d.subnet6!;
      expect(
        (await ipJson(k1.node, ['ip', '-j', '-6', 'addr', 'show', 'dev', 'flannel-v6.1']))[0]
          .addr_info,
      ).toContainEqual(
        expect.objectContaining({ local: v6sub.replace('/64', ''), prefixlen: 128 }),
      );

      // A peer exactly as a dual-stack flanneld makes itself: its lease put with etcdctl, its
      // flannel.1 and flannel-v6.1 programmed with iproute2 (flannel's MTU: underlay - 50 for both).
      const f = cluster.addNode('flanneld');
      const fMac = '6e:5d:4c:3b:2a:19';
      const fMac6 = '6e:5d:4c:3b:2a:1a';
      const [written] = await flannelEncodeLeases([
        {
          subnet: '10.244.200.0/24',
          subnet6: 'fd00:10:244:c8::/64',
          publicIP: f.ip,
          publicIPv6: f.ip6,
          backendType: 'vxlan',
          vni: 1,
          mac: fMac,
          mac6: fMac6,
        },
      ]);
      expect(written.key).toBe('10.244.200.0-24&fd00:10:244:c8::-64');
      const grant = await etcd.etcdctl(['lease', 'grant', '3600']);
      const leaseId = /lease ([0-9a-f]+) granted/.exec(grant)![1];
      await etcd.etcdctl([
        'put',
        `--lease=${leaseId}`,
        `/coreos.com/network/subnets/${written.key}`,
        written.value,
      ]);
      // flanneld creates both with its MTU, 1450: the kernel clamps flannel-v6.1's to 1430.
      const fSetup = [
        `ip link add flannel.1 address ${fMac} mtu 1450 type vxlan id 1 local ${f.ip} dstport 0 nolearning dev eth0`,
        'ip addr add 10.244.200.0/32 dev flannel.1',
        'ip link set flannel.1 up',
        `ip link add flannel-v6.1 address ${fMac6} mtu 1450 type vxlan id 1 local ${f.ip6} dstport 0 nolearning dev eth0`,
        'ip addr add fd00:10:244:c8::/128 dev flannel-v6.1',
        'ip link set flannel-v6.1 up',
      ];
      for (const m of members) {
        const { d } = leaseOf.get(m.node)!;
        const sn = d.subnet!.replace('/24', '');
        const sn6 = d.subnet6!.replace('/64', '');
        fSetup.push(
          `ip neigh replace ${sn} lladdr ${d.vxlan!.vtepMac} dev flannel.1 nud permanent`,
          `bridge fdb replace ${d.vxlan!.vtepMac} dev flannel.1 dst ${m.node.ip} self permanent`,
          `ip route replace ${d.subnet} via ${sn} dev flannel.1 onlink`,
          `ip -6 neigh replace ${sn6} lladdr ${d.vxlan6!.vtepMac} dev flannel-v6.1 nud permanent`,
          `bridge fdb replace ${d.vxlan6!.vtepMac} dev flannel-v6.1 dst ${m.node.ip6} self permanent`,
          `ip -6 route replace ${d.subnet6} via ${sn6} dev flannel-v6.1 onlink`,
        );
      }
      await f.ns.sh(fSetup.join('\n'));
      const fEnv = join(dir.path, 'flanneld.env');
      // flanneld's subnet.env for this lease (FLANNEL_MTU: flannel's 1450).
      await f.ns.sh(
        `printf 'FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.200.1/24\\nFLANNEL_IPV6_NETWORK=fd00:10:244::/48\\nFLANNEL_IPV6_SUBNET=fd00:10:244:c8::1/64\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=false\\n' > ${fEnv}`,
      );
      const [fPod] = cluster.addPods(f, fEnv, 1);
      // Every weftd programs the flanneld peer in both families, from the lease alone.
      await waitFor(
        async () =>
          (await ipJson(k1.node, ['ip', '-j', '-6', 'route', 'show', 'dev', 'flannel-v6.1'])).some(
            (r) => r.dst === 'fd00:10:244:c8::/64' && r.gateway === 'fd00:10:244:c8::',
          ),
        'the flanneld peer routed over flannel-v6.1',
      );
      expect(
        await ipJson(k1.node, ['ip', '-j', '-6', 'neigh', 'show', 'fd00:10:244:c8::']),
      ).toEqual([
        expect.objectContaining({ dev: 'flannel-v6.1', lladdr: fMac6, state: ['PERMANENT'] }),
      ]);
      expect(
        (await ipJson(k1.node, ['bridge', '-j', 'fdb', 'show', 'dev', 'flannel-v6.1'])).filter(
          (x) => x.mac === fMac6,
        ),
      ).toEqual([expect.objectContaining({ dst: f.ip6 })]);
      expect(await ipJson(k1.node, ['ip', '-j', '-4', 'route', 'show', '10.244.200.0/24'])).toEqual(
        [expect.objectContaining({ gateway: '10.244.200.0', dev: 'flannel.1' })],
      );

      // Every pod reaches every other, the flanneld peer's included, in both families.
      const pods = [...members.map((m) => m.pod), fPod];
      await pingMatrix(cluster, pods, [4, 6]);
      log(
        `${pods.length} pods reach each other over IPv4 and IPv6 (${pods.length * (pods.length - 1) * 2} ordered pairs)`,
      );

      // On the wire: VXLAN (VNI 1) over IPv6 from every node, carrying IPv6, with a UDP checksum
      // that is set and good (RFC 6935/6936: a zero one over IPv6 only by explicit opt-in).
      const capture = captureVxlan6(cluster);
      const echoes = () => capture.rows().filter((r) => r['icmpv6.type'][0] === '128');
      await waitFor(
        async () => {
          await cluster.reaches(k1.pod, fPod, 1, 6);
          return echoes().length > 0;
        },
        'tshark capturing',
        { timeoutMs: 20_000, intervalMs: 200 },
      );
      for (const a of pods) await cluster.reaches(a, a === fPod ? k1.pod : fPod, 1, 6);
      await waitFor(
        () => new Set(echoes().map((r) => r['ipv6.src'][0])).size === pods.length,
        'an echo request from every node in the capture',
      );
      capture.stop();
      const rows = echoes();
      for (const m of [...members.map((x) => x.node), f]) {
        const sent = rows.filter((r) => r['ipv6.src'][0] === m.ip6);
        expect(sent.length, `echo requests over IPv6 from ${m.name}`).toBeGreaterThan(0);
        for (const r of sent) {
          expect(r['udp.dstport']).toEqual(['8472']);
          expect(r['vxlan.vni']).toEqual(['1']);
          expect(r['udp.checksum'][0]).not.toBe('0x0000');
          expect(r['udp.checksum.status'], `${m.name}'s checksum`).toEqual(['1']);
          // Inner: an IPv6 packet between pod addresses.
          expect(r['ipv6.src'][1]).toMatch(/^fd00:10:244:/);
          expect(r['ipv6.dst'][1]).toMatch(/^fd00:10:244:/);
        }
      }
      log(`tshark: ${rows.length} VXLAN-over-IPv6 echo requests, every UDP checksum set and good`);

      await transfers(members, [4, 6]);

      // Self-healing covers the IPv6 device: flannel-v6.1 deleted, recreated with every peer.
      const before = k1.weftd.logs.length;
      await k1.node.ns.exec(['ip', 'link', 'del', 'flannel-v6.1']);
      await k1.weftd.waitForLog(/flannel-v6\.1 recreated and \d+ peers reprogrammed/, 10_000);
      await waitFor(() => cluster.reaches(k1.pod, fPod, 1, 6), 'IPv6 to the flanneld peer again');
      await waitFor(
        () => cluster.reaches(k1.pod, members[2].pod, 1, 6),
        'IPv6 to a userspace node again',
      );
      expect(k1.weftd.logs.slice(before).some((l) => /flannel\.1 /.test(String(l.msg)))).toBe(
        false,
      );
      // On a userspace node the same: its IPv6 TUN deleted is reopened with every peer.
      const u1 = members[2];
      await u1.node.ns.exec(['ip', 'link', 'del', 'flannel-v6.1']);
      await u1.weftd.waitForLog(/flannel-v6\.1 reopened and \d+ peers reprogrammed/, 10_000);
      await waitFor(
        () => cluster.reaches(u1.pod, fPod, 1, 6),
        'IPv6 from the userspace node again',
      );
      await waitFor(() => cluster.reaches(u1.pod, k1.pod, 1, 4), 'and IPv4 all along');
      // ... and its entries: an IPv6 neighbor deleted by hand is put back.
      await k1.node.ns.exec([
        'ip',
        '-6',
        'neigh',
        'del',
        'fd00:10:244:c8::',
        'dev',
        'flannel-v6.1',
      ]);
      await waitFor(
        async () =>
          (await ipJson(k1.node, ['ip', '-j', '-6', 'neigh', 'show', 'fd00:10:244:c8::'])).some(
            (n) => n.lladdr === fMac6,
          ),
        'the IPv6 neighbor put back',
        { timeoutMs: 2000 },
      );
    } finally {
      for (const m of members) await m.weftd.stop().catch(() => undefined);
      await etcd?.stop().catch(() => undefined);
      cluster.delete();
      dir.remove();
    }
  }, 300_000);

  it('IPv6-only: no IPv4 anywhere (underlay, leases, devices); kernel and userspace VXLAN nodes, every pair of modes pings and moves 50 MB each way', async () => {
    const cluster = new Cluster(TAG, { underlay: 'ipv6' });
    const dir = tempDir('weft-v6only-');
    const members: Member[] = [];
    try {
      const store = join(dir.path, 'subnets.json');
      await new EmbeddedStore(store).putConfig(V6_CONFIG);
      for (const mode of MODES) {
        const node = cluster.addNode();
        const subnetFile = join(dir.path, `${node.name}.env`);
        const weftd = startWeftd(node.ns, [
          '--store-path',
          store,
          '--subnet-file',
          subnetFile,
          '--iface',
          'eth0',
          '--vxlan-mode',
          mode,
        ]);
        await weftd.waitForLog('ready');
        const [pod] = cluster.addPods(node, subnetFile, 1);
        members.push({ node, mode, weftd, pod, env: subnetFile });
        const e = env(subnetFile);
        expect(e.FLANNEL_NETWORK).toBeUndefined();
        expect(e.FLANNEL_IPV6_NETWORK).toBe('fd00:10:244::/48');
        expect(e.FLANNEL_MTU).toBe('1430');
        expect(pod.ip).toBe(pod.ip6);
        expect(
          (await ipJson(node, ['ip', '-j', 'link', 'show'])).map((l) => l.ifname),
        ).not.toContain('flannel.1');
      }
      const { values } = await new EmbeddedStore(store).listSubnets();
      expect(values.length).toBe(MODES.length);
      for (const v of values) {
        expect(v.key).toMatch(/^0\.0\.0\.0-0&fd00:10:244:[0-9a-f]+::-64$/);
        expect(v.value).toMatch(
          /^\{"PublicIP":"0\.0\.0\.0","PublicIPv6":"2001:2::1\d","BackendType":"vxlan","BackendV6Data":\{"VNI":1,"VtepMAC":"[0-9a-f:]{17}"\}\}$/,
        );
      }
      // flanneld reads each as an IPv6 lease with its VTEP, and would write back the same bytes.
      const decoded = await flannelDecodeLeases(values);
      for (const [i, d] of decoded.entries()) {
        expect(d.ok, d.error).toBe(true);
        expect(d.subnet).toBe('0.0.0.0/0');
        expect(d.vxlan6Error).toBeUndefined();
        expect(d.key).toBe(values[i].key);
        expect(d.value).toBe(values[i].value);
      }
      await pingMatrix(
        cluster,
        members.map((m) => m.pod),
        [6],
      );
      await transfers(members, [6]);
    } finally {
      for (const m of members) await m.weftd.stop().catch(() => undefined);
      cluster.delete();
      dir.remove();
    }
  }, 240_000);

  it("host-gw dual-stack: IPv6 routes via PublicIPv6; --ip-masq for IPv6 as flannel's ip6tables rules, then as its ip6 nftables table, masquerading for real; a blackhole route for the IPv6 subnet", async () => {
    const cluster = new Cluster(TAG, { underlay: 'dual' });
    const dir = tempDir('weft-dualgw-');
    const daemons: RunningWeftd[] = [];
    try {
      const store = join(dir.path, 'subnets.json');
      const config = (nft: boolean) =>
        `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", ${nft ? '"EnableNFTables": true, ' : ''}"Backend": {"Type": "host-gw"}}`;
      await new EmbeddedStore(store).putConfig(config(false));
      const [n1, n2, n3] = [cluster.addNode(), cluster.addNode(), cluster.addNode()];
      const start = async (n: ClusterNode, flags: string[]) => {
        const d = startWeftd(n.ns, [
          '--store-path',
          store,
          '--subnet-file',
          join(dir.path, `${n.name}.env`),
          '--iface',
          'eth0',
          ...flags,
        ]);
        daemons.push(d);
        await d.waitForLog('ready');
        return d;
      };
      const masqFlags = ['--ip-masq', '--iptables-resync', '1'];
      let d1 = await start(n1, masqFlags);
      await start(n2, []);
      // A blackhole route for a node whose pods have no bridge (as flannel's AddBlackholeV6Route).
      await start(n3, ['--ip-blackhole-route']);
      const e1 = env(join(dir.path, 'n1.env'));
      const e2 = env(join(dir.path, 'n2.env'));
      const e3 = env(join(dir.path, 'n3.env'));
      expect(e1.FLANNEL_MTU).toBe('1500');
      const pod6 = e1.FLANNEL_IPV6_SUBNET.replace('::1/64', '::/64');
      const sub6 = (e: Record<string, string>) => e.FLANNEL_IPV6_SUBNET.replace('::1/64', '::/64');
      expect(await ipJson(n1, ['ip', '-j', '-6', 'route', 'show', sub6(e2)])).toEqual([
        expect.objectContaining({ gateway: n2.ip6, dev: 'eth0' }),
      ]);
      expect(
        (await ipJson(n3, ['ip', '-j', '-6', 'route', 'show', 'type', 'blackhole'])).map(
          (r) => r.dst,
        ),
      ).toEqual([sub6(e3)]);
      const c = '-m comment --comment "flanneld masq"';
      const net6 = 'fd00:10:244::/48';
      // flannel's masqIP6Rules: its IPv4 rules with IPv6 networks and ff00::/8 for multicast.
      const expected = [
        '-N FLANNEL-POSTRTG',
        `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG -s ${pod6} -d ${net6} ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG -s ${net6} -d ${pod6} ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG ! -s ${net6} -d ${pod6} ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG -s ${net6} ! -d ff00::/8 ${c} -j MASQUERADE --random-fully`,
        `-A FLANNEL-POSTRTG ! -s ${net6} -d ${net6} ${c} -j MASQUERADE --random-fully`,
      ];
      const rules6 = async (table: string, chain: string) =>
        (await n1.ns.exec(['ip6tables', '-t', table, '-S', chain])).stdout.trim().split('\n');
      expect(await rules6('nat', 'FLANNEL-POSTRTG')).toEqual(expected);
      expect(await rules6('nat', 'POSTROUTING')).toContain(
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      );
      expect(await rules6('filter', 'FLANNEL-FWD')).toEqual([
        '-N FLANNEL-FWD',
        `-A FLANNEL-FWD -s ${net6} -m comment --comment "flanneld forward" -j ACCEPT`,
        `-A FLANNEL-FWD -d ${net6} -m comment --comment "flanneld forward" -j ACCEPT`,
      ]);
      // The IPv4 rules are there too, each family in its own tool.
      expect((await n1.ns.exec(['iptables', '-t', 'nat', '-S', 'FLANNEL-POSTRTG'])).stdout).toMatch(
        /-s 10\.244\.0\.0\/16 ! -d 224\.0\.0\.0\/4/,
      );
      const [p1] = cluster.addPods(n1, join(dir.path, 'n1.env'), 1);
      const [p2] = cluster.addPods(n2, join(dir.path, 'n2.env'), 1);
      await waitFor(() => cluster.reaches(p1, p2, 1, 6), 'pod to pod over IPv6 (host-gw)');
      await waitFor(() => cluster.reaches(p2, p1, 1, 6), 'and back');
      await waitFor(() => cluster.reaches(p1, p2, 1, 4), 'pod to pod over IPv4 (host-gw)');
      // Out of the cluster network: the switch (2001:2::1) has no route back to pods, so only a
      // masqueraded ping returns; with FLANNEL_IPMASQ=true the CNI plugin leaves it to weftd's rules.
      expect(e1.FLANNEL_IPMASQ).toBe('true');
      expect((await n1.ns.exec(['ip6tables', '-t', 'nat', '-S'])).stdout).not.toMatch(/CNI-/);
      const outside = ['ping', '-6', '-c', '1', '-W', '2', '2001:2::1'];
      await p1.ns.exec(outside);
      // A rule deleted by hand comes back within --iptables-resync.
      await n1.ns.exec([
        'ip6tables',
        '-t',
        'nat',
        '-D',
        'FLANNEL-POSTRTG',
        ...`-s ${net6} ! -d ff00::/8 -m comment --comment`.split(' '),
        'flanneld masq',
        '-j',
        'MASQUERADE',
        '--random-fully',
      ]);
      await waitFor(
        async () =>
          JSON.stringify(await rules6('nat', 'FLANNEL-POSTRTG')) === JSON.stringify(expected),
        'the IPv6 masquerade rules put back',
        { timeoutMs: 3000 },
      );

      // EnableNFTables: flannel's ip6 flannel-ipv6 table instead; the ip6tables chains go.
      await d1.stop();
      await new EmbeddedStore(store).putConfig(config(true));
      d1 = await start(n1, masqFlags);
      expect((await n1.ns.exec(['ip6tables', '-t', 'nat', '-S'])).stdout).not.toMatch(/FLANNEL/);
      const chain = async (name: string) =>
        (await n1.ns.exec(['nft', 'list', 'chain', 'ip6', 'flannel-ipv6', name])).stdout
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => /(return|accept|masquerade.*)$/.test(l));
      const postrtg = [
        'meta mark 0x00004000 return',
        `ip6 saddr ${pod6} ip6 daddr ${net6} return`,
        `ip6 saddr ${net6} ip6 daddr ${pod6} return`,
        `ip6 saddr != ${pod6} ip6 daddr ${net6} return`,
        `ip6 saddr ${net6} ip6 daddr != ff00::/8 masquerade fully-random`,
        `ip6 saddr != ${net6} ip6 daddr ${net6} masquerade fully-random`,
      ];
      expect(await chain('postrtg')).toEqual(postrtg);
      expect(await chain('forward')).toEqual([
        `ip6 saddr ${net6} accept`,
        `ip6 daddr ${net6} accept`,
      ]);
      await p1.ns.exec(outside);
      await n1.ns.exec(['nft', 'flush', 'chain', 'ip6', 'flannel-ipv6', 'postrtg']);
      await waitFor(
        async () => JSON.stringify(await chain('postrtg')) === JSON.stringify(postrtg),
        'the ip6 nftables rules put back',
        { timeoutMs: 3000 },
      );
      await d1.waitForLog('some traffic rules were missing; put back');
      await p1.ns.exec(outside);
    } finally {
      for (const d of daemons) await d.stop().catch(() => undefined);
      cluster.delete();
      dir.remove();
    }
  }, 120_000);

  it('refuses clearly: IPv6 enabled without an IPv6 underlay address; the udp backend with IPv6 (nothing leased either way)', async () => {
    const cluster = new Cluster(TAG);
    const dir = tempDir('weft-dualno-');
    try {
      const store = join(dir.path, 'subnets.json');
      const n1 = cluster.addNode();
      const run = async (config: string, flags: string[]) => {
        await new EmbeddedStore(store).putConfig(config);
        const d = startWeftd(n1.ns, [
          '--store-path',
          store,
          '--subnet-file',
          join(dir.path, 'n1.env'),
          ...flags,
        ]);
        expect(await d.exited).toBe(1);
        expect((await new EmbeddedStore(store).listSubnets()).values).toEqual([]);
        return d.stderr();
      };
      // eth0 has IPv4 and only its link-local IPv6 address.
      expect(await run(DUAL_CONFIG, ['--iface', 'eth0'])).toMatch(
        /^weftd: ERR_WEFTD_IFACE: no interface matches the interfaces and regexes given \(--iface eth0: eth0 has no global IPv6 address \(only the link-local fe80:[0-9a-f:]+\)\): the network config enables IPv6 \(EnableIPv6\), so the underlay interface needs a global IPv6 address: add one, or pick an interface that has one \(--iface\); interfaces here: lo \[127\.0\.0\.1 ::1\], eth0 \[198\.18\.0\.11 fe80:[0-9a-f:]+\]\n$/,
      );
      // --public-ipv6 names what other nodes are told; the interface still needs one (as flannel).
      expect(await run(V6_CONFIG, ['--iface', 'eth0', '--public-ipv6', '2001:2::99'])).toMatch(
        /ERR_WEFTD_IFACE: .*eth0 has no global IPv6 address/,
      );
      // No interface flags, IPv6-only: the IPv6 default route's interface, and there is none.
      expect(await run(V6_CONFIG, [])).toBe(
        'weftd: ERR_WEFTD_IFACE: no IPv6 default route to find the underlay interface by: pass --iface (or --iface-regex, --iface-can-reach)\n',
      );
      expect(await run(DUAL_CONFIG.replace('"vxlan"', '"udp"'), ['--iface', 'eth0'])).toBe(
        'weftd: ERR_WEFTD_BACKEND: the udp backend carries IPv4 only, as flannel\'s does: set "EnableIPv6": false in the network config, or use the vxlan or host-gw backend for IPv6\n',
      );
      expect(await run(DUAL_CONFIG, ['--iface', 'eth0', '--backend-type', 'udp'])).toMatch(
        /ERR_WEFTD_BACKEND: the udp backend carries IPv4 only/,
      );
      expect(
        await run(DUAL_CONFIG.replace('"Type": "vxlan"', '"Type": "wireguard", "Mode": "auto"'), [
          '--iface',
          'eth0',
        ]),
      ).toMatch(
        /ERR_WEFTD_BACKEND: Backend\.Mode auto puts both families in one flannel-wg device, which weftd does not build: with IPv6 enabled use "Mode": "separate"/,
      );
    } finally {
      cluster.delete();
      dir.remove();
    }
  }, 60_000);

  it('finds the IPv6 underlay as flanneld does: by --iface name or IPv6 address, --iface-regex, --iface-can-reach, the ::/0 route; --public-ipv6 is what the lease says; a tentative address is waited for', async () => {
    const cluster = new Cluster(TAG, { underlay: 'dual' });
    const dir = tempDir('weft-dualif-');
    try {
      const store = join(dir.path, 'subnets.json');
      const n1 = cluster.addNode();
      // A second interface, with addresses of both families, that must not be picked.
      await n1.ns.sh(
        'ip link add dummy0 type veth peer name dummy1 && ip addr add 192.0.2.1/24 dev dummy0 && ip addr add 2001:db8:9::1/64 dev dummy0 nodad && ip link set dummy1 up && ip link set dummy0 up',
      );
      const started = async (config: string, flags: string[]) => {
        await new EmbeddedStore(store).putConfig(config);
        const d = startWeftd(n1.ns, [
          '--store-path',
          store,
          '--subnet-file',
          join(dir.path, 'n1.env'),
          ...flags,
        ]);
        try {
          const l = await d.waitForLog('starting');
          return { iface: l.iface, publicIp: l.publicIp, publicIpv6: l.publicIpv6, d };
        } finally {
          await d.stop();
        }
      };
      const pick = async (config: string, flags: string[]) => {
        const { d: _, ...rest } = await started(config, flags);
        return rest;
      };
      expect(await pick(DUAL_CONFIG, ['--iface', 'eth0'])).toEqual({
        iface: 'eth0',
        publicIp: '198.18.0.11',
        publicIpv6: '2001:2::11',
      });
      expect(await pick(DUAL_CONFIG, ['--iface', '2001:2:0::11'])).toEqual({
        iface: 'eth0',
        publicIp: '198.18.0.11',
        publicIpv6: '2001:2::11',
      });
      expect(await pick(V6_CONFIG, ['--iface-regex', '^2001:db8:9:'])).toEqual({
        iface: 'dummy0',
        publicIpv6: '2001:db8:9::1',
      });
      expect(await pick(V6_CONFIG, ['--iface-can-reach', '2001:2::1'])).toEqual({
        iface: 'eth0',
        publicIpv6: '2001:2::11',
      });
      await n1.ns.exec(['ip', '-6', 'route', 'add', 'default', 'via', '2001:2::1', 'dev', 'eth0']);
      expect(await pick(V6_CONFIG, [])).toEqual({ iface: 'eth0', publicIpv6: '2001:2::11' });
      expect(await pick(V6_CONFIG, ['--public-ipv6', '2001:db8:9::1'])).toEqual({
        iface: 'dummy0',
        publicIpv6: '2001:db8:9::1',
      });
      expect(await pick(DUAL_CONFIG, ['--iface', 'eth0', '--public-ipv6', '2001:db8::5'])).toEqual({
        iface: 'eth0',
        publicIp: '198.18.0.11',
        publicIpv6: '2001:db8::5',
      });
      // An address still in duplicate address detection: waited for, then used.
      await n1.ns.sh('ip addr del 2001:2::11/64 dev eth0 && ip addr add 2001:2::11/64 dev eth0');
      const d = startWeftd(n1.ns, [
        '--store-path',
        store,
        '--subnet-file',
        join(dir.path, 'n1.env'),
        '--iface',
        'eth0',
      ]);
      try {
        await d.waitForLog(/^waiting for 2001:2::11 to finish duplicate address detection$/);
        await d.waitForLog('ready');
      } finally {
        await d.stop();
      }
    } finally {
      cluster.delete();
      dir.remove();
    }
  }, 60_000);

  it('vxlan DirectRouting, dual-stack: nodes on the same link get IPv4 and IPv6 routes via their public addresses, no tunnel entries (kernel), and reach each other', async () => {
    const cluster = new Cluster(TAG, { underlay: 'dual' });
    const dir = tempDir('weft-dualdr-');
    const daemons: RunningWeftd[] = [];
    try {
      const store = join(dir.path, 'subnets.json');
      await new EmbeddedStore(store).putConfig(
        DUAL_CONFIG.replace('"Type": "vxlan"', '"Type": "vxlan", "DirectRouting": true'),
      );
      const nodes = [cluster.addNode(), cluster.addNode()];
      for (const [i, n] of nodes.entries()) {
        const d = startWeftd(n.ns, [
          '--store-path',
          store,
          '--subnet-file',
          join(dir.path, `${n.name}.env`),
          '--iface',
          'eth0',
          '--vxlan-mode',
          i === 0 ? 'kernel' : 'userspace',
        ]);
        daemons.push(d);
        await d.waitForLog('ready');
        cluster.addPods(n, join(dir.path, `${n.name}.env`), 1);
      }
      const [n1, n2] = nodes;
      const sub6 = (n: ClusterNode) =>
        env(join(dir.path, `${n.name}.env`)).FLANNEL_IPV6_SUBNET.replace('::1/64', '::/64');
      for (const [from, to] of [
        [n1, n2],
        [n2, n1],
      ])
        await waitFor(
          async () =>
            (await ipJson(from, ['ip', '-j', '-6', 'route', 'show', sub6(to)])).some(
              (r) => r.gateway === to.ip6 && r.dev === 'eth0',
            ),
          `the direct IPv6 route on ${from.name}`,
        );
      expect(
        (await ipJson(n1, ['ip', '-j', '-6', 'route', 'show', 'dev', 'flannel-v6.1'])).filter(
          (r) => r.gateway,
        ),
      ).toEqual([]);
      expect(await ipJson(n1, ['ip', '-j', '-6', 'neigh', 'show', 'dev', 'flannel-v6.1'])).toEqual(
        [],
      );
      await pingMatrix(cluster, cluster.pods, [4, 6]);
    } finally {
      for (const d of daemons) await d.stop().catch(() => undefined);
      cluster.delete();
      dir.remove();
    }
  }, 60_000);

  it.skipIf(!haveTools('the dual-stack wireguard cluster', 'wireguard-go', 'wg', 'nsenter'))(
    "wireguard, dual-stack (flannel's Mode separate): flannel-wg and flannel-wg-v6 on two weftd nodes and on a flanneld-made peer (wireguard-go, its lease from flannel's Go types); pods reach each other in both families",
    async () => {
      const cluster = new Cluster(TAG, { underlay: 'dual' });
      const dir = tempDir('weft-dualwg-');
      const daemons: RunningWeftd[] = [];
      const wgos: WireguardGo[] = [];
      try {
        const store = join(dir.path, 'subnets.json');
        const embedded = new EmbeddedStore(store);
        await embedded.putConfig(DUAL_CONFIG.replace('"Type": "vxlan"', '"Type": "wireguard"'));
        const [n1, n2, f] = [cluster.addNode(), cluster.addNode(), cluster.addNode('flanneld')];
        // The flanneld peer: its lease as flannel's wireguard newSubnetAttrs writes it (one key, two ports).
        const fKey = await wgKeyPair();
        const [written] = await flannelEncodeLeases([
          {
            subnet: '10.244.200.0/24',
            subnet6: 'fd00:10:244:c8::/64',
            publicIP: f.ip,
            publicIPv6: f.ip6,
            backendType: 'wireguard',
            publicKey: fKey.publicKey,
            port: 51820,
            port6: 51821,
          },
        ]);
        await embedded.createSubnet(written.key, written.value, 3600);
        for (const [name, port, address, network] of [
          ['flannel-wg', 51820, '10.244.200.0', '10.244.0.0/16'],
          ['flannel-wg-v6', 51821, 'fd00:10:244:c8::', 'fd00:10:244::/48'],
        ] as const)
          wgos.push(
            await startWireguardGo(f.ns, {
              name,
              privateKey: fKey.privateKey,
              listenPort: port,
              address,
              network,
            }),
          );
        const members: ClusterNode[] = [n1, n2];
        for (const n of members) {
          const d = startWeftd(
            n.ns,
            [
              '--store-path',
              store,
              '--subnet-file',
              join(dir.path, `${n.name}.env`),
              '--iface',
              'eth0',
            ],
            { env: { WIREGUARD_KEY_FILE: join(dir.path, `${n.name}.wgkey`) } },
          );
          daemons.push(d);
          await d.waitForLog('ready');
          expect(env(join(dir.path, `${n.name}.env`)).FLANNEL_MTU).toBe('1420');
          for (const dev of ['flannel-wg', 'flannel-wg-v6'])
            expect((await ipJson(n, ['ip', '-j', 'link', 'show', dev]))[0].mtu).toBe(1420);
        }
        // Each weftd lease as flannel reads it: one key, BackendData on 51820, BackendV6Data on 51821.
        const { values } = await embedded.listSubnets();
        const mine = values.filter((v) => v.key !== written.key);
        const decoded = await flannelDecodeLeases(mine);
        for (const [i, d] of decoded.entries()) {
          expect(d.ok, d.error).toBe(true);
          expect(d.wireguardError).toBeUndefined();
          expect(d.wireguard6Error).toBeUndefined();
          expect(d.wireguard!.Port).toBe(51820);
          expect(d.wireguard6).toEqual({ PublicKey: d.wireguard!.PublicKey, Port: 51821 });
          expect(d.value).toBe(mine[i].value);
          // flannel's addPeer on the flanneld node, per family, from this lease.
          const sn = d.subnet!;
          const sn6 = d.subnet6!;
          await wgos[0].wg([
            'set',
            'flannel-wg',
            'peer',
            d.wireguard!.PublicKey,
            'endpoint',
            `${d.publicIP}:51820`,
            'allowed-ips',
            sn,
          ]);
          await wgos[1].wg([
            'set',
            'flannel-wg-v6',
            'peer',
            d.wireguard6!.PublicKey,
            'endpoint',
            `[${d.publicIPv6}]:51821`,
            'allowed-ips',
            sn6,
          ]);
        }
        const fEnv = join(dir.path, 'flanneld.env');
        await f.ns.sh(
          `printf 'FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.200.1/24\\nFLANNEL_IPV6_NETWORK=fd00:10:244::/48\\nFLANNEL_IPV6_SUBNET=fd00:10:244:c8::1/64\\nFLANNEL_MTU=1420\\nFLANNEL_IPMASQ=false\\n' > ${fEnv}`,
        );
        for (const n of members) cluster.addPods(n, join(dir.path, `${n.name}.env`), 1);
        cluster.addPods(f, fEnv, 1);
        await pingMatrix(cluster, cluster.pods, [4, 6]);
        // The IPv6 peers were reached over the IPv6 underlay, on flannel-wg-v6's port.
        const peers6 = (await wgos[1].dump()).slice(1);
        expect(peers6.map((r) => r[2]).sort()).toEqual([`[${n1.ip6}]:51821`, `[${n2.ip6}]:51821`]);
        expect(peers6.every((r) => Number(r[4]) > 0)).toBe(true);
      } finally {
        for (const d of daemons) await d.stop().catch(() => undefined);
        for (const w of wgos) await w.stop().catch(() => undefined);
        cluster.delete();
        dir.remove();
      }
    },
    90_000,
  );
});
