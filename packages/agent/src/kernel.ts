import { writeFileSync } from 'node:fs';
import {
  type Cidr,
  cidrNetwork,
  formatCidr,
  formatIp,
  parseCidr,
  tryParseIp,
  WeftError,
} from '@weft/core';
import type { Link, Rtnl } from '@weft/netlink';
import { DaemonErrorCode } from './errors.js';

/**
 * A remote node as the daemon knows it from its lease: what it has of each family (a dual-stack
 * node both, an IPv6-only node only the IPv6 fields).
 */
export interface RemoteNode {
  /** Its lease's key in the store. */
  key: string;
  /** Its IPv4 subnet, e.g. 10.244.2.0/24. */
  subnet?: string;
  /** Its IPv4 underlay address (the lease's PublicIP). */
  publicIp?: string;
  /** Its IPv4 VTEP's MAC (vxlan: BackendData.VtepMAC). */
  vtepMac?: string;
  /** Its IPv6 subnet, e.g. fd00:10:244:2::/64. */
  subnet6?: string;
  /** Its IPv6 underlay address (the lease's PublicIPv6). */
  publicIpv6?: string;
  /** Its IPv6 VTEP's MAC (vxlan: BackendV6Data.VtepMAC). */
  vtepMac6?: string;
  /** wireguard: the node's public key, from its lease's BackendData. */
  publicKey?: string;
  /** wireguard: the port its lease's BackendData names (flannel-wg's ListenPort). */
  port?: number;
  /** wireguard: the public key in its BackendV6Data (flannel-wg-v6's). */
  publicKey6?: string;
  /** wireguard: the port in its BackendV6Data (ListenPortV6). */
  port6?: number;
}

/** A remote node in one address family: what one device (flannel.1, flannel-v6.1, a route table) needs. */
export interface FamilyNode {
  key: string;
  subnet: string;
  publicIp: string;
  vtepMac?: string;
  /** wireguard: the node's public key and port, from its lease's BackendData. */
  publicKey?: string;
  port?: number;
}

/** The remote nodes that have this family, as that family's devices need them. */
export function familyNodes(nodes: readonly RemoteNode[], family: 4 | 6): FamilyNode[] {
  const out: FamilyNode[] = [];
  for (const n of nodes) {
    const subnet = family === 4 ? n.subnet : n.subnet6;
    const publicIp = family === 4 ? n.publicIp : n.publicIpv6;
    if (subnet === undefined || publicIp === undefined) continue;
    const ip = tryParseIp(publicIp);
    if (!ip || ip.family !== family) continue;
    // Canonical text, as the kernel's dumps spell it: entries compare by string.
    const node: FamilyNode = { key: n.key, subnet, publicIp: formatIp(ip) };
    const vtepMac = family === 4 ? n.vtepMac : n.vtepMac6;
    if (vtepMac) node.vtepMac = vtepMac;
    const publicKey = family === 4 ? n.publicKey : n.publicKey6;
    const port = family === 4 ? n.port : n.port6;
    if (publicKey) node.publicKey = publicKey;
    if (port) node.port = port;
    out.push(node);
  }
  return out;
}

/** The address of a node's VTEP: its subnet's first address (flannel's convention, both families). */
export function vtepAddress(subnet: string): string {
  return formatCidr(cidrNetwork(parseCidr(subnet))).split('/')[0];
}

/** Whether an address is inside a network (either family; false across families). */
export function inCidr(ip: string, cidr: Cidr): boolean {
  const a = tryParseIp(ip);
  if (!a || a.family !== cidr.family) return false;
  const host: Cidr =
    a.family === 4
      ? { family: 4, address: a.address, prefixLength: cidr.prefixLength }
      : { family: 6, address: a.address, prefixLength: cidr.prefixLength };
  return formatCidr(cidrNetwork(host)) === formatCidr(cidrNetwork(cidr));
}

/** True when `ip` is inside one of the networks directly connected to the underlay interface. */
export function onSameLink(ip: string, connected: readonly Cidr[]): boolean {
  return connected.some((c) => inCidr(ip, c));
}

/** Where the kernel programming says, at debug level, each entry it adds or removes. */
export interface DebugLog {
  debug(obj: object, msg: string): void;
}

const quiet: DebugLog = { debug() {} };

export interface KernelRoutesOptions {
  /** The cluster network (IPv4 or IPv6, the family these routes are): routes into it on the interface are ours to manage. */
  network: Cidr;
  /** The underlay interface. */
  iface: Link;
}

/**
 * Routes straight to remote nodes over the underlay (host-gw, and vxlan's DirectRouting), one
 * family per instance: `ip route replace SUBNET via PUBLIC_IP dev IFACE` (IPv6: via PublicIPv6). sync() makes the kernel hold exactly the
 * desired set: what is missing is added, what a previous run or a gone node left is removed.
 */
export class DirectRoutes {
  constructor(
    private readonly nl: Rtnl,
    private readonly options: KernelRoutesOptions,
    private readonly log: DebugLog = quiet,
  ) {}

