import { mkdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedStore, SubnetManager, silentLogger, vxlanLeaseData } from '@weft/subnet';
import {
  Cluster,
  type ClusterNode,
  CniCallError,
  CniRuntime,
  createNetns,
  haveTools,
  privileged,
  type RunningWeftd,
  startWeftd,
  sweepNetns,
  tempDir,
  WEFTD_CLI,
} from '@weft/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckResult, DoctorReport, PeerRow } from '../src/index.js';

/**
 * `weftd doctor` against a real cluster: six nodes on one underlay switch (n1 the kernel's VXLAN,
 * n2 weft's userspace VTEP, n3 and n4 flannel's udp backend, n5 and n6 wireguard), a weftd and a
 * pod (made by the CNI plugin) on each. Every fault is made for real on that one cluster, seen on the right line, and
 * gone from it once the fault is undone.
 */
const TAG = 'doctor';

interface Node {
  node: ClusterNode;
  args: string[];
  env: Record<string, string>;
  dir: string;
  weftd: RunningWeftd;
  confDir: string;
  binDirs: string[];
}

let cluster: Cluster;
let work: ReturnType<typeof tempDir>;
let storePath: string;
const nodes: Node[] = [];

const PLAN = [
  ['--vxlan-mode', 'kernel'],
  ['--vxlan-mode', 'userspace'],
  ['--backend-type', 'udp'],
  ['--backend-type', 'udp'],
  ['--backend-type', 'wireguard'],
  ['--backend-type', 'wireguard'],
];

function start(n: Omit<Node, 'weftd'>): RunningWeftd {
  return startWeftd(n.node.ns, n.args, { env: n.env });
}

interface Run {
  status: number;
  report: DoctorReport;
}

