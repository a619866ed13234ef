import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createNetns, type Netns } from './netns.js';

/**
 * A cluster on one machine: an underlay namespace holding a bridge (the "switch", 198.18.0.1/24),
 * and node namespaces plugged into it by veth (`eth0`, 198.18.0.(10+i)/24, MTU 1500), each
 * forwarding IP. Pods are namespaces with a veth into their node's `cni0` bridge, addressed from
 * the node's subnet as flannel's CNI plugin (bridge + host-local IPAM) would: the bridge takes
 * FLANNEL_SUBNET's first address, pods the next ones, and route everything via the bridge.
 */
export interface ClusterNode {
  name: string;
  ns: Netns;
  /** Underlay address. */
  ip: string;
  pods: Pod[];
}

export interface Pod {
  name: string;
  ns: Netns;
  ip: string;
  node: ClusterNode;
}

export class Cluster {
  readonly underlay: Netns;
  readonly nodes: ClusterNode[] = [];
  private plugged = 0;

  constructor(readonly tag: string) {
    this.underlay = createNetns(tag);
    const u = this.underlay.name;
    execFileSync('ip', ['-n', u, 'link', 'add', 'br0', 'type', 'bridge']);
    execFileSync('ip', ['-n', u, 'addr', 'add', '198.18.0.1/24', 'dev', 'br0']);
    execFileSync('ip', ['-n', u, 'link', 'set', 'br0', 'up']);
  }

  /** Plugs a namespace into the underlay switch as `eth0` with `address` (e.g. 198.18.0.11/24). */
  plug(ns: Netns, address: string): void {
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
    execFileSync('ip', ['-n', ns.name, 'addr', 'add', address, 'dev', 'eth0']);
    execFileSync('ip', ['-n', ns.name, 'link', 'set', 'eth0', 'up']);
    // A userspace VTEP reads inner TCP checksums a kernel peer left for "hardware" over a veth.
    execFileSync('ip', ['netns', 'exec', ns.name, 'ethtool', '-K', 'eth0', 'tx', 'off'], {
      stdio: 'ignore',
    });
  }

  addNode(name = `n${this.nodes.length + 1}`): ClusterNode {
    const ns = createNetns(this.tag);
    const ip = `198.18.0.${11 + this.nodes.length}`;
    this.plug(ns, `${ip}/24`);
    execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const node = { name, ns, ip, pods: [] };
    this.nodes.push(node);
    return node;
  }

  /** Gives a node `count` pods on a cni0 bridge, from the subnet in its subnet.env. */
  addPods(node: ClusterNode, subnetEnvPath: string, count: number): Pod[] {
    const env = Object.fromEntries(
      readFileSync(subnetEnvPath, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => l.split('=') as [string, string]),
    );
    const [gateway, prefix] = env.FLANNEL_SUBNET.split('/');
    const mtu = env.FLANNEL_MTU;
    const base = gateway.split('.').map(Number);
    const n = node.ns.name;
    if (node.pods.length === 0) {
      execFileSync('ip', ['-n', n, 'link', 'add', 'cni0', 'type', 'bridge']);
      execFileSync('ip', ['-n', n, 'addr', 'add', `${gateway}/${prefix}`, 'dev', 'cni0']);
      execFileSync('ip', ['-n', n, 'link', 'set', 'cni0', 'mtu', mtu, 'up']);
    }
    const added: Pod[] = [];
    for (let k = 0; k < count; k++) {
      const index = node.pods.length + 1;
      const ns = createNetns(this.tag);
      const ip = `${base[0]}.${base[1]}.${base[2]}.${base[3] + 9 + index}`;
      const hostSide = `veth${index}`;
      execFileSync('ip', [
        'link',
        'add',
        'name',
        hostSide,
        'netns',
        n,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        ns.name,
      ]);
      execFileSync('ip', ['-n', n, 'link', 'set', hostSide, 'master', 'cni0', 'mtu', mtu, 'up']);
      execFileSync('ip', ['-n', ns.name, 'link', 'set', 'eth0', 'mtu', mtu, 'up']);
      execFileSync('ip', ['-n', ns.name, 'addr', 'add', `${ip}/${prefix}`, 'dev', 'eth0']);
      execFileSync('ip', ['-n', ns.name, 'route', 'add', 'default', 'via', gateway]);
      // No `tx off` here: a pod keeps TSO, so a weft node gets super-packets from it. Inner
      // checksums a kernel VXLAN leaves partial are finished at its node's eth0 (tx off there).
      const pod = { name: `${node.name}-pod${index}`, ns, ip, node };
      node.pods.push(pod);
      added.push(pod);
    }
    return added;
  }

  /** Whether `from` reaches `to` (one ping, short wait). */
  async reaches(from: Pod, to: Pod, timeoutSeconds = 1): Promise<boolean> {
    try {
      await from.ns.exec(['ping', '-c', '1', '-W', String(timeoutSeconds), to.ip]);
      return true;
    } catch {
      return false;
    }
  }

  get pods(): Pod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  /** Removes every namespace of the cluster (and kills what runs in them); those already gone are skipped. */
  delete(): void {
    for (const ns of [...this.pods.map((p) => p.ns), ...this.nodes.map((n) => n.ns), this.underlay])
      if (existsSync(`/run/netns/${ns.name}`)) ns.delete();
  }
}
