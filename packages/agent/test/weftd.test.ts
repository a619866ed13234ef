import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Counter } from '@weft/dataplane';
import { EmbeddedStore, SubnetManager, silentLogger } from '@weft/subnet';
import {
  Cluster,
  type ClusterNode,
  createNetns,
  type Netns,
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
import { snakeCase, VERSION } from '../src/index.js';

const TAG = 'wd';
const CONFIG = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}';

interface Setup {
  cluster: Cluster;
  dir: string;
  store: string;
  daemons: RunningWeftd[];
  /** Starts weftd on `node` (with `--iface eth0` unless `iface` is false) and waits until ready. */
  start(node: ClusterNode, flags: string[], iface?: boolean): Promise<RunningWeftd>;
  subnetEnv(node: ClusterNode): string;
  done(): Promise<void>;
}

async function setup(config = CONFIG): Promise<Setup> {
  const dir = tempDir('weft-weftd-');
  const store = join(dir.path, 'subnets.json');
  await new EmbeddedStore(store).putConfig(config);
  const cluster = new Cluster(TAG);
  const daemons: RunningWeftd[] = [];
  const s: Setup = {
    cluster,
    dir: dir.path,
    store,
    daemons,
    subnetEnv: (node) => join(dir.path, `${node.name}.env`),
    async start(node, flags, iface = true) {
      const d = startWeftd(node.ns, [
        '--store-path',
        store,
        '--subnet-file',
        s.subnetEnv(node),
        ...(iface ? ['--iface', 'eth0'] : []),
        ...flags,
      ]);
      daemons.push(d);
      await d.waitForLog('ready');
      return d;
    },
    async done() {
      await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)));
      cluster.delete();
      dir.remove();
    },
  };
  return s;
}

async function httpGet(ns: Netns, url: string): Promise<{ status: number; body: string }> {
  const { stdout } = await ns.exec([
    process.execPath,
    '-e',
    `fetch(${JSON.stringify(url)}).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })), (e) => console.log(JSON.stringify({ status: 0, body: e.message })))`,
  ]);
  return JSON.parse(stdout);
}

function listLeases(store: string) {
  return new SubnetManager(new EmbeddedStore(store), { logger: silentLogger }).listLeases();
}

/** The lladdr of the permanent neighbor entry for `ip` on flannel.1. */
async function neighborMac(node: ClusterNode, ip: string): Promise<string | undefined> {
  const neigh = JSON.parse(
    (await node.ns.exec(['ip', '-j', '-4', 'neigh', 'show', ip, 'dev', 'flannel.1'])).stdout,
  ) as { lladdr?: string }[];
  return neigh[0]?.lladdr;
}