/** `weftd doctor --json` in the node's namespace with its weftd's flags; `wrap` prefixes argv. */
async function doctor(
  n: Node,
  options: { extra?: string[]; wrap?: string[]; binDirs?: string[] } = {},
): Promise<Run> {
  const argv = [
    ...(options.wrap ?? []),
    process.execPath,
    WEFTD_CLI,
    'doctor',
    ...n.args,
    '--cni-conf-dir',
    n.confDir,
    '--cni-bin-dir',
    (options.binDirs ?? n.binDirs).join(':'),
    '--json',
    ...(options.extra ?? []),
  ];
  try {
    const { stdout } = await n.node.ns.exec(argv, { timeoutMs: 90_000 });
    return { status: 0, report: JSON.parse(stdout) };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (e.code === 1 && e.stdout) return { status: 1, report: JSON.parse(e.stdout) };
    throw new Error(`weftd doctor failed (${e.code}): ${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

const check = (r: Run, id: string): CheckResult => {
  const c = r.report.checks.find((x) => x.id === id);
  if (!c) throw new Error(`no ${id} check in ${JSON.stringify(r.report.checks.map((x) => x.id))}`);
  return c;
};
const row = (r: Run, n: Node): PeerRow => {
  const p = r.report.peers.find((x) => x.publicIp === n.node.ip);
  if (!p) throw new Error(`no row for ${n.node.ip}: ${JSON.stringify(r.report.peers)}`);
  return p;
};
/** Every check and every cell ✓ (a WireGuard overlay: not probed), exit status 0. */
function expectHealthy(r: Run): void {
  const notOk = r.report.checks.filter((c) => c.status !== 'ok');
  expect(notOk, JSON.stringify(notOk)).toEqual([]);
  const probed = r.report.node.backend !== 'wireguard';
  for (const p of r.report.peers) {
    expect(p.underlay.status, JSON.stringify(p)).toBe('ok');
    for (const c of [p.overlay, p.pathMtu])
      expect(c.status, JSON.stringify(p)).toBe(probed ? 'ok' : 'skip');
  }
  expect(r.status).toBe(0);
  expect(r.report.ok).toBe(true);
}
/** The one line that went ✗ (with a fix), and every other check still ✓. */
function expectOnly(r: Run, id: string): CheckResult {
  const c = check(r, id);
  expect(c.status, JSON.stringify(c)).toBe('fail');
  expect(c.fix).toBeTruthy();
  expect(c.explains).toBeTruthy();
  const others = r.report.checks.filter((x) => x.id !== id && x.status !== 'ok');
  expect(others, JSON.stringify(others)).toEqual([]);
  expect(r.status).toBe(1);
  return c;
}

describe.skipIf(
  !privileged('weftd doctor tests') ||
    !haveTools(
      'weftd doctor tests',
      'iptables',
      'iptables-save',
      'nft',
      'ethtool',
      'unshare',
      'setpriv',
    ),
)('weftd doctor (root, namespaces)', () => {
  beforeAll(async () => {
    sweepNetns();
    work = tempDir('weft-doctor-');
    cluster = new Cluster(TAG);
    storePath = join(work.path, 'subnets.json');
    await new EmbeddedStore(storePath).putConfig(
      '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}',
    );
    for (const flags of PLAN) {
      const node = cluster.addNode();
      const dir = join(work.path, node.name);
      mkdirSync(dir);
      const subnetEnv = join(dir, 'subnet.env');
      const args = [
        '--store-path',
        storePath,
        '--subnet-file',
        subnetEnv,
        '--iface',
        'eth0',
        '--ip-masq',
        '--healthz-ip',
        '127.0.0.1',
        '--healthz-port',
        '9471',
        // The faults below are undone by hand: weftd's periodic repair must not race them.
        '--resync',
        '3600',
        '--iptables-resync',
        '3600',
        ...flags,
      ];
      const { confDir, binDirs } = cluster.cniFiles(node, subnetEnv);
      // flannel keeps the WireGuard key in /run/flannel/wgkey: each node its own here.
      const env = { WIREGUARD_KEY_FILE: join(dir, 'wgkey') };
      const n = { node, args, env, dir, confDir, binDirs };
      const weftd = start(n);
      nodes.push({ ...n, weftd });
      await weftd.waitForLog('ready');
      cluster.addPods(node, subnetEnv, 1);
    }
  }, 120_000);

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.weftd.stop().catch(() => undefined)));
    cluster?.delete();
    work?.remove();
    sweepNetns(TAG);
  });

  it('a healthy cluster: every check ✓ on every node; kernel-VXLAN, userspace-VXLAN and udp peers all answer, WireGuard peers on the underlay', async () => {
    const runs = await Promise.all(nodes.map((n) => doctor(n)));
    for (const r of runs) expectHealthy(r);
    const [n1, n2, n3, n4, n5, n6] = nodes;
    // n1 (kernel) probes n2 (userspace) and n2 probes n1; n3 and n4 (udp) probe each other.
    expect(runs[0].report.peers.map((p) => p.publicIp)).toEqual([n2.node.ip]);
    expect(runs[1].report.peers.map((p) => p.publicIp)).toEqual([n1.node.ip]);
    expect(runs[2].report.peers.map((p) => p.publicIp)).toEqual([n4.node.ip]);
    expect(runs[3].report.peers.map((p) => p.publicIp)).toEqual([n3.node.ip]);
    // WireGuard peers: the underlay only (it answers nothing unauthenticated), said so.
    expect(runs[4].report.peers.map((p) => p.publicIp)).toEqual([n6.node.ip]);
    expect(runs[5].report.peers.map((p) => p.publicIp)).toEqual([n5.node.ip]);
    expect(runs[4].report.probe?.method).toMatch(/WireGuard answers only authenticated packets/);
    expect(check(runs[4], 'wireguard-mode').title).toMatch(
      /weft's userspace WireGuard; flannel-wg is weft's userspace WireGuard$/,
    );
    expect(check(runs[4], 'mtu').title).toMatch(
      /^MTU: eth0 1500 - 80 = flannel-wg 1420 = FLANNEL_MTU/,
    );
    expect(check(runs[4], 'firewall-port').title).toMatch(/^UDP 51820 from and to 1 peer/);
    for (const r of runs.slice(0, 4))
      for (const p of r.report.peers) {
        expect(p.overlay.rttMs).toBeGreaterThan(0);
        expect(p.pathMtu.bytes).toBe(p.pathMtu.expected);
      }
    expect(runs[0].report.peers[0].pathMtu.bytes).toBe(1450);
    expect(runs[2].report.peers[0].pathMtu.bytes).toBe(1472);
    // Beside a running dataplane the answers come back through it.
    expect(runs[0].report.probe?.method).toMatch(/through flannel\.1 as ECONNREFUSED/);
    expect(runs[2].report.probe?.method).toMatch(/through flannel0 as ECONNREFUSED/);
    expect(runs[0].report.notPeers.map((p) => p.publicIp).sort()).toEqual(
      [n3.node.ip, n4.node.ip, n5.node.ip, n6.node.ip].sort(),
    );
    expect(check(runs[0], 'vxlan-mode').title).toMatch(/flannel\.1 is the kernel's VXLAN/);
    expect(check(runs[1], 'vxlan-mode').title).toMatch(/flannel\.1 is weft's userspace VTEP/);
    expect(check(runs[0], 'kernel-state').title).toMatch(
      /route, neighbor and FDB entry for each of 1 peer/,
    );
  }, 60_000);

  it('the text report: one line per check, and for a ✗ its fix; exit status 1', async () => {
    const n = nodes[0];
    await n.node.ns.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=0']);
    try {
      const out = await n.node.ns
        .exec([
          process.execPath,
          WEFTD_CLI,
          'doctor',
          ...n.args,
          '--cni-conf-dir',
          n.confDir,
          '--cni-bin-dir',
          n.binDirs.join(':'),
        ])
        .then(
          () => ({ code: 0, stdout: '' }),
          (e: { code: number; stdout: string }) => e,
        );
      expect(out.code).toBe(1);
      const lines = out.stdout.split('\n');
      const bad = lines.findIndex((l) => l.startsWith('✗ net.ipv4.ip_forward = 0'));
      expect(bad).toBeGreaterThan(0);
      expect(lines[bad + 1]).toMatch(/^ {4}fix: sysctl -w net\.ipv4\.ip_forward=1/);
      expect(lines[bad + 2]).toMatch(/^ {4}explains: /);
      expect(lines.filter((l) => /^[✓!✗] /.test(l)).length).toBeGreaterThan(15);
      expect(out.stdout).toMatch(/^ {2}peer +public IP +underlay +overlay:8472 +path MTU +RTT$/m);
      expect(out.stdout).toMatch(/1 problem found\n$/);
    } finally {
      await n.node.ns.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    }
  }, 60_000);

  it('set-up mistakes, each on its own line: no network config, a subnet.env for another --ip-masq, the plugin reading another path, a broken configuration sorting first, cni0 with an old subnet', async () => {
    const n = nodes[1];
    const empty = join(work.path, 'empty-store.json');
    const noConfig = await doctor(n, { extra: ['--store-path', empty] });
    expect(check(noConfig, 'config')).toMatchObject({ status: 'fail' });
    expect(check(noConfig, 'config').title).toBe(`no network config in embedded ${empty}`);
    expect(check(noConfig, 'config').fix).toMatch(/^write it: weftd put-config /);
    expect(noConfig.status).toBe(1);
    const t0 = Date.now();
    const noEtcd = await doctor(n, { extra: ['--etcd-endpoints', 'http://127.0.0.1:9'] });
    expect(check(noEtcd, 'config').title).toMatch(/^the store cannot be reached: /);
    expect(Date.now() - t0).toBeLessThan(20_000);

    // The daemon's flags as given: without --ip-masq, so subnet.env (written with it) disagrees.
    const argsWithoutMasq = n.args.filter((a) => a !== '--ip-masq');
    const masq = await doctor({ ...n, args: argsWithoutMasq });
    expect(check(masq, 'subnet-env').title).toMatch(
      /does not match this node: FLANNEL_IPMASQ is true but weftd runs without --ip-masq$/,
    );

    const elsewhere = await doctor(n, { extra: ['--subnet-file', '/run/flannel/subnet.env'] });
    expect(check(elsewhere, 'subnet-env-path').title).toBe(
      `the CNI plugin reads ${join(n.dir, 'subnet.env')}, but weftd writes /run/flannel/subnet.env (--subnet-file)`,
    );

    const broken = join(n.confDir, '00-leftover.conflist');
    writeFileSync(broken, '{"name": "old", "plugins": [');
    try {
      const r = await doctor(n);
      const c = expectOnly(r, 'cni-conf');
      expect(c.title).toMatch(
        /^.*00-leftover\.conflist \(the runtime's first configuration\) does not parse: /,
      );
    } finally {
      unlinkSync(broken);
    }

    const gateway = JSON.parse(
      (await n.node.ns.exec(['ip', '-j', '-4', 'addr', 'show', 'cni0'])).stdout,
    )[0].addr_info[0] as { local: string; prefixlen: number };
    const right = `${gateway.local}/${gateway.prefixlen}`;
    await n.node.ns.sh(`ip addr del ${right} dev cni0\nip addr add 10.244.254.1/24 dev cni0`);
    try {
      const c = expectOnly(await doctor(n), 'cni0');
      expect(c.title).toMatch(
        new RegExp(`^cni0 has 10\\.244\\.254\\.1/24, not ${right.replace(/\./g, '\\.')}`),
      );
      expect(c.explains).toContain('already has an IP address different from');
    } finally {
      await n.node.ns.sh(`ip addr del 10.244.254.1/24 dev cni0\nip addr add ${right} dev cni0`);
    }
    expectHealthy(await doctor(n));
  }, 90_000);

  it('without CAP_NET_ADMIN: ✗ on its line, and the firewall said unread rather than clean', async () => {
    const n1 = nodes[0];
    const r = await doctor(n1, {
      wrap: ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin'],
    });
    const c = check(r, 'cap-net-admin');
    expect(c.status).toBe('fail');
    expect(c.explains).toMatch(/Permissions/);
    const fw = check(r, 'firewall');
    expect(fw.status).toBe('warn');
    expect(fw.title).toMatch(/^the firewall was not read: /);
    expect(fw.title).toMatch(/iptables-save failed: .*; |; iptables-save failed: /);
    expect(fw.title).toMatch(/nft failed: /);
    expect(r.report.checks.filter((x) => x.status !== 'ok').map((x) => x.id)).toEqual([
      'cap-net-admin',
      'firewall',
    ]);
    expect(r.status).toBe(1);
    expect(check(await doctor(n1), 'cap-net-admin').status).toBe('ok');
  }, 60_000);

  it('ip_forward 0: ✗ on its line, ✓ once it is 1 again', async () => {
    const n = nodes[1];
    await n.node.ns.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=0']);
    try {
      const c = expectOnly(await doctor(n), 'ip-forward');
      expect(c.title).toMatch(/net\.ipv4\.ip_forward = 0/);
    } finally {
      await n.node.ns.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    }
    expect(check(await doctor(n), 'ip-forward').status).toBe('ok');
  }, 60_000);

  it('/dev/net/tun hidden (a private mount namespace): ✗ on a userspace node, ✓ outside it', async () => {
    const n = nodes[1];
    const hidden = [
      'unshare',
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      'mount -t tmpfs tmpfs /dev/net && exec "$@"',
      'sh',
    ];
    const c = expectOnly(await doctor(n, { wrap: hidden }), 'tun');
    expect(c.title).toMatch(/\/dev\/net\/tun does not exist: weft's userspace VTEP cannot run/);
    expect(c.fix).toMatch(/modprobe tun.*hostPath/);
    expect(c.explains).toMatch(/1267/);
    expect(check(await doctor(n), 'tun').status).toBe('ok');
  }, 60_000);

  it('a missing bridge plugin: ✗ naming it (the error a runtime gets), ✓ once it is back', async () => {
    const n = nodes[0];
    const bin = join(work.path, 'cni-bin');
    mkdirSync(bin, { recursive: true });
    for (const p of ['flannel', 'host-local', 'portmap', 'bridge']) {
      const from = n.binDirs
        .map((d) => join(d, p))
        .find((f) => {
          try {
            readFileSync(f);
            return true;
          } catch {
            return false;
          }
        })!;
      symlinkSync(from, join(bin, p));
    }
    unlinkSync(join(bin, 'bridge'));
    const c = expectOnly(await doctor(n, { binDirs: [bin] }), 'cni-bin');
    expect(c.title).toBe(`"bridge" not found in ${bin}`);
    expect(c.explains).toContain(`failed to find plugin "bridge" in path [${bin}]`);
    // What a runtime with that plugin path meets: the same message, from a real ADD.
    const pod = createNetns(TAG);
    try {
      const list = JSON.parse(readFileSync(join(n.confDir, '10-flannel.conflist'), 'utf8'));
      const runtime = new CniRuntime(n.node.ns, list, [bin]);
      let error: unknown;
      try {
        runtime.add(pod.name, `/run/netns/${pod.name}`);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(CniCallError);
      expect((error as CniCallError).result?.msg).toBe(
        `failed to find plugin "bridge" in path [${bin}]`,
      );
    } finally {
      pod.delete();
    }
    symlinkSync('/usr/lib/cni/bridge', join(bin, 'bridge'));
    expect(check(await doctor(n, { binDirs: [bin] }), 'cni-bin').status).toBe('ok');
    rmSync(bin, { recursive: true });
  }, 60_000);

  it("subnet.env deleted: ✗ with the plugin's own error, ✓ once it is back", async () => {
    const n = nodes[2];
    const path = join(n.dir, 'subnet.env');
    const text = readFileSync(path, 'utf8');
    unlinkSync(path);
    try {
      const c = expectOnly(await doctor(n), 'subnet-env');
      expect(c.title).toBe(
        `failed to load flannel 'subnet.env' file: ${path} does not exist: the node daemon (weftd or flanneld) writes it once it holds a subnet lease: check that it runs on this node and see its log`,
      );
      expect(c.explains).toMatch(/loadFlannelSubnetEnv failed/);
    } finally {
      writeFileSync(path, text);
    }
    expect(check(await doctor(n), 'subnet-env').status).toBe('ok');
  }, 60_000);

  it("a pod MTU larger than the overlay's: ✗ naming the pod's interface, ✓ once it is 1450 again", async () => {
    const n = nodes[0];
    const pod = n.node.pods[0];
    const links = JSON.parse(
      (await n.node.ns.exec(['ip', '-j', 'link', 'show', 'master', 'cni0'])).stdout,
    ) as {
      ifname: string;
    }[];
    const veth = links[0].ifname;
    const setMtu = async (mtu: number) => {
      await n.node.ns.exec(['ip', 'link', 'set', veth, 'mtu', String(mtu)]);
      await pod.ns.exec(['ip', 'link', 'set', 'eth0', 'mtu', String(mtu)]);
    };
    await setMtu(1500);
    try {
      const c = expectOnly(await doctor(n), 'mtu');
      expect(c.title).toContain(`larger than FLANNEL_MTU 1450: ${veth} 1500`);
      expect(c.explains).toMatch(/1011 and 841/);
    } finally {
      await setMtu(1450);
    }
    expect(check(await doctor(n), 'mtu').status).toBe('ok');
  }, 60_000);

  it("an iptables DROP on 8472: ✗ on that node's firewall line, and its row on a peer shows underlay ✓, overlay ✗", async () => {
    const [n1, n2] = nodes;
    const rule = ['INPUT', '-p', 'udp', '--dport', '8472', '-j', 'DROP'];
    await n2.node.ns.exec(['iptables', '-I', ...rule]);
    try {
      const [own, peer] = await Promise.all([doctor(n2), doctor(n1)]);
      const c = check(own, 'firewall-port');
      expect(c.status).toBe('fail');
      expect(c.title).toContain('-A INPUT -p udp -m udp --dport 8472 -j DROP');
      expect(c.title).toContain(`from ${n1.node.ip}: drop by`);
      expect(c.fix).toBeTruthy();
      // The probe from n2 to n1 cannot come back either: its answer is dropped on arrival here.
      expect(own.report.peers[0].overlay.status).toBe('fail');
      const r = row(peer, n2);
      expect(r.underlay.status).toBe('ok');
      expect(r.overlay.status).toBe('fail');
      expect(r.overlay.detail).toBe('no answer');
      expect(r.fix).toMatch(/answers on the underlay but not through UDP 8472/);
      expect(peer.status).toBe(1);
      // n1's own checks are all fine: the fault is on the path, not on n1.
      expect(peer.report.checks.filter((x) => x.status !== 'ok')).toEqual([]);
    } finally {
      await n2.node.ns.exec(['iptables', '-D', ...rule]);
    }
    const [own, peer] = await Promise.all([doctor(n2), doctor(n1)]);
    expectHealthy(own);
    expectHealthy(peer);
  }, 90_000);

  it('nftables: a rule rejecting 8285 and a forward chain with policy drop, each ✗ on its line; iptables FORWARD DROP alone is ✓ (flannel accepts the network)', async () => {
    const [, , n3, n4] = nodes;
    const table = 'weftdoctor';
    const nft = (script: string) => n4.node.ns.exec(['nft', '-f', '-'], { input: script });
    await nft(
      [
        `add table inet ${table}`,
        `add chain inet ${table} in { type filter hook input priority 0 ; policy accept ; }`,
        `add rule inet ${table} in ip saddr ${n3.node.ip} udp dport 8285 reject`,
        `add chain inet ${table} forwarding { type filter hook forward priority 0 ; policy drop ; }`,
        `add rule inet ${table} forwarding ct state established,related accept`,
      ].join('\n'),
    );
    await n4.node.ns.exec(['iptables', '-P', 'FORWARD', 'DROP']);
    try {
      const r = await doctor(n4);
      const port = check(r, 'firewall-port');
      expect(port.status).toBe('fail');
      expect(port.title).toContain(`from ${n3.node.ip}: reject by inet ${table} in: ip saddr`);
      const fwd = check(r, 'firewall-forward');
      expect(fwd.status).toBe('fail');
      expect(fwd.title).toContain(`drop by inet ${table} forwarding (policy drop)`);
      expect(fwd.explains).toMatch(/FORWARD policy to DROP/);
      await n4.node.ns.exec(['nft', 'delete', 'table', 'inet', table]);
      const after = await doctor(n4);
      expectHealthy(after);
      expect(check(after, 'firewall-forward').title).toMatch(/FORWARD lets pod traffic through/);
    } finally {
      await n4.node.ns.exec(['nft', 'delete', 'table', 'inet', table]).catch(() => undefined);
      await n4.node.ns.exec(['iptables', '-P', 'FORWARD', 'ACCEPT']);
    }
  }, 60_000);

  it("--ip-masq with one of flannel's masquerade rules gone: ✗ naming it, ✓ once it is back", async () => {
    const n = nodes[3];
    const save = (await n.node.ns.exec(['iptables-save', '-t', 'nat'])).stdout;
    const line = save.split('\n').find((l) => /^-A FLANNEL-POSTRTG .*-j MASQUERADE/.test(l))!;
    expect(line).toBeTruthy();
    const spec = line
      .replace(/^-A FLANNEL-POSTRTG /, '')
      .match(/"[^"]*"|\S+/g)!
      .map((w) => w.replace(/^"|"$/g, ''));
    await n.node.ns.exec(['iptables', '-t', 'nat', '-D', 'FLANNEL-POSTRTG', ...spec]);
    try {
      const c = expectOnly(await doctor(n), 'masquerade');
      expect(c.title).toMatch(
        /--ip-masq, but 1 masquerade rule missing: -t nat -A FLANNEL-POSTRTG .*-j MASQUERADE/,
      );
    } finally {
      await n.node.ns.exec(['iptables', '-t', 'nat', '-A', 'FLANNEL-POSTRTG', ...spec]);
    }
    expect(check(await doctor(n), 'masquerade').status).toBe('ok');
  }, 60_000);

  it('a stale neighbor MAC for a peer: ✗ naming both MACs, ✓ once it is right', async () => {
    const [n1, n2] = nodes;
    const { leases } = await new SubnetManager(new EmbeddedStore(storePath), {
      logger: silentLogger,
    }).listLeases();
    const lease = leases.find((l) => l.attrs.publicIp === n2.node.ip)!;
    const mac = vxlanLeaseData(lease.attrs)!.vtepMac;
    const vtep = lease.subnet!.replace(/\/\d+$/, '');
    const set = (m: string) =>
      n1.node.ns.exec([
        'ip',
        'neigh',
        'replace',
        vtep,
        'lladdr',
        m,
        'dev',
        'flannel.1',
        'nud',
        'permanent',
      ]);
    await set('02:de:ad:be:ef:01');
    try {
      const c = expectOnly(await doctor(n1), 'kernel-state');
      expect(c.title).toContain(
        `stale neighbor: ${vtep} on flannel.1 has MAC 02:de:ad:be:ef:01, but the lease of ${lease.subnet} (${n2.node.ip}) says ${mac}`,
      );
      expect(c.explains).toMatch(/1795/);
    } finally {
      await set(mac);
    }
    expect(check(await doctor(n1), 'kernel-state').status).toBe('ok');
  }, 60_000);

  it("entries left for a lease that is gone (!), then a second lease on a node's public IP (✗): each on its line, ✓ once removed", async () => {
    const [n1, n2] = nodes;
    // Added by hand: weftd (its resync an hour away) does not see additions.
    await n1.node.ns.sh(
      [
        'ip neigh replace 10.244.251.0 lladdr 02:00:00:00:02:51 dev flannel.1 nud permanent',
        'bridge fdb append 02:00:00:00:02:51 dev flannel.1 dst 198.18.0.251',
        'ip route replace 10.244.251.0/24 via 10.244.251.0 dev flannel.1 onlink',
      ].join('\n'),
    );
    try {
      const r = await doctor(n1);
      const left = check(r, 'kernel-leftovers');
      expect(left.status).toBe('warn');
      expect(left.title).toBe(
        'entries on flannel.1 for no current lease: route 10.244.251.0/24 via 10.244.251.0, neighbor 10.244.251.0 02:00:00:00:02:51, FDB 02:00:00:00:02:51 -> 198.18.0.251',
      );
      expect(r.report.checks.filter((c) => c.status !== 'ok')).toEqual([left]);
      expect(r.status).toBe(0);
    } finally {
      await n1.node.ns.sh(
        [
          'ip route del 10.244.251.0/24 via 10.244.251.0 dev flannel.1 onlink || true',
          'ip neigh del 10.244.251.0 dev flannel.1 || true',
          'bridge fdb del 02:00:00:00:02:51 dev flannel.1 dst 198.18.0.251 || true',
        ].join('\n'),
      );
    }
    expectHealthy(await doctor(n1));

    // A host-gw lease on n2's address: no vxlan node programs it, every doctor names the clash.
    const store = new EmbeddedStore(storePath);
    const key = '10.244.250.0-24';
    await store.createSubnet(
      key,
      JSON.stringify({ PublicIP: n2.node.ip, BackendType: 'host-gw' }),
      0,
    );
    try {
      const dup = expectOnly(await doctor(n1), 'duplicate-public-ip');
      expect(dup.title).toMatch(new RegExp(`^2 leases have public IP ${n2.node.ip}: `));
      expect(dup.title).toContain('10.244.250.0/24');
      expect(dup.explains).toMatch(/Vagrant/);
    } finally {
      await store.deleteSubnet(key);
      await store.close();
    }
    expectHealthy(await doctor(n1));
  }, 60_000);

  it("transmit checksumming on a kernel-VXLAN node's veth underlay: ! (userspace peers would drop its TCP), ✓ once off", async () => {
    const n1 = nodes[0];
    await n1.node.ns.exec(['ethtool', '-K', 'eth0', 'tx', 'on']);
    try {
      const r = await doctor(n1);
      const c = check(r, 'offload-underlay');
      expect(c.status).toBe('warn');
      expect(c.fix).toBe(
        'ethtool -K eth0 tx off (a real NIC finishes the checksums; a veth does not)',
      );
      expect(r.status).toBe(0);
    } finally {
      await n1.node.ns.exec(['ethtool', '-K', 'eth0', 'tx', 'off']);
    }
    expect(check(await doctor(n1), 'offload-underlay').status).toBe('ok');
  }, 60_000);

  it('strict rp_filter on the overlay device: ! naming it with the sysctl to run, ✓ once loose', async () => {
    const n1 = nodes[0];
    await n1.node.ns.exec(['sysctl', '-qw', 'net.ipv4.conf.flannel/1.rp_filter=1']);
    try {
      const r = await doctor(n1);
      const c = check(r, 'rp-filter');
      expect(c.status).toBe('warn');
      expect(c.title).toMatch(/^rp_filter is strict \(1\) on flannel\.1:/);
      expect(c.fix).toContain('net.ipv4.conf.flannel/1.rp_filter=2');
      expect(c.explains).toMatch(/1473/);
      // The probes' answers come from the peer's VTEP address, which strict mode lets in.
      expect(r.report.peers[0].overlay.status).toBe('ok');
      expect(r.status).toBe(0);
    } finally {
      await n1.node.ns.exec(['sysctl', '-qw', 'net.ipv4.conf.flannel/1.rp_filter=0']);
    }
    expect(check(await doctor(n1), 'rp-filter').title).toBe(
      'rp_filter not strict (flannel.1 0, cni0 0)',
    );
  }, 60_000);

  it("a 1400-MTU underlay hop: the peer's path MTU ✗ 1350 < 1450, ✓ once the hop is 1500 again", async () => {
    const [n1, n2] = nodes;
    // n2's port on the underlay switch: frames over 1400 bytes die there, silently, both ways.
    const port = 'p1';
    await cluster.underlay.exec(['ip', 'link', 'set', port, 'mtu', '1400']);
    try {
      const r = await doctor(n1);
      const p = row(r, n2);
      expect(p.underlay.status).toBe('ok');
      expect(p.overlay.status).toBe('ok');
      expect(p.pathMtu).toMatchObject({ status: 'fail', bytes: 1350, expected: 1450 });
      expect(p.fix).toMatch(
        /a hop on the underlay carries only 1400; set "Backend": \{"MTU": 1400\}/,
      );
      expect(r.status).toBe(1);
    } finally {
      await cluster.underlay.exec(['ip', 'link', 'set', port, 'mtu', '1500']);
    }
    expect(row(await doctor(n1), n2).pathMtu).toMatchObject({ status: 'ok', bytes: 1450 });
  }, 120_000);

  it('without weftd: the doctor holds the port itself and reads the echo answers; a restart turns it green', async () => {
    const n3 = nodes[2];
    expect(await n3.weftd.stop()).toBe(0);
    try {
      const r = await doctor(n3);
      expect(r.report.probe?.method).toMatch(/no dataplane holds UDP 8285 here: ICMP echo/);
      expect(r.report.peers[0].overlay.status).toBe('ok');
      expect(r.report.peers[0].pathMtu).toMatchObject({ status: 'ok', bytes: 1472 });
      expect(check(r, 'weftd').status).toBe('warn');
      expect(check(r, 'kernel-state')).toMatchObject({ status: 'fail' });
      expect(check(r, 'kernel-state').title).toMatch(/flannel0 does not exist/);
    } finally {
      n3.weftd = start(n3);
      await n3.weftd.waitForLog('ready');
    }
    expectHealthy(await doctor(n3));
  }, 90_000);
});
