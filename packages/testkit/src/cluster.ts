import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CniRuntime,
  installWeftCni,
  KUBE_FLANNEL_CNI_CONF,
  REFERENCE_CNI_DIR,
  resultIp,
  resultIps,
} from './cni.js';
import { createNetns, type Netns } from './netns.js';
import { tempDir } from './tools.js';

/**
 * A cluster on one machine: an underlay namespace holding a bridge (the "switch", 198.18.0.1/24),
 * and node namespaces plugged into it by veth (`eth0`, 198.18.0.(10+i)/24, MTU 1500), each
 * forwarding IP. Pods are namespaces made by the CNI plugin (weft-cni as `flannel`, delegating to
 * the reference bridge and host-local): a veth into their node's `cni0` bridge, which takes
 * FLANNEL_SUBNET's first address, an address from the node's subnet, a default route via the bridge.
 * With `{ underlay: 'dual' }` the switch and each node also have an IPv6 address (2001:2::1/64,
 * 2001:2::(10+i)/64: RFC 5180's benchmarking space, no duplicate address detection wait);
 * `'ipv6'` gives them IPv6 addresses only. Pods get both families when subnet.env has both.
 */
export interface ClusterNode {
  name: string;
  ns: Netns;
  /** Underlay address (the IPv6 one on an IPv6-only underlay). */
  ip: string;
  /** Underlay IPv6 address, when the underlay has IPv6. */
  ip6?: string;
  pods: Pod[];
}

export interface Pod {
  name: string;
  ns: Netns;
  /** The pod's first address (IPv4, unless the network is IPv6-only). */
  ip: string;
  /** Its IPv6 address, when the network has IPv6. */
  ip6?: string;
  node: ClusterNode;
}

export type UnderlayFamilies = 'ipv4' | 'dual' | 'ipv6';

export class Cluster {
  readonly underlay: Netns;
  readonly nodes: ClusterNode[] = [];
  private plugged = 0;
  private cni?: {
    dir: { path: string; remove: () => void };
    binDir: string;
    runtimes: Map<ClusterNode, CniRuntime>;
  };

  constructor(
    readonly tag: string,
    readonly options: { underlay?: UnderlayFamilies } = {},
  ) {
    this.underlay = createNetns(tag);
    const u = this.underlay.name;
    execFileSync('ip', ['-n', u, 'link', 'add', 'br0', 'type', 'bridge']);
    if (this.families !== 'ipv6')
      execFileSync('ip', ['-n', u, 'addr', 'add', '198.18.0.1/24', 'dev', 'br0']);
    if (this.families !== 'ipv4')
      execFileSync('ip', ['-n', u, 'addr', 'add', '2001:2::1/64', 'dev', 'br0', 'nodad']);
    execFileSync('ip', ['-n', u, 'link', 'set', 'br0', 'up']);
  }

  get families(): UnderlayFamilies {
    return this.options.underlay ?? 'ipv4';
  }

  /**
   * Plugs a namespace into the underlay switch as `eth0` with `address` (e.g. 198.18.0.11/24;
   * undefined for none) and `address6` (e.g. 2001:2::11/64, added without duplicate address detection).
   */
  plug(ns: Netns, address: string | undefined, address6?: string): void {
    const port = `p${this.plugged++}`;
    execFileSync('ip', [
      'link',
      'add',
      'name',
      port,
      'netns',
      this.underlay.name,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      ns.name,
    ]);
    execFileSync('ip', ['-n', this.underlay.name, 'link', 'set', port, 'master', 'br0', 'up']);
    if (address) execFileSync('ip', ['-n', ns.name, 'addr', 'add', address, 'dev', 'eth0']);
    if (address6)
      execFileSync('ip', ['-n', ns.name, 'addr', 'add', address6, 'dev', 'eth0', 'nodad']);
    execFileSync('ip', ['-n', ns.name, 'link', 'set', 'eth0', 'up']);
    // A userspace VTEP reads inner TCP checksums a kernel peer left for "hardware" over a veth.
    execFileSync('ip', ['netns', 'exec', ns.name, 'ethtool', '-K', 'eth0', 'tx', 'off'], {
      stdio: 'ignore',
    });
  }

  addNode(name = `n${this.nodes.length + 1}`): ClusterNode {
    const ns = createNetns(this.tag);
    const ip4 = this.families === 'ipv6' ? undefined : `198.18.0.${11 + this.nodes.length}`;
    const ip6 = this.families === 'ipv4' ? undefined : `2001:2::${11 + this.nodes.length}`;
    this.plug(ns, ip4 && `${ip4}/24`, ip6 && `${ip6}/64`);
    execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    if (ip6)
      execFileSync('ip', [
        'netns',
        'exec',
        ns.name,
        'sysctl',
        '-qw',
        'net.ipv6.conf.all.forwarding=1',
      ]);
    const node: ClusterNode = { name, ns, ip: (ip4 ?? ip6)!, pods: [] };
    if (ip6) node.ip6 = ip6;
    this.nodes.push(node);
    return node;
  }