  /** Makes the kernel hold a route to exactly these nodes (one family); counts the routes added and removed. */
  async sync(nodes: FamilyNode[]): Promise<{ added: number; removed: number }> {
    const { iface, network } = this.options;
    const want = new Map(
      nodes.map((n) => [formatCidr(cidrNetwork(parseCidr(n.subnet))), n.publicIp]),
    );
    const have = (await this.nl.routes({ family: network.family, oif: iface.index })).filter(
      (r) => r.gateway && inCidr(r.dst.split('/')[0], network),
    );
    let removed = 0;
    for (const r of have) {
      if (want.get(r.dst) !== r.gateway) {
        await this.nl.deleteRoute({ dst: r.dst, gateway: r.gateway, oif: iface.index });
        this.log.debug({ route: r.dst, via: r.gateway }, 'direct route removed');
        removed++;
      }
    }
    let added = 0;
    for (const [dst, gateway] of want) {
      if (!have.some((r) => r.dst === dst && r.gateway === gateway)) {
        await this.nl.replaceRoute({ dst, gateway, oif: iface.index });
        this.log.debug({ route: dst, via: gateway }, 'direct route programmed');
        added++;
      }
    }
    return { added, removed };
  }
}

export interface KernelVxlanOptions {
  name: string;
  vni: number;
  /** 0: the kernel's default, 8472. */
  port: number;
  publicIp: string;
  iface: Link;
  mtu: number;
  vtepMac: string;
  /** Our VTEP address (our subnet's first address), a /32 (IPv6: /128) on the device. */
  vtepAddress: string;
  /** The cluster network of the family this device carries (flannel.1: IPv4, flannel-v6.1: IPv6). */
  network: Cidr;
  gbp: boolean;
  learning: boolean;
}

/**
 * The kernel's VXLAN, programmed exactly as flannel programs it: a `flannel.<VNI>` device (no
 * learning, our VTEP MAC kept across restarts), our VTEP address as a /32, and per remote node a
 * route via its VTEP address (onlink), a permanent neighbor for that address, and an FDB entry
 * sending its VTEP MAC to its public IP. For IPv6 the same on `flannel-v6.<VNI>` over the IPv6
 * underlay (pkg/backend/vxlan): its own VTEP MAC, a /128, IPv6 routes and neighbors, FDB entries
 * to each node's PublicIPv6. sync() reconciles with what the kernel holds.
 */
export class KernelVxlan {
  link: Link | undefined;
  created = false;

  constructor(
    private readonly nl: Rtnl,
    readonly options: KernelVxlanOptions,
    private readonly log: DebugLog = quiet,
  ) {}

  /**
   * Creates (or reuses a matching) device, brings it up with our address. On a device that is
   * already right nothing is set: writing even the same MAC makes the kernel flush the device's
   * neighbors (NETDEV_CHANGEADDR), permanent ones included, and packets in flight are lost.
   */
  async setup(): Promise<Link> {
    const o = this.options;
    const { link, created } = await this.nl.ensureVxlan({
      name: o.name,
      vni: o.vni,
      local: o.publicIp,
      port: o.port || undefined,
      parentIndex: o.iface.index,
      mtu: o.mtu,
      mac: o.vtepMac,
      gbp: o.gbp,
      learning: o.learning,
    });
    this.created = created;
    if (!created) {
      const change: { mtu?: number; mac?: string } = {};
      if (link.mtu !== o.mtu) change.mtu = o.mtu;
      if (link.mac?.toLowerCase() !== o.vtepMac.toLowerCase()) change.mac = o.vtepMac;
      if (change.mtu !== undefined || change.mac !== undefined) {
        await this.nl.setLink(link.index, change);
        this.log.debug({ device: o.name, ...change }, 'device MTU or MAC corrected');
      }
    }
    const six = this.family === 6;
    // flannel sets accept_ra 0 on its devices: no router advertisement configures this one.
    if (six) disableRouterAdvertisements(o.name);
    if (!link.up) await this.nl.setLink(link.index, { up: true });
    // Only our /32 (/128): drop any other address of the family a previous run with another
    // lease left; IPv6 link-local ones stay (flannel's EnsureV6AddressOnLink).
    const bits = six ? 128 : 32;
    let haveOurs = false;
    for (const a of await this.nl.addresses(link.index)) {
      if (a.address.includes(':') !== six || (six && a.scope === 253)) continue;
      if (a.address === o.vtepAddress && a.prefixLength === bits) haveOurs = true;
      else await this.nl.deleteAddress(link.index, `${a.address}/${a.prefixLength}`);
    }
    // nodad: our own /128 is ours alone, and usable at once (no tentative second).
    if (!haveOurs)
      await this.nl.replaceAddress(link.index, `${o.vtepAddress}/${bits}`, { noDad: six });
    this.link = link;
    return link;
  }

