import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedStore, SubnetManager, silentLogger } from '@weft/subnet';
import {
  Cluster,
  type ClusterNode,
  DATAPLANE_CLI,
  haveTools,
  privileged,
  type RunningWeftd,
  startEtcd,
  startWeftd,
  sweepNetns,
  tempDir,
  WEFTD_CLI,
  waitFor,
} from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { VERSION } from '../src/index.js';

/** weftd as a drop-in for flanneld: its config semantics, flags, rules and files. */
const TAG = 'wdpar';

interface Setup {
  cluster: Cluster;
  store: string;
  env(node: ClusterNode): string;
  start(node: ClusterNode, flags: string[], wait?: string | RegExp): Promise<RunningWeftd>;
  done(): Promise<void>;
}

async function setup(config: string): Promise<Setup> {
  const dir = tempDir('weft-parity-');
  const store = join(dir.path, 'subnets.json');
  await new EmbeddedStore(store).putConfig(config);
  const cluster = new Cluster(TAG);
  const daemons: RunningWeftd[] = [];
  const env = (node: ClusterNode) => join(dir.path, `${node.name}.env`);
  return {
    cluster,
    store,
    env,
    async start(node, flags, wait = 'ready') {
      const d = startWeftd(node.ns, ['--store-path', store, '--subnet-file', env(node), ...flags]);
      daemons.push(d);
      await d.waitForLog(wait);
      return d;
    },
    async done() {
      await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)));
      cluster.delete();
      dir.remove();
    },
  };
}

const ipJson = async (node: ClusterNode, argv: string[]) =>
  JSON.parse((await node.ns.exec(argv)).stdout || '[]') as Record<string, unknown>[];

