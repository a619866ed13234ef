import { execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  CniCallError,
  CniRuntime,
  createNetns,
  haveTools,
  installWeftCni,
  KUBE_FLANNEL_CNI_CONF,
  type Netns,
  privileged,
  REFERENCE_CNI_DIR,
  resultIp,
  sweepNetns,
  tempDir,
} from '@weft/testkit';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { addResultProblems, errorResultProblems, SUBNET_ENV } from './spec.js';

/**
 * weft-cni with Debian's reference plugins (bridge, host-local, portmap from
 * containernetworking-plugins), driven as a runtime drives it: CNI_* environment, the
 * configuration on stdin, a netns path, the plugin run inside the node's namespace.
 */
const TAG = 'cnibr';
const run =
  privileged('CNI plugin tests with the reference plugins') &&
  haveTools('CNI plugin tests', `${REFERENCE_CNI_DIR}/bridge`, 'iptables', 'unshare');

type Json = Record<string, unknown>;

describe.skipIf(!run)('weft-cni with the reference bridge and host-local', () => {
  let dir: { path: string; remove: () => void };
  let node: Netns;
  let bin: string;
  let subnetFile: string;

  beforeEach(() => {
    dir = tempDir('weft-cni-br-');
    bin = join(dir.path, 'bin');
    installWeftCni(bin);
    subnetFile = join(dir.path, 'subnet.env');
    writeFileSync(subnetFile, SUBNET_ENV);
    node = createNetns(TAG);
  });
  afterEach(() => {
    node.delete();
    dir.remove();
  });
  afterAll(() => sweepNetns(TAG));

  /** kube-flannel's list (or just the flannel entry), pointed at this test's files. */
  function runtime(options: { cniVersion?: string; portmap?: boolean; flannel?: Json } = {}) {
    const list = JSON.parse(KUBE_FLANNEL_CNI_CONF);
    Object.assign(list.plugins[0], {
      subnetFile,
      dataDir: join(dir.path, 'flannel'),
      ipam: { dataDir: join(dir.path, 'ipam') },
      ...options.flannel,
    });
    if (options.cniVersion) list.cniVersion = options.cniVersion;
    if (options.portmap === false) list.plugins.pop();
    return new CniRuntime(node, list, [bin, REFERENCE_CNI_DIR]);
  }

  const pod = () => {
    const ns = createNetns(TAG);
    return { ns, path: `/run/netns/${ns.name}` };
  };
  const ipJson = (ns: string, ...args: string[]) =>
    JSON.parse(execFileSync('ip', ['-n', ns, '-j', ...args], { encoding: 'utf8' }));
  const links = () =>
    ipJson(node.name, 'link', 'show')
      .map((l: { ifname: string }) => l.ifname)
      .sort();
  const files = (sub: string) => {
    try {
      return readdirSync(join(dir.path, sub)).sort();
    } catch {
      return [];
    }
  };
  /** host-local's reservations: one file per address, named by it. */
  const reserved = () =>
    files('ipam/cbr0').filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip'));

  it("kube-flannel's cni-conf.json as shipped: the default subnetFile and dataDir, ADD then DEL", () => {
    // Private mounts give the defaults (/run/flannel/subnet.env, /var/lib/cni) to this test alone.
    const runDir = join(dir.path, 'run-flannel');
    const libDir = join(dir.path, 'var-lib-cni');
    mkdirSync(runDir);
    mkdirSync(libDir);
    writeFileSync(join(runDir, 'subnet.env'), SUBNET_ENV);
    const made = ['/run/flannel', '/var/lib/cni'].filter((d) => !existsSync(d));
    for (const d of made) mkdirSync(d, { recursive: true });
    const mount =
      'mount --bind "$1" /run/flannel && mount --bind "$2" /var/lib/cni && shift 2 && exec "$@"';
    const rt = new CniRuntime(
      node,
      KUBE_FLANNEL_CNI_CONF,
      [bin, REFERENCE_CNI_DIR],
      ['unshare', '-m', '--propagation', 'private', 'sh', '-c', mount, 'sh', runDir, libDir],
    );
    const p = pod();
    try {
      const { result } = rt.add('kube-flannel-1', p.path);
      expect(addResultProblems(result, '0.3.1')).toEqual([]);
      expect(resultIp(result)).toBe('10.244.3.2');
      // flannel's default dataDir, host-local's default store, under the private /var/lib/cni.
      expect(readdirSync(join(libDir, 'flannel'))).toEqual(['kube-flannel-1']);
      expect(readdirSync(join(libDir, 'networks', 'cbr0'))).toContain('10.244.3.2');
      rt.del('kube-flannel-1', p.path);
      expect(readdirSync(join(libDir, 'flannel'))).toEqual([]);
      expect(readdirSync(join(libDir, 'networks', 'cbr0'))).not.toContain('10.244.3.2');
    } finally {
      p.ns.delete();
      for (const d of made.reverse()) rmdirSync(d);
    }
    expect(existsSync('/var/lib/cni/flannel/kube-flannel-1')).toBe(false);
  });

  it('a pod on cni0: its address, MTU, routes and hairpin as flannel would give them, in a 0.3.1 result', () => {
    const rt = runtime();
    const p = pod();
    const { result } = rt.add('pod-1', p.path);
    expect(addResultProblems(result, '0.3.1')).toEqual([]);
    expect(result).toMatchObject({
      cniVersion: '0.3.1',
      ips: [{ version: '4', address: '10.244.3.2/24', gateway: '10.244.3.1' }],
      routes: [{ dst: '10.244.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.244.3.1' }],
    });
    const [eth0] = ipJson(p.ns.name, 'addr', 'show', 'eth0');
    expect(eth0.mtu).toBe(1450);
    expect(eth0.addr_info.map((a: { local: string }) => a.local)).toContain('10.244.3.2');
    const routes = ipJson(p.ns.name, 'route', 'show');
    expect(routes).toContainEqual(
      expect.objectContaining({ dst: 'default', gateway: '10.244.3.1' }),
    );
    expect(routes).toContainEqual(
      expect.objectContaining({ dst: '10.244.0.0/16', gateway: '10.244.3.1' }),
    );
    const [cni0] = ipJson(node.name, 'addr', 'show', 'cni0');
    expect(cni0.addr_info[0]).toMatchObject({ local: '10.244.3.1', prefixlen: 24 });
    expect(cni0.mtu).toBe(1450);
    const veth = (result.interfaces as { name: string; sandbox?: string }[]).find(
      (i) => i.name !== 'cni0' && !i.sandbox,
    );
    const bridgeLink = JSON.parse(
      execFileSync(
        'ip',
        ['netns', 'exec', node.name, 'bridge', '-j', '-d', 'link', 'show', 'dev', veth!.name],
        {
          encoding: 'utf8',
        },
      ),
    );
    expect(bridgeLink[0].hairpin).toBe(true);
    rt.del('pod-1', p.path);
    p.ns.delete();
  });

  it.each(['1.0.0', '1.1.0'])(
    'cniVersion %s: a result of that version; 1.1.0 reaches Debian’s 1.0.0 plugins',
    (v) => {
      const rt = runtime({ cniVersion: v, portmap: false });
      const p = pod();
      const { result } = rt.add('pod-v', p.path);
      expect(addResultProblems(result, v)).toEqual([]);
      expect(result.ips).toEqual([
        { address: '10.244.3.2/24', gateway: '10.244.3.1', interface: 2 },
      ]);
      rt.check('pod-v', p.path);
      rt.del('pod-v', p.path);
      expect(reserved()).toEqual([]);
      p.ns.delete();
    },
  );

  it('dual stack: an IPv4 and an IPv6 address from FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET, a route to each network', () => {
    writeFileSync(
      subnetFile,
      `${SUBNET_ENV}FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n`,
    );
    const rt = runtime({ cniVersion: '1.0.0' });
    const p = pod();
    const { result } = rt.add('pod-dual', p.path);
    expect(addResultProblems(result, '1.0.0')).toEqual([]);
    expect((result.ips as { address: string }[]).map((i) => i.address)).toEqual([
      '10.244.3.2/24',
      'fd00:10:244:3::2/64',
    ]);
    const v6 = ipJson(p.ns.name, '-6', 'route', 'show');
    expect(v6).toContainEqual(
      expect.objectContaining({ dst: 'fd00:10:244::/56', gateway: 'fd00:10:244:3::1' }),
    );
    rt.del('pod-dual', p.path);
    expect(reserved()).toEqual([]);
    p.ns.delete();
  });

  it('DEL after subnet.env is gone releases the address, the veth and the record', () => {
    const rt = runtime();
    const before = links();
    const p = pod();
    rt.add('pod-gone', p.path);
    expect(reserved()).toEqual(['10.244.3.2']);
    expect(links().length).toBe(before.length + 2); // cni0 and the veth
    rmSync(subnetFile);
    expect(() => rt.add('pod-other', pod().path)).toThrow(
      /code 11: failed to load flannel 'subnet.env'/,
    );
    rt.del('pod-gone', p.path);
    expect(reserved()).toEqual([]);
    expect(files('flannel')).toEqual([]);
    expect(links()).toEqual([...before, 'cni0'].sort());
    p.ns.delete();
  });

  it('two containers on one node reach each other over cni0; CHECK catches a pod whose address was removed', async () => {
    const rt = runtime({ cniVersion: '1.0.0' });
    const [a, b] = [pod(), pod()];
    const ipA = resultIp(rt.add('pod-a', a.path).result);
    const ipB = resultIp(rt.add('pod-b', b.path).result);
    expect(new Set([ipA, ipB]).size).toBe(2);
    await a.ns.exec(['ping', '-c', '1', '-W', '2', ipB]);
    await b.ns.exec(['ping', '-c', '1', '-W', '2', ipA]);
    rt.check('pod-a', a.path);
    execFileSync('ip', ['-n', b.ns.name, 'addr', 'flush', 'dev', 'eth0']);
    let err: CniCallError | undefined;
    try {
      rt.check('pod-b', b.path);
    } catch (e) {
      err = e as CniCallError;
    }
    expect(err).toBeInstanceOf(CniCallError);
    expect(err!.status).toBe(1);
    expect(errorResultProblems(err!.result)).toEqual([]);
    expect(err!.result?.msg).toMatch(/Failed to match addr 10\.244\.3\.\d+\/24 on interface eth0/);
    rt.del('pod-a', a.path);
    rt.del('pod-b', b.path);
    expect(reserved()).toEqual([]);
    a.ns.delete();
    b.ns.delete();
  });

  it('50 ADD/DEL cycles leave no address, veth, record or masquerade rule behind', () => {
    // FLANNEL_IPMASQ=false: the bridge masquerades, so each ADD adds iptables rules DEL must remove.
    writeFileSync(subnetFile, SUBNET_ENV.replace('FLANNEL_IPMASQ=true', 'FLANNEL_IPMASQ=false'));
    const rt = runtime({ portmap: false });
    const p = pod();
    const nat = () =>
      execFileSync('ip', ['netns', 'exec', node.name, 'iptables', '-t', 'nat', '-S'], {
        encoding: 'utf8',
      });
    // The first cycle makes cni0: compare against the node after it.
    rt.add('cycle-0', p.path);
    rt.del('cycle-0', p.path);
    const baseline = {
      links: links(),
      nat: nat(),
      reserved: reserved(),
      records: files('flannel'),
    };
    expect(baseline.reserved).toEqual([]);
    const seen = new Set<string>();
    for (let i = 1; i <= 50; i++) {
      const { result } = rt.add(`cycle-${i}`, p.path);
      seen.add(resultIp(result));
      expect(nat()).toMatch(/-j MASQUERADE/);
      rt.del(`cycle-${i}`, p.path);
    }
    expect(seen.size).toBe(50); // host-local hands out the next address each time
    expect({ links: links(), nat: nat(), reserved: reserved(), records: files('flannel') }).toEqual(
      baseline,
    );
    expect(ipJson(p.ns.name, 'link', 'show').map((l: { ifname: string }) => l.ifname)).toEqual([
      'lo',
    ]);
    p.ns.delete();
  }, 120_000);

  it('concurrent ADDs for different containers (as a runtime may run them) get distinct addresses; concurrent DELs release them all', async () => {
    const rt = runtime({ portmap: false });
    const pods = Array.from({ length: 6 }, () => pod());
    const flannel = rt.requestConf((rt.list.plugins as Json[])[0]);
    const call = (command: string, id: string, path: string) =>
      new Promise<{ code: number | null; stdout: string }>((resolve) => {
        const child = spawn('ip', ['netns', 'exec', node.name, join(bin, 'flannel')], {
          env: {
            PATH: process.env.PATH,
            CNI_COMMAND: command,
            CNI_CONTAINERID: id,
            CNI_NETNS: path,
            CNI_IFNAME: 'eth0',
            CNI_PATH: `${bin}:${REFERENCE_CNI_DIR}`,
          },
        });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
        });
        child.once('close', (code) => resolve({ code, stdout }));
        child.stdin.end(JSON.stringify(flannel));
      });
    const adds = await Promise.all(pods.map((p, i) => call('ADD', `par-${i}`, p.path)));
    expect(adds.map((a) => a.code)).toEqual(pods.map(() => 0));
    const ips = adds.map((a) => resultIp(JSON.parse(a.stdout)));
    expect(new Set(ips).size).toBe(6);
    expect(reserved().sort()).toEqual([...ips].sort());
    expect(files('flannel').length).toBe(6);
    const dels = await Promise.all(pods.map((p, i) => call('DEL', `par-${i}`, p.path)));
    expect(dels.map((d) => d.code)).toEqual(pods.map(() => 0));
    expect(reserved()).toEqual([]);
    expect(files('flannel')).toEqual([]);
    for (const p of pods) p.ns.delete();
  }, 60_000);

  it('GC releases the addresses of containers that died without a DEL, and keeps the valid ones', () => {
    const rt = runtime({ cniVersion: '1.1.0', portmap: false });
    const pods = [pod(), pod(), pod()];
    for (const [i, p] of pods.entries()) rt.add(`gc-${i}`, p.path);
    expect(reserved().length).toBe(3);
    pods[1].ns.delete();
    pods[2].ns.delete();
    const gcConf = {
      ...rt.requestConf((rt.list.plugins as Json[])[0]),
      'cni.dev/valid-attachments': [{ containerID: 'gc-0', ifname: 'eth0' }],
    };
    rt.invoke(gcConf, 'GC');
    expect(reserved()).toEqual(['10.244.3.2']);
    expect(files('flannel')).toEqual(['gc-0']);
    rt.check('gc-0', pods[0].path);
    // STATUS: ready with the reference plugins; not without subnet.env.
    const status = { ...rt.requestConf((rt.list.plugins as Json[])[0]) };
    expect(rt.invoke(status, 'STATUS')).toBeUndefined();
    rmSync(subnetFile);
    expect(() => rt.invoke(status, 'STATUS')).toThrow(
      /code 50: failed to load flannel 'subnet.env'/,
    );
    pods[0].ns.delete();
  });

  it('the plugin run the way kube-flannel installs it, with the reference plugins missing: the well-known error, naming what and where', () => {
    const rt = new CniRuntime(node, JSON.parse(JSON.stringify(runtime().list)), [bin]);
    const p = pod();
    let err: CniCallError | undefined;
    try {
      rt.add('lonely', p.path);
    } catch (e) {
      err = e as CniCallError;
    }
    expect(err?.result).toMatchObject({
      code: 7,
      msg: `failed to find plugin "bridge" in path [${bin}]`,
    });
    expect(readFileSync(subnetFile, 'utf8')).toBe(SUBNET_ENV);
    expect(files('flannel')).toEqual([]);
    p.ns.delete();
  });
});