  /**
   * Gives a node `count` pods through the CNI plugin, as a container runtime on a flannel node
   * makes them: weft-cni installed as `flannel`, kube-flannel's cni-conf.json (pointed at this
   * node's subnet.env, with a dataDir and host-local store inside the cluster's temp dir), and
   * Debian's reference bridge, host-local and portmap plugins. Each pod is a namespace whose
   * `eth0` is the bridge plugin's veth on the node's `cni0`; its address comes from host-local.
   */
  addPods(node: ClusterNode, subnetEnvPath: string, count: number): Pod[] {
    const runtime = this.cniRuntime(node, subnetEnvPath);
    const added: Pod[] = [];
    for (let k = 0; k < count; k++) {
      const ns = createNetns(this.tag);
      try {
        const { result } = runtime.add(ns.name, `/run/netns/${ns.name}`);
        // No `tx off` here: a pod keeps TSO, so a weft node gets super-packets from it. Inner
        // checksums a kernel VXLAN leaves partial are finished at its node's eth0 (tx off there).
        const pod: Pod = {
          name: `${node.name}-pod${node.pods.length + 1}`,
          ns,
          ip: resultIp(result),
          node,
        };
        const ip6 = resultIps(result).find((a) => a.includes(':'));
        if (ip6) pod.ip6 = ip6;
        node.pods.push(pod);
        added.push(pod);
      } catch (err) {
        ns.delete();
        throw err;
      }
    }
    return added;
  }

  /** The node's CNI runtime (one per node; the plugin is installed once per cluster). */
  private cniRuntime(node: ClusterNode, subnetFile: string): CniRuntime {
    this.cni ??= (() => {
      const dir = tempDir('weft-cni-');
      const binDir = join(dir.path, 'bin');
      installWeftCni(binDir);
      return { dir, binDir, runtimes: new Map<ClusterNode, CniRuntime>() };
    })();
    let runtime = this.cni.runtimes.get(node);
    if (!runtime) {
      const list = JSON.parse(KUBE_FLANNEL_CNI_CONF);
      const state = join(this.cni.dir.path, node.name);
      // The only additions to kube-flannel's configuration: where this node's files are.
      Object.assign(list.plugins[0], {
        subnetFile,
        dataDir: join(state, 'flannel'),
        ipam: { dataDir: join(state, 'ipam') },
      });
      runtime = new CniRuntime(node.ns, list, [this.cni.binDir, REFERENCE_CNI_DIR]);
      this.cni.runtimes.set(node, runtime);
    }
    return runtime;
  }

  /**
   * The node's CNI configuration written where a runtime reads it (`<cni dir>/<node>/net.d/
   * 10-flannel.conflist`, the list its pods were made with), and the plugin directories that
   * runtime searches: what a tool checking the node's CNI set-up (weftd doctor) is pointed at.
   */
  cniFiles(node: ClusterNode, subnetEnvPath: string): { confDir: string; binDirs: string[] } {
    const runtime = this.cniRuntime(node, subnetEnvPath);
    const confDir = join(this.cni!.dir.path, node.name, 'net.d');
    mkdirSync(confDir, { recursive: true });
    writeFileSync(
      join(confDir, '10-flannel.conflist'),
      `${JSON.stringify(runtime.list, null, 2)}\n`,
    );
    return { confDir, binDirs: [...runtime.binDirs] };
  }

  /** Whether `from` reaches `to` (one ping, short wait), at its IPv4 address or (`family` 6) its IPv6 one. */
  async reaches(from: Pod, to: Pod, timeoutSeconds = 1, family: 4 | 6 = 4): Promise<boolean> {
    const ip = family === 6 ? to.ip6 : to.ip;
    if (!ip) throw new Error(`${to.name} has no IPv${family} address`);
    try {
      await from.ns.exec(['ping', '-c', '1', '-W', String(timeoutSeconds), ip]);
      return true;
    } catch {
      return false;
    }
  }

  get pods(): Pod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  /**
   * Removes every namespace of the cluster (and kills what runs in them; those already gone are
   * skipped) and the CNI state. No CNI DEL is needed: what the plugins made lives in those.
   */
  delete(): void {
    for (const ns of [...this.pods.map((p) => p.ns), ...this.nodes.map((n) => n.ns), this.underlay])
      if (existsSync(`/run/netns/${ns.name}`)) ns.delete();
    this.cni?.dir.remove();
  }
}