describe('weftd and weft-dataplane as commands', () => {
  it('--version prints the version alone on stderr and exits 0, as flanneld', () => {
    const run = spawnSync(process.execPath, [WEFTD_CLI, '--version'], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    expect(run.stderr).toBe(`${VERSION}\n`);
    expect(VERSION).toMatch(/^\d+\.\d+\.\d+/);
    const env = spawnSync(process.execPath, [WEFTD_CLI], {
      encoding: 'utf8',
      env: { ...process.env, FLANNELD_VERSION: 'true' },
    });
    expect(env.stderr).toBe(`${VERSION}\n`);
  });

  it('refuses flanneld flags it has no use for, saying what to do instead', () => {
    const run = spawnSync(process.execPath, [WEFTD_CLI, '--kube-subnet-mgr'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(
      /--kube-subnet-mgr is a flanneld flag weftd does not take: .*--etcd-endpoints/,
    );
    const margin = spawnSync(process.execPath, [WEFTD_CLI, '-subnet-lease-renew-margin', '1440'], {
      encoding: 'utf8',
    });
    expect(margin.status).toBe(2);
    expect(margin.stderr).toBe(
      'weftd: ERR_WEFTD_FLAG: --subnet-lease-renew-margin: 1440 is out of range: 1..1439\n',
    );
  });

  it('weft-dataplane --help prints usage, not a JSON parse error', () => {
    const run = spawnSync(process.execPath, [DATAPLANE_CLI, '--help'], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^usage: weft-dataplane/);
    expect(run.stdout).toMatch(/"type":"udp"/);
    const bad = spawnSync(process.execPath, [DATAPLANE_CLI, '{not json'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(
      /^weft-dataplane: the config is not JSON: .*\(see weft-dataplane --help\)/,
    );
  });
});

const haveEtcd = haveTools(
  'put-config against etcd over TLS',
  '/usr/bin/etcd',
  '/usr/bin/etcdctl',
  'openssl',
);

describe.skipIf(!haveEtcd)('weftd put-config takes every store flag the daemon takes', () => {
  const dir = tempDir('weft-putconfig-');
  afterAll(() => dir.remove());
  const file = (name: string) => join(dir.path, name);

  it('writes over TLS with a client certificate, and refuses a CA file that does not exist', async () => {
    const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    const subj = (cn: string) => ['-days', '1', '-subj', `/CN=${cn}`];
    ssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.crt'), ...subj('CA'));
    for (const [name, usage] of [
      ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'],
      ['client', 'extendedKeyUsage=clientAuth\n'],
    ]) {
      writeFileSync(file(`${name}.ext`), usage);
      ssl('req', ...ec, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), ...subj(name));
      ssl(
        'x509',
        '-req',
        '-in',
        file(`${name}.csr`),
        '-CA',
        file('ca.crt'),
        '-CAkey',
        file('ca.key'),
        '-CAcreateserial',
        '-days',
        '1',
        '-extfile',
        file(`${name}.ext`),
        '-out',
        file(`${name}.crt`),
      );
    }
    const etcd = await startEtcd({
      tls: {
        caFile: file('ca.crt'),
        certFile: file('server.crt'),
        keyFile: file('server.key'),
        clientCertFile: file('client.crt'),
        clientKeyFile: file('client.key'),
      },
    });
    try {
      const config = '{"Network": "10.250.0.0/16", "Backend": {"Type": "vxlan"}}';
      const tls = [
        '--etcd-cafile',
        file('ca.crt'),
        '--etcd-certfile',
        file('client.crt'),
        '--etcd-keyfile',
        file('client.key'),
      ];
      const ok = spawnSync(
        process.execPath,
        [
          WEFTD_CLI,
          'put-config',
          config,
          '--etcd-endpoints',
          etcd.endpoint,
          '--etcd-prefix',
          '/tls-test',
          ...tls,
        ],
        { encoding: 'utf8' },
      );
      expect(ok.stderr).not.toMatch(/weftd:/);
      expect(ok.status).toBe(0);
      expect(ok.stdout).toBe(`network config written to etcd ${etcd.endpoint} /tls-test/\n`);
      expect(await etcd.etcdctl(['get', '--print-value-only', '/tls-test/config'])).toBe(
        `${config}\n`,
      );
      const missing = spawnSync(
        process.execPath,
        [
          WEFTD_CLI,
          'put-config',
          config,
          '--etcd-endpoints',
          etcd.endpoint,
          '--etcd-cafile',
          file('nope.crt'),
        ],
        { encoding: 'utf8' },
      );
      expect(missing.status).toBe(1);
      expect(missing.stderr).toMatch(
        /^weftd: ERR_STORE_OPTIONS: etcd: cannot read the TLS file .*nope\.crt/,
      );
      // FLANNELD_ environment twins reach put-config too.
      const fromEnv = spawnSync(process.execPath, [WEFTD_CLI, 'put-config', config], {
        encoding: 'utf8',
        env: {
          ...process.env,
          FLANNELD_ETCD_ENDPOINTS: etcd.endpoint,
          FLANNELD_ETCD_PREFIX: '/env-test',
          FLANNELD_ETCD_CAFILE: file('ca.crt'),
          FLANNELD_ETCD_CERTFILE: file('client.crt'),
          FLANNELD_ETCD_KEYFILE: file('client.key'),
        },
      });
      expect(fromEnv.status).toBe(0);
      expect(await etcd.etcdctl(['get', '--print-value-only', '/env-test/config'])).toBe(
        `${config}\n`,
      );
    } finally {
      await etcd.stop();
    }
  }, 30_000);
});

describe.skipIf(!privileged('weftd parity tests'))('weftd as flanneld', () => {
  afterAll(() => sweepNetns(TAG));

  it('vxlan: "Type": "VXLAN" is vxlan and Backend.MTU 1400 is the underlay MTU: a 1350 device and FLANNEL_MTU=1350, kernel and userspace alike', async () => {
    const s = await setup(
      '{"Network": "10.244.0.0/16", "Backend": {"Type": "VXLAN", "MTU": 1400}}',
    );
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      const d1 = await s.start(n1, ['--iface', 'eth0', '--vxlan-mode', 'kernel']);
      await s.start(n2, ['--iface', 'eth0', '--vxlan-mode', 'userspace']);
      expect(d1.logs[0].msg).toMatch(
        /^using the embedded store .*: it serves the nodes of one host; nodes on several hosts need etcd/,
      );
      for (const n of [n1, n2]) {
        expect(readFileSync(s.env(n), 'utf8')).toMatch(/^FLANNEL_MTU=1350$/m);
        expect((await ipJson(n, ['ip', '-j', 'link', 'show', 'flannel.1']))[0].mtu).toBe(1350);
      }
      const [p1] = s.cluster.addPods(n1, s.env(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.env(n2), 1);
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod', { timeoutMs: 10_000 });
      // A full-size packet for the pods' MTU crosses without fragmentation (DF set).
      await p1.ns.exec(['ping', '-c', '2', '-W', '2', '-M', 'do', '-s', String(1350 - 28), p2.ip]);
    } finally {
      await s.done();
    }
  }, 60_000);

  it('alloc: a lease and subnet.env with the underlay MTU, and no device, no routes', async () => {
    const s = await setup('{"Network": "10.244.0.0/16", "Backend": {"Type": "alloc"}}');
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      await s.start(n1, ['--iface', 'eth0']);
      await s.start(n2, ['--iface', 'eth0']);
      expect(readFileSync(s.env(n1), 'utf8')).toMatch(
        /^FLANNEL_SUBNET=10\.244\.\d+\.1\/24\nFLANNEL_MTU=1500$/m,
      );
      const leases = (
        await new SubnetManager(new EmbeddedStore(s.store), { logger: silentLogger }).listLeases()
      ).leases;
      expect(leases.map((l) => l.attrs.backendType).sort()).toEqual(['alloc', 'alloc']);
      expect((await n1.ns.exec(['ip', '-o', 'link', 'show'])).stdout).not.toMatch(/flannel/);
      expect(
        (await n1.ns.exec(['ip', 'route', 'show', '10.244.0.0/16', 'root', '10.244.0.0/16']))
          .stdout,
      ).toBe('');
    } finally {
      await s.done();
    }
  }, 30_000);

  it('chooses the interface as flanneld does: --iface by name or address (first that exists), --iface-regex over addresses then names, --iface-can-reach, --public-ip, FLANNELD_IFACE', async () => {
    const s = await setup('{"Network": "10.244.0.0/16", "Backend": {"Type": "alloc"}}');
    try {
      const n1 = s.cluster.addNode();
      const sh = (cmd: string) => n1.ns.sh(cmd);
      await sh(`ip link add uplink type veth peer name uplink-peer
        ip addr add 192.0.2.7/24 dev uplink
        ip link set uplink up
        ip link set uplink-peer up
        ip route add 203.0.113.0/24 via 192.0.2.1 dev uplink`);
      const cases: [string[], Record<string, string>, string, string][] = [
        [['--iface', 'nosuch', '--iface', '192.0.2.7'], {}, 'uplink', '192.0.2.7'],
        [['-iface', 'nosuch', '-iface', 'eth0'], {}, 'eth0', n1.ip],
        [['--iface-regex', '^192\\.0\\.2\\.'], {}, 'uplink', '192.0.2.7'],
        [['--iface-regex', '^nomatch$', '--iface-regex', '^uplink$'], {}, 'uplink', '192.0.2.7'],
        // An interface without an IPv4 address is a failed lookup: the next is tried.
        [['--iface', 'uplink-peer', '--iface', 'eth0'], {}, 'eth0', n1.ip],
        [['--iface-can-reach', '203.0.113.9'], {}, 'uplink', '192.0.2.7'],
        [['--iface', 'nosuch', '--iface-can-reach', '198.18.0.1'], {}, 'eth0', n1.ip],
        [['--public-ip', '192.0.2.7'], {}, 'uplink', '192.0.2.7'],
        [['--iface', 'eth0', '--public-ip', '192.0.2.99'], {}, 'eth0', '192.0.2.99'],
        [[], { FLANNELD_IFACE: 'uplink' }, 'uplink', '192.0.2.7'],
      ];
      for (const [flags, env, iface, publicIp] of cases) {
        const d = startWeftd(
          n1.ns,
          ['--store-path', s.store, '--subnet-file', s.env(n1), ...flags],
          { env },
        );
        try {
          const started = await d.waitForLog('starting');
          expect({ flags, env, iface: started.iface, publicIp: started.publicIp }).toEqual({
            flags,
            env,
            iface,
            publicIp,
          });
        } finally {
          await d.stop();
        }
      }
      const none = startWeftd(n1.ns, [
        '--store-path',
        s.store,
        '--subnet-file',
        s.env(n1),
        '--iface',
        'nosuch',
        '--iface-regex',
        '^zz',
      ]);
      expect(await none.exited).toBe(1);
      expect(none.stderr()).toMatch(
        /^weftd: ERR_WEFTD_IFACE: no interface matches the interfaces and regexes given \(--iface nosuch: no such interface; --iface-regex \^zz: matches no address or name\)/,
      );
    } finally {
      await s.done();
    }
  }, 60_000);

  it("--ip-masq and the FORWARD accepts as flannel's iptables rules: in flannel's order, working (pods reach outside the network, and each other under a FORWARD DROP policy), put back within --iptables-resync; a blackhole route", async () => {
    const s = await setup('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}');
    try {
      const [n1, n2, n3] = [s.cluster.addNode(), s.cluster.addNode(), s.cluster.addNode()];
      for (const n of [n1, n2]) await n.ns.exec(['iptables', '-P', 'FORWARD', 'DROP']);
      const flags = ['--iface', 'eth0', '--ip-masq', '--iptables-resync', '1'];
      const d1 = await s.start(n1, flags);
      await s.start(n2, [...flags, '--ip-masq-fully-random-disable']);
      // A blackhole route for a node whose pods have no bridge (a bridge's own route would be shadowed).
      await s.start(n3, ['--iface', 'eth0', '--ip-blackhole-route', '--iptables-resync', '1']);
      const pod3 = `${readFileSync(s.env(n3), 'utf8').match(/FLANNEL_SUBNET=(10\.244\.\d+)\.1\/24/)![1]}.0/24`;
      const subnet = readFileSync(s.env(n1), 'utf8').match(
        /FLANNEL_SUBNET=(10\.244\.\d+)\.1\/24/,
      )![1];
      const pod = `${subnet}.0/24`;
      const c = '-m comment --comment "flanneld masq"';
      const expected = [
        '-N FLANNEL-POSTRTG',
        `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG -s ${pod} -d 10.244.0.0/16 ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d ${pod} ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d ${pod} ${c} -j RETURN`,
        `-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 ${c} -j MASQUERADE --random-fully`,
        `-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 ${c} -j MASQUERADE --random-fully`,
      ];
      const rules = async (n: ClusterNode, table: string, chain: string) =>
        (await n.ns.exec(['iptables', '-t', table, '-S', chain])).stdout.trim().split('\n');
      expect(await rules(n1, 'nat', 'FLANNEL-POSTRTG')).toEqual(expected);
      expect((await rules(n2, 'nat', 'FLANNEL-POSTRTG')).join('\n')).not.toMatch(/random-fully/);
      expect(await rules(n1, 'nat', 'POSTROUTING')).toContain(
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      );
      expect(await rules(n1, 'filter', 'FLANNEL-FWD')).toEqual([
        '-N FLANNEL-FWD',
        '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      ]);
      expect(await rules(n1, 'filter', 'FORWARD')).toContain(
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      );
      expect(
        (await ipJson(n3, ['ip', '-j', 'route', 'show', 'type', 'blackhole'])).map((r) => r.dst),
      ).toEqual([pod3]);
      expect(await ipJson(n1, ['ip', '-j', 'route', 'show', 'type', 'blackhole'])).toEqual([]);
      const [p1] = s.cluster.addPods(n1, s.env(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.env(n2), 1);
      // Pod to pod under FORWARD DROP: the FLANNEL-FWD accepts carry it.
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod under a FORWARD DROP policy', {
        timeoutMs: 10_000,
      });
      // Out of the cluster network: 198.18.0.1 has no route back to pods, so only a masqueraded ping returns.
      await p1.ns.exec(['ping', '-c', '1', '-W', '2', '198.18.0.1']);
      // Rules deleted by hand come back within --iptables-resync (1 s), in order.
      await n1.ns.exec([
        'iptables',
        '-t',
        'nat',
        '-D',
        'FLANNEL-POSTRTG',
        ...[
          '-s',
          '10.244.0.0/16',
          '!',
          '-d',
          '224.0.0.0/4',
          '-m',
          'comment',
          '--comment',
          'flanneld masq',
          '-j',
          'MASQUERADE',
          '--random-fully',
        ],
      ]);
      await n1.ns.exec([
        'iptables',
        '-D',
        'FORWARD',
        '-m',
        'comment',
        '--comment',
        'flanneld forward',
        '-j',
        'FLANNEL-FWD',
      ]);
      await n3.ns.exec(['ip', 'route', 'del', 'blackhole', pod3]);
      const t0 = Date.now();
      await waitFor(
        async () =>
          JSON.stringify(await rules(n1, 'nat', 'FLANNEL-POSTRTG')) === JSON.stringify(expected),
        'the masquerade rules put back',
        { timeoutMs: 3000 },
      );
      await waitFor(
        async () =>
          (await rules(n1, 'filter', 'FORWARD')).some((r) => r.endsWith('-j FLANNEL-FWD')),
        'the FORWARD jump put back',
        { timeoutMs: 3000 },
      );
      await waitFor(
        async () =>
          (await ipJson(n3, ['ip', '-j', 'route', 'show', 'type', 'blackhole'])).length === 1,
        'the blackhole route put back',
        { timeoutMs: 3000 },
      );
      expect(Date.now() - t0).toBeLessThan(3000);
      await d1.waitForLog('some traffic rules were missing; put back');
      await p1.ns.exec(['ping', '-c', '1', '-W', '2', '198.18.0.1']);
    } finally {
      await s.done();
    }
  }, 60_000);

  it("EnableNFTables: flannel's nftables tables and rules instead (iptables chains cleaned up), masquerading for real, put back within --iptables-resync", async () => {
    const s = await setup(
      '{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}',
    );
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      // What an earlier iptables run left: weftd in nftables mode removes it, as flanneld does.
      await n1.ns.sh(`iptables -t nat -N FLANNEL-POSTRTG
        iptables -t nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`);
      const d1 = await s.start(n1, ['--iface', 'eth0', '--ip-masq', '--iptables-resync', '1']);
      await s.start(n2, ['--iface', 'eth0']);
      expect((await n1.ns.exec(['iptables', '-t', 'nat', '-S'])).stdout).not.toMatch(/FLANNEL/);
      const subnet = readFileSync(s.env(n1), 'utf8').match(
        /FLANNEL_SUBNET=(10\.244\.\d+)\.1\/24/,
      )![1];
      const pod = `${subnet}.0/24`;
      const chain = async (name: string) =>
        (await n1.ns.exec(['nft', 'list', 'chain', 'ip', 'flannel-ipv4', name])).stdout
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => /(return|accept|masquerade.*|policy accept;)$/.test(l));
      const postrtg = [
        'type nat hook postrouting priority srcnat; policy accept;',
        'meta mark 0x00004000 return',
        `ip saddr ${pod} ip daddr 10.244.0.0/16 return`,
        `ip saddr 10.244.0.0/16 ip daddr ${pod} return`,
        `ip saddr != ${pod} ip daddr 10.244.0.0/16 return`,
        'ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random',
        'ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random',
      ];
      expect(await chain('postrtg')).toEqual(postrtg);
      expect(await chain('forward')).toEqual([
        'type filter hook forward priority filter; policy accept;',
        'ip saddr 10.244.0.0/16 accept',
        'ip daddr 10.244.0.0/16 accept',
      ]);
      expect((await n1.ns.exec(['nft', 'list', 'tables'])).stdout).toMatch(
        /table ip6 flannel-ipv6/,
      );
      const [p1] = s.cluster.addPods(n1, s.env(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.env(n2), 1);
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod', { timeoutMs: 10_000 });
      await p1.ns.exec(['ping', '-c', '1', '-W', '2', '198.18.0.1']);
      await n1.ns.exec(['nft', 'flush', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
      await waitFor(
        async () => JSON.stringify(await chain('postrtg')) === JSON.stringify(postrtg),
        'the nftables rules put back',
        { timeoutMs: 3000 },
      );
      await d1.waitForLog('some traffic rules were missing; put back');
      await p1.ns.exec(['ping', '-c', '1', '-W', '2', '198.18.0.1']);
    } finally {
      await s.done();
    }
  }, 60_000);

  it('--log-level debug says what it does: leases known, each peer programmed, resyncs', async () => {
    const s = await setup('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}');
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      await s.start(n2, ['--iface', 'eth0']);
      const d1 = await s.start(n1, [
        '--iface',
        'eth0',
        '--vxlan-mode',
        'kernel',
        '--log-level',
        'debug',
        '--resync',
        '1',
      ]);
      const known = await d1.waitForLog('lease known');
      expect(known).toMatchObject({ level: 20, event: 'added', publicIp: n2.ip, backend: 'vxlan' });
      for (const msg of [
        'peer neighbor programmed',
        'peer FDB entry programmed',
        'peer route programmed',
      ])
        await d1.waitForLog(msg);
      await d1.waitForLog('resync: checking the forwarding state', 5000);
      await d1.waitForLog('forwarding state checked: nothing to change', 5000);
      await d1.waitForLog('traffic rules checked', 8000);
      expect(existsSync(s.env(n1))).toBe(true);
    } finally {
      await s.done();
    }
  }, 30_000);
});