  /** The address family the device carries (its network's). */
  get family(): 4 | 6 {
    return this.options.network.family;
  }

  /**
   * Makes the device hold exactly these nodes' routes, neighbors and FDB entries (nodes without a
   * VTEP MAC are skipped); counts the entries added and removed. Needs setup() first.
   */
  async sync(nodes: FamilyNode[]): Promise<{ added: number; removed: number }> {
    const link = this.link;
    if (!link)
      throw new WeftError(
        DaemonErrorCode.backend,
        'KernelVxlan.sync before setup: call setup() first',
      );
    const idx = link.index;
    const withMac = nodes.filter((n) => n.vtepMac);
    const wantRoutes = new Map(
      withMac.map((n) => [formatCidr(cidrNetwork(parseCidr(n.subnet))), vtepAddress(n.subnet)]),
    );
    const wantNeigh = new Map(withMac.map((n) => [vtepAddress(n.subnet), n.vtepMac!]));
    const wantFdb = new Map(withMac.map((n) => [n.vtepMac!, n.publicIp]));
    let added = 0;
    let removed = 0;

    const family = this.family;
    const routes = (await this.nl.routes({ family, oif: idx })).filter((r) => r.gateway);
    for (const r of routes) {
      if (wantRoutes.get(r.dst) !== r.gateway || !r.onlink) {
        await this.nl.deleteRoute({ dst: r.dst, gateway: r.gateway, oif: idx, onlink: r.onlink });
        this.log.debug({ route: r.dst, via: r.gateway }, 'peer route removed');
        removed++;
      }
    }
    const neighbors = await this.nl.neighbors({ family, ifindex: idx });
    for (const n of neighbors) {
      if (wantNeigh.get(n.ip) !== n.mac) {
        await this.nl.deleteNeighbor(idx, n.ip);
        this.log.debug({ neighbor: n.ip, mac: n.mac }, 'peer neighbor removed');
        removed++;
      }
    }
    const fdb = await this.nl.fdb(idx);
    for (const f of fdb) {
      if (f.dst !== undefined && wantFdb.get(f.mac) !== f.dst) {
        await this.nl.deleteFdb(idx, f.mac, f.dst);
        this.log.debug({ mac: f.mac, dst: f.dst }, 'peer FDB entry removed');
        removed++;
      }
    }
    // Neighbor and FDB first, then the route, so the first packet routed finds them (flannel's order).
    for (const [ip, mac] of wantNeigh) {
      if (!neighbors.some((n) => n.ip === ip && n.mac === mac)) {
        await this.nl.replaceNeighbor(idx, ip, mac);
        this.log.debug({ neighbor: ip, mac }, 'peer neighbor programmed');
        added++;
      }
    }
    for (const [mac, dst] of wantFdb) {
      if (!fdb.some((f) => f.mac === mac && f.dst === dst)) {
        await this.nl.replaceFdb(idx, mac, dst);
        this.log.debug({ mac, dst }, 'peer FDB entry programmed');
        added++;
      }
    }
    for (const [dst, gateway] of wantRoutes) {
      if (!routes.some((r) => r.dst === dst && r.gateway === gateway && r.onlink)) {
        await this.nl.replaceRoute({ dst, gateway, oif: idx, onlink: true });
        this.log.debug({ route: dst, via: gateway }, 'peer route programmed');
        added++;
      }
    }
    return { added, removed };
  }

  /** Removes the device (when this run created it and failed before it was used). */
  async remove(): Promise<void> {
    if (this.link) await this.nl.deleteLink(this.link.index);
  }
}

/** The kernel's answer to a VXLAN link when it has no vxlan module (rtnl_newlink: no such kind). */
const NO_VXLAN = new Set(['ERR_NETLINK_EOPNOTSUPP', 'ERR_NETLINK_EAFNOSUPPORT']);

/**
 * --vxlan-mode: whether this node programs the kernel's VXLAN, and why (for the log). `setup`
 * brings the kernel device up; in auto mode a kernel without VXLAN means userspace, while any
 * other refusal (a missing privilege, say) stays an error.
 */
export async function chooseVxlanMode(
  mode: 'kernel' | 'userspace' | 'auto',
  setup: () => Promise<unknown>,
): Promise<{ kernel: boolean; reason: string }> {
  if (mode === 'userspace') return { kernel: false, reason: '--vxlan-mode userspace' };
  try {
    await setup();
  } catch (err) {
    if (mode === 'kernel' || !(err instanceof WeftError) || !NO_VXLAN.has(err.code)) throw err;
    return { kernel: false, reason: `auto: the kernel has no VXLAN (${err.message})` };
  }
  return {
    kernel: true,
    reason: mode === 'auto' ? 'auto: the kernel has VXLAN' : '--vxlan-mode kernel',
  };
}

/** /proc/sys/net/ipv6/conf/DEV/accept_ra = 0, as flannel writes it (best effort, as flannel). */
function disableRouterAdvertisements(device: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${device}/accept_ra`, '0');
  } catch {}
}