/** Runs weftd to its exit: its code and stderr. */
function runToExit(
  ns: Netns,
  args: string[],
  wrap: string[] = [],
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      'ip',
      ['netns', 'exec', ns.name, ...wrap, process.execPath, WEFTD_CLI, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

describe.skipIf(!privileged('weftd tests'))('weftd', () => {
  afterAll(() => sweepNetns(TAG));

  it('reconciles what a previous run left, and a restart keeps the subnet, the VTEP MAC and the pods reachable', async () => {
    const s = await setup();
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      const kernel = await s.start(n1, ['--vxlan-mode', 'kernel']);
      await s.start(n2, ['--vxlan-mode', 'userspace']);
      const [p1] = s.cluster.addPods(n1, s.subnetEnv(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.subnetEnv(n2), 1);
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod across the overlay', {
        timeoutMs: 10_000,
      });
      const envBefore = readFileSync(s.subnetEnv(n1), 'utf8');
      const macBefore = JSON.parse(
        (await n1.ns.exec(['ip', '-j', 'link', 'show', 'flannel.1'])).stdout,
      )[0].address;

      // SIGTERM: a clean exit that leaves the lease in the store to expire (flannel's way).
      const n1Lease = async () => {
        const l = (await listLeases(s.store)).leases.find((x) => x.attrs.publicIp === n1.ip);
        return l && { key: l.key, revision: l.revision, attrs: l.attrs };
      };
      const leaseBefore = await n1Lease();
      expect(leaseBefore?.revision).toBeGreaterThan(0);
      expect(await kernel.stop()).toBe(0);
      expect(await n1Lease()).toEqual(leaseBefore); // neither released nor rewritten

      // Stale state from a "previous run": a node that no longer exists.
      await n1.ns.sh(
        'ip neigh replace 10.244.250.0 lladdr 02:de:ad:00:00:01 dev flannel.1 nud permanent && bridge fdb append 02:de:ad:00:00:01 dev flannel.1 dst 198.18.0.99 self permanent && ip route replace 10.244.250.0/24 via 10.244.250.0 dev flannel.1 onlink',
      );
      await s.start(n1, ['--vxlan-mode', 'kernel']);
      expect(readFileSync(s.subnetEnv(n1), 'utf8')).toBe(envBefore);
      expect(
        JSON.parse((await n1.ns.exec(['ip', '-j', 'link', 'show', 'flannel.1'])).stdout)[0].address,
      ).toBe(macBefore);
      const routes = JSON.parse(
        (await n1.ns.exec(['ip', '-j', '-4', 'route', 'show', 'dev', 'flannel.1'])).stdout,
      ) as { dst: string }[];
      const p2Subnet = readFileSync(s.subnetEnv(n2), 'utf8').match(
        /FLANNEL_SUBNET=10\.244\.(\d+)\.1/,
      )![1];
      expect(routes.map((r) => r.dst)).toEqual([`10.244.${p2Subnet}.0/24`]);
      const neigh = JSON.parse(
        (await n1.ns.exec(['ip', '-j', '-4', 'neigh', 'show', 'dev', 'flannel.1'])).stdout,
      ) as { dst: string }[];
      expect(neigh.map((n) => n.dst)).toEqual([`10.244.${p2Subnet}.0`]);
      const fdb = JSON.parse(
        (await n1.ns.exec(['bridge', '-j', 'fdb', 'show', 'dev', 'flannel.1'])).stdout,
      ) as { dst?: string }[];
      expect(fdb.filter((f) => f.dst).map((f) => f.dst)).toEqual([n2.ip]);
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod after the kernel-mode restart', {
        timeoutMs: 10_000,
      });

      // The userspace node restarts: its TUN goes and comes back; same subnet, pods reachable, and
      // its VTEP MAC is the same, so the kernel node's neighbor entry for it never went stale.
      const envN2 = readFileSync(s.subnetEnv(n2), 'utf8');
      const n2Vtep = `10.244.${p2Subnet}.0`;
      const n2MacBefore = await neighborMac(n1, n2Vtep);
      expect(n2MacBefore).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      expect(await s.daemons[1].stop()).toBe(0);
      expect(await s.cluster.reaches(p1, p2)).toBe(false);
      await s.start(n2, ['--vxlan-mode', 'userspace']);
      expect(readFileSync(s.subnetEnv(n2), 'utf8')).toBe(envN2);
      await waitFor(() => s.cluster.reaches(p2, p1), 'pod to pod after the userspace restart', {
        timeoutMs: 10_000,
      });
      expect(await neighborMac(n1, n2Vtep)).toBe(n2MacBefore);
      const { leases } = await listLeases(s.store);
      expect(leases.length).toBe(2);
    } finally {
      await s.done();
    }
  }, 90_000);

  for (const how of ['deleted, then taken', 'overwritten'] as const)
    it(`a node whose lease is ${how} by another node stops and exits 1 with ERR_WEFTD_LEASE_LOST, saying how, leaking no lease and not writing over the other node`, async () => {
      const s = await setup();
      try {
        const n1 = s.cluster.addNode();
        const d = await s.start(n1, ['--vxlan-mode', 'kernel']);
        const store = new EmbeddedStore(s.store);
        const [own] = (await store.listSubnets()).values;
        const subnet = own.key.replace('-', '/');
        const other = JSON.stringify({ ...JSON.parse(own.value), PublicIP: '198.18.0.77' });
        if (how === 'overwritten') {
          // One write: another node's attributes under this node's key, as a misconfigured node
          // (or a restored backup) would put them.
          await store.putSubnet(own.key, other, 3600);
        } else {
          // Two writes the watch sees one by one: the lease goes, another node takes the subnet.
          await store.deleteSubnet(own.key);
          expect(await store.createSubnet(own.key, other, 3600)).toBe(true);
        }
        const code = await Promise.race([
          d.exited,
          new Promise((r) => setTimeout(() => r('still running'), 15_000)),
        ]);
        expect(code).toBe(1);
        expect(d.stderr()).toMatch(
          new RegExp(
            `weftd: ERR_WEFTD_LEASE_LOST: this node's lease ${how === 'overwritten' ? 'was overwritten by another node \\(198\\.18\\.0\\.77\\)' : 'disappeared from the store'}, and its subnet ${subnet.replace(/\./g, '\\.')} went to another node`,
          ),
        );
        // The other node's lease stands; the subnet the store offered instead was given back.
        const { leases } = await listLeases(s.store);
        expect(leases.map((l) => [l.subnet, l.attrs.publicIp])).toEqual([[subnet, '198.18.0.77']]);
      } finally {
        await s.done();
      }
    }, 60_000);

  it('host-gw: a route per remote subnet via its public IP, put back when deleted by hand', async () => {
    const s = await setup('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}');
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      await s.start(n1, []);
      await s.start(n2, []);
      const [p1] = s.cluster.addPods(n1, s.subnetEnv(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.subnetEnv(n2), 1);
      const sub2 = readFileSync(s.subnetEnv(n2), 'utf8').match(
        /FLANNEL_SUBNET=(10\.244\.\d+)\.1\/24/,
      )![1];
      await waitFor(async () => {
        const routes = JSON.parse(
          (await n1.ns.exec(['ip', '-j', 'route', 'show', `${sub2}.0/24`])).stdout,
        ) as { gateway?: string; dev: string }[];
        return routes[0]?.gateway === n2.ip && routes[0].dev === 'eth0';
      }, 'the host-gw route');
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod over host-gw', {
        timeoutMs: 10_000,
      });
      expect(readFileSync(s.subnetEnv(n1), 'utf8')).toMatch(/FLANNEL_MTU=1500/);
      // A route deleted by hand is put back at once (rtnetlink tells weftd).
      await n1.ns.exec(['ip', 'route', 'del', `${sub2}.0/24`]);
      await waitFor(
        async () =>
          JSON.parse((await n1.ns.exec(['ip', '-j', 'route', 'show', `${sub2}.0/24`])).stdout)
            .length === 1,
        'the host-gw route put back',
        { timeoutMs: 1000, intervalMs: 10 },
      );
      expect(await s.cluster.reaches(p1, p2)).toBe(true);
    } finally {
      await s.done();
    }
  }, 60_000);

  it('udp: two nodes over weftd, the underlay taken from the default route, the lease renewed; metrics carry the dataplane counters', async () => {
    const s = await setup('{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}');
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      for (const n of [n1, n2])
        await n.ns.exec(['ip', 'route', 'add', 'default', 'via', '198.18.0.1']);
      // A 4 s lease renewed halfway: its expiry must move forward while the daemon runs.
      const d1 = await s.start(n1, ['--metrics-port', '9472', '--lease-ttl', '4'], false);
      await s.start(n2, [], false);
      expect(await d1.waitForLog('starting')).toMatchObject({
        iface: 'eth0',
        publicIp: n1.ip,
        backend: 'udp',
      });
      const [p1] = s.cluster.addPods(n1, s.subnetEnv(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.subnetEnv(n2), 1);
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod over udp', { timeoutMs: 10_000 });
      expect(readFileSync(s.subnetEnv(n1), 'utf8')).toMatch(/FLANNEL_MTU=1472/);
      const metrics = (await httpGet(n1.ns, 'http://127.0.0.1:9472/metrics')).body;
      expect(metrics).toMatch(/weft_remote_nodes 1\b/);
      const tx = Number(metrics.match(/weft_dataplane_packets_total\{direction="tx"\} (\d+)/)?.[1]);
      const rx = Number(metrics.match(/weft_dataplane_packets_total\{direction="rx"\} (\d+)/)?.[1]);
      expect(tx).toBeGreaterThan(0);
      expect(rx).toBeGreaterThan(0);
      // Node's process metrics, the build, and every counter of the dataplane, in snake_case.
      expect(metrics).toMatch(/^process_cpu_user_seconds_total \d/m);
      expect(metrics).toMatch(/^nodejs_heap_size_used_bytes \d/m);
      expect(metrics).toMatch(
        new RegExp(
          `^weft_build_info\\{version="${VERSION}",nodejs_version="${process.version}"\\} 1$`,
          'm',
        ),
      );
      expect(metrics).toMatch(/^weft_ready 1$/m);
      for (const name of Object.keys(Counter)) {
        if (/^(tx|rx)(Packets|Bytes)$/.test(name)) continue;
        const line = name.startsWith('drop')
          ? `weft_dataplane_drops_total{reason="${snakeCase(name[4].toLowerCase() + name.slice(5))}"}`
          : `weft_dataplane_${snakeCase(name)}_total`;
        expect(metrics, name).toContain(`\n${line} `);
      }
      expect(metrics).toContain('weft_dataplane_drops_total{reason="no_route"}');
      for (const m of metrics.matchAll(/^weft_\w+\{([^}]*)\}/gm))
        for (const [, v] of m[1].matchAll(/="([^"]*)"/g))
          if (!/version/.test(m[1])) expect(v).toMatch(/^[a-z0-9_]+$/);
      // An unrouted destination in the network: flannel's udp answers net unreachable, and counts it.
      await p1.ns.exec(['ping', '-c', '1', '-W', '1', '10.244.254.9']).catch(() => undefined);
      const after = (await httpGet(n1.ns, 'http://127.0.0.1:9472/metrics')).body;
      expect(
        Number(after.match(/^weft_dataplane_icmp_errors_sent_total (\d+)/m)?.[1]),
      ).toBeGreaterThan(0);
      expect(
        Number(after.match(/^weft_dataplane_drops_total\{reason="no_route"\} (\d+)/m)?.[1]),
      ).toBeGreaterThan(0);
      const expiry = (m: string) =>
        Number(m.match(/^weft_lease_expiry_timestamp_seconds (\S+)$/m)?.[1]);
      const first = expiry(metrics);
      expect(first).toBeGreaterThan(Date.now() / 1000);
      await waitFor(
        async () =>
          expiry((await httpGet(n1.ns, 'http://127.0.0.1:9472/metrics')).body) > first + 1,
        'the lease renewed',
        { timeoutMs: 8_000, intervalMs: 500 },
      );
      expect(await s.cluster.reaches(p1, p2)).toBe(true);
    } finally {
      await s.done();
    }
  }, 60_000);

  it('vxlan DirectRouting: nodes on the same L2 segment get a route via the public IP instead of the tunnel; auto picks the kernel and says why', async () => {
    const s = await setup(
      '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}',
    );
    try {
      const [n1, n2] = [s.cluster.addNode(), s.cluster.addNode()];
      const d1 = await s.start(n1, []);
      await s.start(n2, ['--vxlan-mode', 'userspace']);
      expect(await d1.waitForLog("vxlan: programming the kernel's VXLAN")).toMatchObject({
        reason: 'auto: the kernel has VXLAN',
      });
      const [p1] = s.cluster.addPods(n1, s.subnetEnv(n1), 1);
      const [p2] = s.cluster.addPods(n2, s.subnetEnv(n2), 1);
      const subnetOf = (n: ClusterNode) =>
        readFileSync(s.subnetEnv(n), 'utf8').match(/FLANNEL_SUBNET=(10\.244\.\d+)\.1\/24/)![1];
      for (const [from, to] of [
        [n1, n2],
        [n2, n1],
      ]) {
        await waitFor(async () => {
          const routes = JSON.parse(
            (await from.ns.exec(['ip', '-j', 'route', 'show', `${subnetOf(to)}.0/24`])).stdout,
          ) as { gateway?: string; dev: string }[];
          return routes.length === 1 && routes[0].gateway === to.ip && routes[0].dev === 'eth0';
        }, `the direct route on ${from.name}`);
      }
      // The kernel node holds no tunnel entries for a node it reaches directly.
      expect((await n1.ns.exec(['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).stdout).toBe('');
      expect((await n1.ns.exec(['ip', '-4', 'neigh', 'show', 'dev', 'flannel.1'])).stdout).toBe('');
      await waitFor(() => s.cluster.reaches(p1, p2), 'pod to pod, routed directly', {
        timeoutMs: 10_000,
      });
      expect(await s.cluster.reaches(p2, p1)).toBe(true);
    } finally {
      await s.done();
    }
  }, 60_000);

  it('says so while etcd cannot be reached, is alive but not ready, then gets ready; serves metrics; installs masquerade rules', async () => {
    const cluster = new Cluster(TAG);
    let etcd: Awaited<ReturnType<typeof startEtcd>> | undefined;
    const dir = tempDir('weft-weftd-');
    let d: RunningWeftd | undefined;
    try {
      const n1 = cluster.addNode();
      const etcdNs = createNetns(TAG);
      cluster.plug(etcdNs, '198.18.0.100/24');
      // The config goes in first and etcd then goes down, so weftd never meets an etcd without it.
      etcd = await startEtcd({
        netns: etcdNs,
        host: '198.18.0.100',
        clientPort: 2379,
        peerPort: 2380,
      });
      await etcd.etcdctl(['put', '/weft-test/config', CONFIG]);
      await etcd.kill();
      d = startWeftd(n1.ns, [
        '--etcd-endpoints',
        'http://198.18.0.100:2379',
        '--etcd-prefix',
        '/weft-test',
        '--subnet-file',
        join(dir.path, 'subnet.env'),
        '--iface',
        'eth0',
        '--healthz-port',
        '9471',
        '--metrics-port',
        '9472',
        '--ip-masq',
      ]);
      await d.waitForLog('the store cannot be reached; retrying');
      expect(await httpGet(n1.ns, 'http://127.0.0.1:9471/healthz')).toEqual({
        status: 200,
        body: 'ok\n',
      });
      expect(await httpGet(n1.ns, 'http://127.0.0.1:9471/readyz')).toEqual({
        status: 503,
        body: 'not ready: no lease yet\n',
      });
      // Retried with backoff: the wait between attempts doubles.
      const retryWaits = () =>
        d!.logs
          .filter((l) => l.msg === 'the store cannot be reached; retrying')
          .map((l) => l.retryInMs);
      await waitFor(() => retryWaits().length >= 2, 'a second attempt', { timeoutMs: 20_000 });
      expect(retryWaits().slice(0, 2)).toEqual([500, 1000]);
      await etcd.restart();
      await d.waitForLog('ready', 30_000);
      expect((await httpGet(n1.ns, 'http://127.0.0.1:9471/readyz')).status).toBe(200);
      const metrics = (await httpGet(n1.ns, 'http://127.0.0.1:9472/metrics')).body;
      expect(metrics).toMatch(/weft_remote_nodes 0/);
      expect(metrics).toMatch(/weft_lease_expiry_timestamp_seconds \d{10}/);
      const rules = (await n1.ns.exec(['iptables', '-t', 'nat', '-S', 'FLANNEL-POSTRTG'])).stdout;
      expect(rules).toMatch(
        /-A FLANNEL-POSTRTG -s 10\.244\.0\.0\/16 ! -d 224\.0\.0\.0\/4 .*-j MASQUERADE --random-fully/,
      );
      expect((await n1.ns.exec(['iptables', '-t', 'nat', '-S', 'POSTROUTING'])).stdout).toMatch(
        /-j FLANNEL-POSTRTG/,
      );
      expect(readFileSync(join(dir.path, 'subnet.env'), 'utf8')).toMatch(/FLANNEL_IPMASQ=true/);
    } finally {
      await d?.stop();
      await etcd?.stop();
      cluster.delete();
      dir.remove();
    }
  }, 60_000);

  describe('fails with one clear line, exit code non-zero, nothing half-configured', () => {
    const expectClean = async (node: ClusterNode, store: string) => {
      const links = (await node.ns.exec(['ip', '-o', 'link', 'show'])).stdout;
      expect(links).not.toMatch(/flannel/);
      expect(
        (await new SubnetManager(new EmbeddedStore(store), { logger: silentLogger }).listLeases())
          .leases,
      ).toEqual([]);
    };

    it('bad config in the store', async () => {
      const s = await setup('{"Network": "10.244.0.0/16", "SubnetLen": 31}');
      try {
        const n1 = s.cluster.addNode();
        const r = await runToExit(n1.ns, [
          '--store-path',
          s.store,
          '--subnet-file',
          s.subnetEnv(n1),
          '--iface',
          'eth0',
        ]);
        expect(r.code).toBe(1);
        expect(r.stderr).toBe(
          'weftd: ERR_CONFIG_INVALID: network config: SubnetLen 31 must be <= 30 (a node needs room for a tunnel and a bridge address)\n',
        );
        await expectClean(n1, s.store);
      } finally {
        await s.done();
      }
    });

    it('no config in the store', async () => {
      const dir = tempDir('weft-weftd-');
      const ns = createNetns(TAG);
      try {
        const r = await runToExit(ns, [
          '--store-path',
          join(dir.path, 'empty.json'),
          '--iface',
          'lo',
          '--public-ip',
          '127.0.0.1',
        ]);
        expect(r.code).toBe(1);
        expect(r.stderr.trim().split('\n')).toEqual([
          expect.stringMatching(
            /^weftd: ERR_CONFIG_MISSING: no network config in embedded .*: create it, e\.g\. weftd put-config '\{"Network": "10\.244\.0\.0\/16"/,
          ),
        ]);
      } finally {
        ns.delete();
        dir.remove();
      }
    });

    it('a bad flag', async () => {
      const ns = createNetns(TAG);
      try {
        const r = await runToExit(ns, ['--vxlan-mode', 'sometimes']);
        expect(r.code).toBe(2);
        expect(r.stderr).toBe(
          'weftd: ERR_WEFTD_FLAG: --vxlan-mode: "sometimes" must be one of kernel, userspace, auto\n',
        );
      } finally {
        ns.delete();
      }
    });

    for (const { mode, line } of [
      {
        mode: 'kernel',
        line: /^weftd: ERR_NETLINK_EPERM: RTM_NEWLINK flannel\.1: Operation not permitted \(EPERM\).*needs CAP_NET_ADMIN/,
      },
      { mode: 'userspace', line: /^weftd: ERR_TUN_PERMISSION: .*CAP_NET_ADMIN/ },
    ]) {
      it(`a missing privilege in ${mode} mode: one line, the lease given back, no device or subnet.env left`, async () => {
        const s = await setup();
        try {
          const n1 = s.cluster.addNode();
          const r = await runToExit(
            n1.ns,
            [
              '--store-path',
              s.store,
              '--subnet-file',
              s.subnetEnv(n1),
              '--iface',
              'eth0',
              '--vxlan-mode',
              mode,
            ],
            ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin'],
          );
          expect(r.code).toBe(1);
          expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(line)]);
          await expectClean(n1, s.store);
          expect(existsSync(s.subnetEnv(n1))).toBe(false);
        } finally {
          await s.done();
        }
      });
    }

    it('a failure after the backend is up (--ip-masq without iptables) undoes the device, the lease and subnet.env', async () => {
      const s = await setup();
      try {
        const n1 = s.cluster.addNode();
        const r = await runToExit(
          n1.ns,
          [
            '--store-path',
            s.store,
            '--subnet-file',
            s.subnetEnv(n1),
            '--iface',
            'eth0',
            '--vxlan-mode',
            'kernel',
            '--ip-masq',
          ],
          ['env', 'PATH=/nonexistent'],
        );
        expect(r.code).toBe(1);
        expect(r.stderr).toBe(
          'weftd: ERR_WEFTD_IPTABLES: --ip-masq needs iptables: install it (Debian: apt-get install iptables)\n',
        );
        await expectClean(n1, s.store);
        expect(existsSync(s.subnetEnv(n1))).toBe(false);
      } finally {
        await s.done();
      }
    });

    it('no free subnet', async () => {
      const s = await setup('{"Network": "10.9.0.0/28"}');
      try {
        const m = new SubnetManager(new EmbeddedStore(s.store), { logger: silentLogger });
        for (const ip of ['198.18.9.1', '198.18.9.2', '198.18.9.3'])
          await m.acquireLease({ attrs: { publicIp: ip, backendType: 'udp' } });
        const n1 = s.cluster.addNode();
        const r = await runToExit(n1.ns, [
          '--store-path',
          s.store,
          '--subnet-file',
          s.subnetEnv(n1),
          '--iface',
          'eth0',
        ]);
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(
          /^weftd: ERR_SUBNET_NONE_FREE: no free subnet in 10\.9\.0\.0\/28 .*\n$/,
        );
        expect(r.stderr.trim().split('\n').length).toBe(1);
        expect((await n1.ns.exec(['ip', '-o', 'link', 'show'])).stdout).not.toMatch(/flannel/);
      } finally {
        await s.done();
      }
    });
  });
});
