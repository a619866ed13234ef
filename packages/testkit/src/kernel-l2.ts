import { createNetns, type Netns } from './netns.js';

/**
 * The L2 overlay the VXLAN tutorials build by hand, on one node: a bridge (`br1`) and a kernel
 * VXLAN device (`ip link add vxlan100 type vxlan id 100 dstport 4789 local <node IP>
 * nolearning`) as its port, with an all-zeros FDB entry per peer (`bridge fdb append
 * 00:00:00:00:00:00 dev vxlan100 dst <peer IP>`): floods go to every peer, and the bridge learns
 * remote MACs on the VXLAN port.
 */
export interface KernelL2 {
  ns: Netns;
  localIp: string;
  vni: number;
  port: number;
  /** Underlay addresses of the other nodes. */
  peers: readonly string[];
  /** The bridge (default `br1`) and the VXLAN device (default `vxlan<VNI>`). */
  bridge?: string;
  device?: string;
  /** An address with prefix for the bridge itself, e.g. 10.99.0.1/24 (optional). */
  bridgeAddress?: string;
  /**
   * The VXLAN device's MTU (default 1450: a 1500-byte underlay less 50). The tutorials' command
   * leaves the kernel's 1500, which the outer packets exceed; the containers must match it.
   */
  mtu?: number;
  /** The bridge's ageing time for learned MACs (default the kernel's, 300 s). */
  ageingSeconds?: number;
  /** The peers read the datagrams in userspace (default true): see configureKernelVtep's note. */
  userspacePeer?: boolean;
}

/** Builds the tutorial's bridge + VXLAN node in `v.ns`; returns the bridge and device names. */
export async function configureKernelL2(v: KernelL2): Promise<{ bridge: string; device: string }> {
  const bridge = v.bridge ?? 'br1';
  const device = v.device ?? `vxlan${v.vni}`.slice(0, 15);
  const lines = [
    // Over a veth the kernel leaves the inner TCP checksum for "hardware" to fill; a userspace
    // peer would read the partial sum. A real NIC computes it.
    v.userspacePeer === false ? '' : 'ethtool -K veth0 tx off >/dev/null',
    `ip link add ${bridge} type bridge${v.ageingSeconds === undefined ? '' : ` ageing_time ${Math.round(v.ageingSeconds * 100)}`}`,
    `ip link add ${device} type vxlan id ${v.vni} dstport ${v.port} local ${v.localIp} nolearning`,
    `ip link set ${device} mtu ${v.mtu ?? 1450} master ${bridge} up`,
    ...v.peers.map((p) => `bridge fdb append 00:00:00:00:00:00 dev ${device} dst ${p}`),
    v.bridgeAddress ? `ip addr add ${v.bridgeAddress} dev ${bridge}` : '',
    `ip link set ${bridge} up`,
  ].filter(Boolean);
  await v.ns.sh(lines.join('\n'));
  return { bridge, device };
}

/** A container: its own namespace, a veth (`eth0` inside) whose other end is a port of `bridge` in `node`. */
export interface Container {
  ns: Netns;
  address: string;
  mac: string;
  /** The veth end on the node's bridge. */
  hostSide: string;
}

let containers = 0;

/**
 * Makes a container behind `bridge` in `node`, addressed `cidr` (e.g. 10.99.0.11/24). IPv6 is
 * off in it (no router solicitations or MLD reports to keep MACs fresh in the FDBs) unless
 * `cidr6` gives it an IPv6 address (added without duplicate address detection). The namespace
 * is tagged `tag`: sweepNetns(tag) removes it.
 */
export async function addContainer(
  node: Netns,
  bridge: string,
  tag: string,
  cidr: string,
  options: { mtu?: number; cidr6?: string } = {},
): Promise<Container> {
  const ns = createNetns(tag);
  const hostSide = `vc${process.pid % 10000}x${containers++}`.slice(0, 15);
  try {
    await node.sh(
      [
        `ip link add ${hostSide} type veth peer name eth0 netns ${ns.name}`,
        `ip link set ${hostSide} master ${bridge} up`,
        options.mtu ? `ip link set ${hostSide} mtu ${options.mtu}` : '',
      ]
        .filter(Boolean)
        .join('\n'),
    );
    await ns.sh(
      [
        options.cidr6
          ? ''
          : 'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1',
        options.mtu ? `ip link set eth0 mtu ${options.mtu}` : '',
        `ip addr add ${cidr} dev eth0`,
        options.cidr6 ? `ip addr add ${options.cidr6} dev eth0 nodad` : '',
        'ip link set eth0 up',
      ]
        .filter(Boolean)
        .join('\n'),
    );
    const mac = (await ns.exec(['cat', '/sys/class/net/eth0/address'])).stdout.trim();
    return { ns, address: cidr.split('/')[0], mac, hostSide };
  } catch (err) {
    ns.delete();
    throw err;
  }
}

/** `bridge fdb show br <bridge>`: the MACs the bridge learned (not its own or static ones), with their port. */
export async function bridgeLearned(
  node: Netns,
  bridge: string,
): Promise<{ mac: string; dev: string }[]> {
  const out = (await node.exec(['bridge', '-j', 'fdb', 'show', 'br', bridge])).stdout;
  const entries = JSON.parse(out) as {
    mac: string;
    ifname: string;
    state?: string;
    flags?: string[];
  }[];
  return entries
    .filter((e) => e.state !== 'permanent' && e.state !== 'static' && e.mac !== '00:00:00:00:00:00')
    .map((e) => ({ mac: e.mac, dev: e.ifname }));
}
