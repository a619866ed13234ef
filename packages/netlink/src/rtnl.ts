import { getSystemErrorMap } from 'node:util';
import {
  type Cidr,
  formatIp,
  formatMac,
  type IpAddress,
  parseCidr,
  parseIp,
  parseMac,
  WeftError,
} from '@weft/core';
import { NetlinkSocket } from '@weft/tun';
import {
  AddressFamily,
  IfaAttr,
  IfaFlag,
  Iff,
  IflaAttr,
  IflaInfo,
  IflaVxlan,
  NdaAttr,
  NlmFlag,
  NlmsgType,
  Ntf,
  Nud,
  RTNH_F_ONLINK,
  RtaAttr,
  RtmType,
  RtnType,
  RtProtocol,
  RtScope,
  RtTable,
} from './constants.js';
import {
  type Attr,
  Attrs,
  attr,
  buildMessage,
  type Message,
  parseError,
  parseMessages,
  requirePayload,
} from './message.js';

/** A network interface as the kernel reports it. */
export interface Link {
  index: number;
  name: string;
  flags: number;
  up: boolean;
  mtu?: number;
  mac?: string;
  /** IFLA_INFO_KIND: vxlan, bridge, veth, tun, ... */
  kind?: string;
  vxlan?: VxlanInfo;
}

/** A VXLAN device's settings, as the kernel reports them (IFLA_INFO_DATA). */
export interface VxlanInfo {
  vni: number;
  local?: string;
  port?: number;
  learning?: boolean;
  /** The underlay device's index (IFLA_VXLAN_LINK). */
  parentIndex?: number;
  gbp: boolean;
}

/** A VXLAN device to create, as flannel creates flannel.1 (see {@link Rtnl.createVxlan}). */
export interface VxlanSpec {
  name: string;
  vni: number;
  /** The local underlay address (flannel: the node's public IP). */
  local?: string;
  /** UDP port; 0 or undefined: the kernel's default, 8472. */
  port?: number;
  /** Default false, as flannel (nolearning). */
  learning?: boolean;
  /** The underlay interface's index (flannel's --iface). */
  parentIndex?: number;
  mtu?: number;
  mac?: string;
  gbp?: boolean;
}

/** An address on an interface (`ip addr`). */
export interface Address {
  index: number;
  address: string;
  prefixLength: number;
  /** IFA_F_* (IfaFlag): tentative while IPv6 duplicate address detection runs, deprecated, ... */
  flags: number;
  /** RT_SCOPE_*: universe (0) for a global address, link (253) for fe80::/10. */
  scope: number;
}

/** A route (`ip route`): destination, gateway or output interface, table, type and flags. */
export interface Route {
  /** Destination network, e.g. 10.244.2.0/24. */
  dst: string;
  gateway?: string;
  /** Output interface index. */
  oif?: number;
  /** Default main (254). */
  table?: number;
  onlink?: boolean;
  protocol?: number;
  scope?: number;
  priority?: number;
  /** RtnType: unicast (default) or blackhole, unreachable, ... */
  type?: number;
  /** The source address the kernel picks (what `ip route get` says after `src`). */
  prefsrc?: string;
}

/** A neighbor (ARP/ND) entry (`ip neigh`). */
export interface Neighbor {
  ifindex: number;
  ip: string;
  mac?: string;
  state: number;
  flags: number;
}

/** A bridge FDB entry of a device (`bridge fdb`): for VXLAN, the remote VTEP of a MAC. */
export interface FdbEntry {
  ifindex: number;
  mac: string;
  /** The remote VTEP (NDA_DST), for VXLAN devices. */
  dst?: string;
  state: number;
  flags: number;
}

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(RtmType).map(([k, v]) => [v, `RTM_${k.toUpperCase()}`]),
);

function ipBytes(ip: IpAddress): Buffer {
  if (ip.family === 6) return Buffer.from(ip.address);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ip.address);
  return b;
}

function ipFrom(b: Buffer | undefined): string | undefined {
  if (!b) return undefined;
  if (b.length === 4) return formatIp({ family: 4, address: b.readUInt32BE(0) });
  if (b.length === 16) return formatIp({ family: 6, address: Uint8Array.from(b) });
  return undefined;
}

function macBytes(mac: string): Buffer {
  const b = Buffer.alloc(6);
  b.writeUIntBE(parseMac(mac), 0, 6);
  return b;
}

function macFrom(b: Buffer | undefined): string | undefined {
  return b && b.length === 6 ? formatMac(b.readUIntBE(0, 6)) : undefined;
}

function family(ip: IpAddress | Cidr): number {
  return ip.family === 4 ? AddressFamily.inet : AddressFamily.inet6;
}

/** struct ifinfomsg: family, pad, type u16, index s32, flags u32, change u32. */
function ifinfomsg(index = 0, flags = 0, change = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

/** struct ifaddrmsg: family, prefixlen, flags, scope, index u32. */
function ifaddrmsg(fam: number, prefixLength: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = fam;
  b[1] = prefixLength;
  b.writeUInt32LE(index, 4);
  return b;
}

/** struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags u32. */
function rtmsg(
  fam: number,
  dstLen: number,
  table: number,
  protocol: number,
  scope: number,
  type: number,
  flags: number,
): Buffer {
  const b = Buffer.alloc(12);
  b[0] = fam;
  b[1] = dstLen;
  b[4] = table < 256 ? table : RtTable.main;
  b[5] = protocol;
  b[6] = scope;
  b[7] = type;
  b.writeUInt32LE(flags >>> 0, 8);
  return b;
}

/** struct ndmsg: family, pad, pad u16, ifindex s32, state u16, flags u8, type u8. */
function ndmsg(fam: number, ifindex: number, state: number, flags: number, type = 0): Buffer {
  const b = Buffer.alloc(12);
  b[0] = fam;
  b.writeInt32LE(ifindex, 4);
  b.writeUInt16LE(state, 8);
  b[10] = flags;
  b[11] = type;
  return b;
}

/** Parses an RTM_NEWLINK message (a dump's or a notification's). */
export function parseLink(msg: Message): Link {
  requirePayload(msg, 16, 'link');
  const p = msg.payload;
  const index = p.readInt32LE(4);
  const flags = p.readUInt32LE(8);
  const a = new Attrs(p, 16);
  const link: Link = {
    index,
    name: a.string(IflaAttr.ifname) ?? '',
    flags,
    up: (flags & Iff.up) !== 0,
  };
  const mtu = a.u32(IflaAttr.mtu);
  if (mtu !== undefined) link.mtu = mtu;
  const mac = macFrom(a.get(IflaAttr.address));
  if (mac) link.mac = mac;
  const info = a.nested(IflaAttr.linkinfo);
  if (info) {
    link.kind = info.string(IflaInfo.kind);
    const data = info.nested(IflaInfo.data);
    if (link.kind === 'vxlan' && data) {
      link.vxlan = {
        vni: data.u32(IflaVxlan.id) ?? 0,
        local: ipFrom(data.get(IflaVxlan.local)) ?? ipFrom(data.get(IflaVxlan.local6)),
        port: data.be16(IflaVxlan.port),
        learning:
          data.u8(IflaVxlan.learning) === undefined ? undefined : data.u8(IflaVxlan.learning) === 1,
        parentIndex: data.u32(IflaVxlan.link),
        gbp: data.has(IflaVxlan.gbp),
      };
    }
  }
  return link;
}

function parseAddress(msg: Message): Address {
  requirePayload(msg, 8, 'address');
  const p = msg.payload;
  const a = new Attrs(p, 8);
  return {
    index: p.readUInt32LE(4),
    prefixLength: p[1],
    address: ipFrom(a.get(IfaAttr.local)) ?? ipFrom(a.get(IfaAttr.address)) ?? '',
    // IFA_FLAGS carries all 32 bits when present; ifa_flags only the low 8.
    flags: a.u32(IfaAttr.flags) ?? p[2],
    scope: p[3],
  };
}

export function parseRouteMessage(msg: Message): Route {
  requirePayload(msg, 12, 'route');
  const p = msg.payload;
  const a = new Attrs(p, 12);
  const fam = p[0];
  const dst = ipFrom(a.get(RtaAttr.dst)) ?? (fam === AddressFamily.inet6 ? '::' : '0.0.0.0');
  const route: Route = {
    dst: `${dst}/${p[1]}`,
    table: a.u32(RtaAttr.table) ?? p[4],
    protocol: p[5],
    scope: p[6],
    onlink: (p.readUInt32LE(8) & RTNH_F_ONLINK) !== 0,
    type: p[7],
  };
  const prefsrc = ipFrom(a.get(RtaAttr.prefsrc));
  if (prefsrc) route.prefsrc = prefsrc;
  const gw = ipFrom(a.get(RtaAttr.gateway));
  if (gw) route.gateway = gw;
  const oif = a.u32(RtaAttr.oif);
  if (oif !== undefined) route.oif = oif;
  const priority = a.u32(RtaAttr.priority);
  if (priority !== undefined) route.priority = priority;
  return route;
}

export function parseNeighborMessage(msg: Message): { fam: number; n: Neighbor; dst?: string } {
  requirePayload(msg, 12, 'neighbor');
  const p = msg.payload;
  const a = new Attrs(p, 12);
  return {
    fam: p[0],
    n: {
      ifindex: p.readInt32LE(4),
      state: p.readUInt16LE(8),
      flags: p[10],
      ip: ipFrom(a.get(NdaAttr.dst)) ?? '',
      mac: macFrom(a.get(NdaAttr.lladdr)),
    },
  };
}

/** What Rtnl needs of a netlink socket: @weft/tun's NetlinkSocket has this shape. */
export interface NetlinkTransport {
  /** Sends one netlink message to the kernel. */
  send(message: Uint8Array): void;
  /** Starts delivering every received datagram to `onMessage`, errors to `onError`. */
  onMessage(onMessage: (datagram: Buffer) => void, onError?: (err: WeftError) => void): void;
  /** Closes the socket. */
  close(): void;
}

interface Pending {
  what: string;
  dump: boolean;
  messages: Message[];
  resolve: (messages: Message[]) => void;
  reject: (err: Error) => void;
}

/**
 * An rtnetlink client over @weft/tun's netlink socket: each request carries a sequence number
 * and resolves on the kernel's ACK (or the end of a dump); a NLMSG_ERROR becomes a WeftError
 * such as `ERR_NETLINK_EEXIST` with the kernel's own explanation when it gives one.
 */
export class Rtnl {
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly pending = new Map<number, Pending>();

  private constructor(private readonly socket: NetlinkTransport) {
    socket.onMessage(
      (datagram) => this.receive(datagram),
      (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      },
    );
  }

  /** Opens rtnetlink in this process's namespace, or in `netns` (a name under /run/netns, or a path). */
  static open(options: { netns?: string } = {}): Rtnl {
    return new Rtnl(NetlinkSocket.open({ netns: options.netns }));
  }

  /** Runs over any transport with the socket's shape (a recording one in tests, say). */
  static over(transport: NetlinkTransport): Rtnl {
    return new Rtnl(transport);
  }

  private receive(datagram: Buffer): void {
    let messages: Message[];
    try {
      messages = parseMessages(datagram);
    } catch (err) {
      // Which request it answered is unknowable: fail them all rather than leave one hanging.
      for (const p of this.pending.values()) p.reject(err as Error);
      this.pending.clear();
      return;
    }
    for (const msg of messages) {
      const p = this.pending.get(msg.seq);
      if (!p) continue;
      if (msg.type === NlmsgType.error) {
        this.pending.delete(msg.seq);
        let reply: { errno: number; text?: string };
        try {
          reply = parseError(msg);
        } catch (err) {
          p.reject(err as Error);
          continue;
        }
        if (reply.errno === 0) p.resolve(p.messages);
        else p.reject(netlinkError(p.what, reply.errno, reply.text));
      } else if (msg.type === NlmsgType.done) {
        this.pending.delete(msg.seq);
        p.resolve(p.messages);
      } else {
        p.messages.push(msg);
        if (!p.dump && !(msg.flags & NlmFlag.multi)) {
          this.pending.delete(msg.seq);
          p.resolve(p.messages);
        }
      }
    }
  }

  /** The last dump sent: the kernel runs one dump per socket at a time (a second is EBUSY). */
  private dumping: Promise<unknown> = Promise.resolve();

  /**
   * Sends one request; a change resolves on the ACK, a dump with every message up to DONE.
   * Dumps wait for the one before them to finish: callers may ask for several at once.
   */
  request(
    type: number,
    flags: number,
    header: Uint8Array,
    attrs: Attr[],
    what: string,
  ): Promise<Message[]> {
    // GET requests (RTM_GETLINK, GETADDR, GETROUTE, GETNEIGH are 2 mod 4) with NLM_F_DUMP end in DONE.
    const dump = (flags & NlmFlag.dump) === NlmFlag.dump && type % 4 === 2;
    if (dump) {
      const run = () => this.send(type, flags, header, attrs, what, true);
      const next = this.dumping.then(run, run);
      this.dumping = next.catch(() => undefined);
      return next;
    }
    return this.send(type, flags, header, attrs, what, false);
  }

  private send(
    type: number,
    flags: number,
    header: Uint8Array,
    attrs: Attr[],
    what: string,
    dump: boolean,
  ): Promise<Message[]> {
    this.seq = (this.seq + 1) & 0x7fffffff;
    const seq = this.seq;
    const message = buildMessage(
      type,
      flags | NlmFlag.request | (dump ? 0 : NlmFlag.ack),
      seq,
      header,
      attrs,
    );
    return new Promise((resolve, reject) => {
      this.pending.set(seq, {
        what: `${NAMES[type] ?? type} ${what}`,
        dump,
        messages: [],
        resolve,
        reject,
      });
      try {
        this.socket.send(message);
      } catch (err) {
        this.pending.delete(seq);
        reject(err);
      }
    });
  }

  // Links

  /** Every link (`ip link show`). */
  async links(): Promise<Link[]> {
    return (await this.request(RtmType.getLink, NlmFlag.dump, ifinfomsg(), [], 'dump')).map(
      parseLink,
    );
  }

  /** The link named `name`, or undefined when there is none. */
  async link(name: string): Promise<Link | undefined> {
    try {
      const [msg] = await this.request(
        RtmType.getLink,
        0,
        ifinfomsg(),
        [attr.string(IflaAttr.ifname, name)],
        name,
      );
      return msg ? parseLink(msg) : undefined;
    } catch (err) {
      if (err instanceof WeftError && err.code === 'ERR_NETLINK_ENODEV') return undefined;
      throw err;
    }
  }

  /** Creates a VXLAN device (`ip link add NAME type vxlan id VNI local IP dstport PORT nolearning dev PARENT`). */
  async createVxlan(spec: VxlanSpec): Promise<Link> {
    const data: Attr[] = [attr.u32(IflaVxlan.id, spec.vni)];
    if (spec.local) {
      const ip = parseIp(spec.local);
      data.push(attr.bytes(ip.family === 4 ? IflaVxlan.local : IflaVxlan.local6, ipBytes(ip)));
    }
    if (spec.parentIndex) data.push(attr.u32(IflaVxlan.link, spec.parentIndex));
    if (spec.port) data.push(attr.be16(IflaVxlan.port, spec.port));
    data.push(attr.u8(IflaVxlan.learning, spec.learning ? 1 : 0));
    if (spec.gbp) data.push(attr.flag(IflaVxlan.gbp));
    const attrs: Attr[] = [attr.string(IflaAttr.ifname, spec.name)];
    if (spec.mtu) attrs.push(attr.u32(IflaAttr.mtu, spec.mtu));
    if (spec.mac) attrs.push(attr.bytes(IflaAttr.address, macBytes(spec.mac)));
    attrs.push(
      attr.nested(IflaAttr.linkinfo, [
        attr.bareString(IflaInfo.kind, 'vxlan'),
        attr.nested(IflaInfo.data, data),
      ]),
    );
    await this.request(
      RtmType.newLink,
      NlmFlag.create | NlmFlag.excl,
      ifinfomsg(),
      attrs,
      spec.name,
    );
    const link = await this.link(spec.name);
    if (!link)
      throw new WeftError(
        'ERR_NETLINK_ENODEV',
        `RTM_NEWLINK ${spec.name}: created, then not found`,
      );
    return link;
  }

  /**
   * The VXLAN device flannel wants, reusing one that already matches and replacing one that
   * conflicts (another VNI, address, port or parent), as flannel's ensureLink does.
   */
  async ensureVxlan(spec: VxlanSpec): Promise<{ link: Link; created: boolean }> {
    const existing = await this.link(spec.name);
    if (existing) {
      const v = existing.vxlan;
      const matches =
        existing.kind === 'vxlan' &&
        v !== undefined &&
        v.vni === spec.vni &&
        (spec.local === undefined || v.local === formatIp(parseIp(spec.local))) &&
        (v.port ?? 8472) === (spec.port || 8472) &&
        (spec.parentIndex === undefined || v.parentIndex === spec.parentIndex) &&
        v.gbp === (spec.gbp ?? false);
      if (matches) return { link: existing, created: false };
      await this.deleteLink(existing.index);
    }
    return { link: await this.createVxlan(spec), created: true };
  }

  /** Changes a link: up or down, MTU, MAC. */
  async setLink(
    index: number,
    change: { up?: boolean; mtu?: number; mac?: string },
  ): Promise<void> {
    const attrs: Attr[] = [];
    if (change.mtu !== undefined) attrs.push(attr.u32(IflaAttr.mtu, change.mtu));
    if (change.mac !== undefined) attrs.push(attr.bytes(IflaAttr.address, macBytes(change.mac)));
    const header =
      change.up === undefined ? ifinfomsg(index) : ifinfomsg(index, change.up ? Iff.up : 0, Iff.up);
    await this.request(RtmType.newLink, 0, header, attrs, `index ${index}`);
  }

  /** Deletes a link by index (`ip link del`). */
  async deleteLink(index: number): Promise<void> {
    await this.request(RtmType.delLink, 0, ifinfomsg(index), [], `index ${index}`);
  }

  // Addresses

  /** Every address, or those of one interface (`ip addr show`). */
  async addresses(index?: number): Promise<Address[]> {
    const all = (
      await this.request(RtmType.getAddr, NlmFlag.dump, ifaddrmsg(0, 0, 0), [], 'dump')
    ).map(parseAddress);
    return index === undefined ? all : all.filter((a) => a.index === index);
  }

  /**
   * Adds (or keeps) an address: `ip addr replace 10.244.1.0/32 dev INDEX`; `noDad` (IPv6) is
   * iproute2's `nodad`: usable at once, without duplicate address detection's tentative second.
   */
  async replaceAddress(
    index: number,
    cidr: string,
    options: { noDad?: boolean } = {},
  ): Promise<void> {
    const c = parseCidr(cidr, { allowHostBits: true });
    const ip = ipBytes(
      c.family === 4 ? { family: 4, address: c.address } : { family: 6, address: c.address },
    );
    const attrs = [attr.bytes(IfaAttr.local, ip), attr.bytes(IfaAttr.address, ip)];
    const header = ifaddrmsg(family(c), c.prefixLength, index);
    if (options.noDad) header[2] = IfaFlag.nodad;
    await this.request(
      RtmType.newAddr,
      NlmFlag.create | NlmFlag.replace,
      header,
      attrs,
      `${cidr} on index ${index}`,
    );
  }

  /** Removes an address from an interface (`ip addr del CIDR dev ...`). */
  async deleteAddress(index: number, cidr: string): Promise<void> {
    const c = parseCidr(cidr, { allowHostBits: true });
    const ip = ipBytes(
      c.family === 4 ? { family: 4, address: c.address } : { family: 6, address: c.address },
    );
    await this.request(
      RtmType.delAddr,
      0,
      ifaddrmsg(family(c), c.prefixLength, index),
      [attr.bytes(IfaAttr.local, ip)],
      `${cidr} on index ${index}`,
    );
  }

  // Routes

  /** Routes of a table (default main), optionally only those out of one interface. */
  async routes(filter: { family?: 4 | 6; table?: number; oif?: number } = {}): Promise<Route[]> {
    const fam =
      filter.family === 6
        ? AddressFamily.inet6
        : filter.family === 4
          ? AddressFamily.inet
          : AddressFamily.unspec;
    const all = (
      await this.request(RtmType.getRoute, NlmFlag.dump, rtmsg(fam, 0, 0, 0, 0, 0, 0), [], 'dump')
    ).map(parseRouteMessage);
    const table = filter.table ?? RtTable.main;
    return all.filter(
      (r) => r.table === table && (filter.oif === undefined || r.oif === filter.oif),
    );
  }

  private routeMessage(route: Route): { header: Buffer; attrs: Attr[]; what: string } {
    const dst = parseCidr(route.dst);
    const attrs: Attr[] = [
      attr.bytes(
        RtaAttr.dst,
        ipBytes(
          dst.family === 4
            ? { family: 4, address: dst.address }
            : { family: 6, address: dst.address },
        ),
      ),
    ];
    if (route.gateway) {
      const gw = parseIp(route.gateway);
      if (gw.family !== dst.family)
        throw new WeftError(
          'ERR_NETLINK_FAMILY',
          `route ${route.dst}: gateway ${route.gateway} is another address family`,
        );
      attrs.push(attr.bytes(RtaAttr.gateway, ipBytes(gw)));
    }
    if (route.oif !== undefined) attrs.push(attr.u32(RtaAttr.oif, route.oif));
    if (route.priority !== undefined) attrs.push(attr.u32(RtaAttr.priority, route.priority));
    const table = route.table ?? RtTable.main;
    if (table >= 256) attrs.push(attr.u32(RtaAttr.table, table));
    const type = route.type ?? RtnType.unicast;
    const scope =
      route.scope ?? (route.gateway || type !== RtnType.unicast ? RtScope.universe : RtScope.link);
    const header = rtmsg(
      family(dst),
      dst.prefixLength,
      table,
      route.protocol ?? RtProtocol.boot,
      scope,
      type,
      route.onlink ? RTNH_F_ONLINK : 0,
    );
    return { header, attrs, what: `${route.dst}${route.gateway ? ` via ${route.gateway}` : ''}` };
  }

  /** `ip route replace DST [via GW] dev OIF [onlink]`. */
  async replaceRoute(route: Route): Promise<void> {
    const m = this.routeMessage(route);
    await this.request(
      RtmType.newRoute,
      NlmFlag.create | NlmFlag.replace,
      m.header,
      m.attrs,
      m.what,
    );
  }

  /** `ip route add ...`: fails with ERR_NETLINK_EEXIST when a route for the prefix exists. */
  async addRoute(route: Route): Promise<void> {
    const m = this.routeMessage(route);
    await this.request(RtmType.newRoute, NlmFlag.create | NlmFlag.excl, m.header, m.attrs, m.what);
  }

  /** `ip route get IP`: the route the kernel would use, with its output interface and source. */
  async routeGet(ip: string): Promise<Route | undefined> {
    const addr = parseIp(ip);
    const [msg] = await this.request(
      RtmType.getRoute,
      0,
      rtmsg(family(addr), addr.family === 4 ? 32 : 128, 0, 0, 0, 0, 0),
      [attr.bytes(RtaAttr.dst, ipBytes(addr))],
      `get ${ip}`,
    );
    return msg ? parseRouteMessage(msg) : undefined;
  }

  /** Deletes the route matching what `route` gives (`ip route del`). */
  async deleteRoute(route: Route): Promise<void> {
    const m = this.routeMessage(route);
    // Delete matches on what is given: clear scope so any scope matches (RT_SCOPE_NOWHERE).
    m.header[6] = RtScope.nowhere;
    await this.request(RtmType.delRoute, 0, m.header, m.attrs, m.what);
  }

  // Neighbors (ARP/ND) and the FDB (AF_BRIDGE neighbors)

  /** Neighbor entries, of one interface or family if given (`ip neigh show`). */
  async neighbors(filter: { ifindex?: number; family?: 4 | 6 } = {}): Promise<Neighbor[]> {
    const fam =
      filter.family === 6
        ? AddressFamily.inet6
        : filter.family === 4
          ? AddressFamily.inet
          : AddressFamily.unspec;
    const all = (
      await this.request(RtmType.getNeigh, NlmFlag.dump, ndmsg(fam, 0, 0, 0), [], 'dump')
    ).map(parseNeighborMessage);
    return all
      .filter((x) => x.fam === AddressFamily.inet || x.fam === AddressFamily.inet6)
      .map((x) => x.n)
      .filter((n) => filter.ifindex === undefined || n.ifindex === filter.ifindex);
  }

  /** `ip neigh replace IP lladdr MAC dev IFINDEX nud permanent` (flannel's AddARP). */
  async replaceNeighbor(
    ifindex: number,
    ip: string,
    mac: string,
    state: number = Nud.permanent,
  ): Promise<void> {
    const addr = parseIp(ip);
    await this.request(
      RtmType.newNeigh,
      NlmFlag.create | NlmFlag.replace,
      ndmsg(family(addr), ifindex, state, 0, RtnType.unicast),
      [attr.bytes(NdaAttr.dst, ipBytes(addr)), attr.bytes(NdaAttr.lladdr, macBytes(mac))],
      `${ip} lladdr ${mac} on index ${ifindex}`,
    );
  }

  /** Deletes a neighbor entry (`ip neigh del IP dev ...`). */
  async deleteNeighbor(ifindex: number, ip: string): Promise<void> {
    const addr = parseIp(ip);
    await this.request(
      RtmType.delNeigh,
      0,
      ndmsg(family(addr), ifindex, 0, 0),
      [attr.bytes(NdaAttr.dst, ipBytes(addr))],
      `${ip} on index ${ifindex}`,
    );
  }

  /** The FDB of a device (`bridge fdb show dev NAME`). */
  async fdb(ifindex: number): Promise<FdbEntry[]> {
    const msgs = await this.request(
      RtmType.getNeigh,
      NlmFlag.dump,
      ndmsg(AddressFamily.bridge, 0, 0, 0),
      [],
      'fdb dump',
    );
    return msgs
      .map((m) => {
        requirePayload(m, 12, 'fdb');
        const p = m.payload;
        const a = new Attrs(p, 12);
        return {
          ifindex: p.readInt32LE(4),
          state: p.readUInt16LE(8),
          flags: p[10],
          mac: macFrom(a.get(NdaAttr.lladdr)) ?? '',
          dst: ipFrom(a.get(NdaAttr.dst)),
        };
      })
      .filter((e) => e.ifindex === ifindex && p0(e));
  }

  private fdbMessage(ifindex: number, mac: string, dst: string): { header: Buffer; attrs: Attr[] } {
    return {
      // iproute2's `bridge fdb ... self permanent` state; a VXLAN FDB entry is never resolved by ARP.
      header: ndmsg(AddressFamily.bridge, ifindex, Nud.permanent | Nud.noarp, Ntf.self),
      attrs: [
        attr.bytes(NdaAttr.lladdr, macBytes(mac)),
        attr.bytes(NdaAttr.dst, ipBytes(parseIp(dst))),
      ],
    };
  }

  /** `bridge fdb append MAC dev IFINDEX dst DST self permanent` (a destination added to a MAC's list). */
  async appendFdb(ifindex: number, mac: string, dst: string): Promise<void> {
    const m = this.fdbMessage(ifindex, mac, dst);
    await this.request(
      RtmType.newNeigh,
      NlmFlag.create | NlmFlag.append,
      m.header,
      m.attrs,
      `${mac} dst ${dst} on index ${ifindex}`,
    );
  }

  /** `bridge fdb replace MAC dev IFINDEX dst DST self permanent` (flannel's AddFDB). */
  async replaceFdb(ifindex: number, mac: string, dst: string): Promise<void> {
    const m = this.fdbMessage(ifindex, mac, dst);
    await this.request(
      RtmType.newNeigh,
      NlmFlag.create | NlmFlag.replace,
      m.header,
      m.attrs,
      `${mac} dst ${dst} on index ${ifindex}`,
    );
  }

  /** Deletes an FDB entry (`bridge fdb del MAC dev ... dst DST`). */
  async deleteFdb(ifindex: number, mac: string, dst: string): Promise<void> {
    const m = this.fdbMessage(ifindex, mac, dst);
    await this.request(
      RtmType.delNeigh,
      0,
      m.header,
      m.attrs,
      `${mac} dst ${dst} on index ${ifindex}`,
    );
  }

  /** Closes the socket; requests in flight fail with ERR_NETLINK_CLOSED. */
  close(): void {
    for (const p of this.pending.values())
      p.reject(new WeftError('ERR_NETLINK_CLOSED', `${p.what}: the netlink socket was closed`));
    this.pending.clear();
    this.socket.close();
  }
}

/** FDB dumps include entries of every kind; a VXLAN device's own have a MAC. */
function p0(e: { mac: string }): boolean {
  return e.mac !== '';
}

const ERRNO = new Map(getSystemErrorMap());
// Linux's 95 is both ENOTSUP and EOPNOTSUPP; libuv names it ENOTSUP ("on socket"), but what
// rtnetlink means by it (an unknown link kind, an unsupported operation) is EOPNOTSUPP.
ERRNO.set(-95, ['EOPNOTSUPP', 'operation not supported']);

/** A NLMSG_ERROR as a WeftError: `ERR_NETLINK_EEXIST`, "RTM_NEWLINK flannel.1: File exists (EEXIST)". */
export function netlinkError(what: string, errno: number, text?: string): WeftError {
  const [name, lower] = ERRNO.get(-errno) ?? [`E${errno}`, `error ${errno}`];
  const description = lower.charAt(0).toUpperCase() + lower.slice(1);
  const hint = name === 'EPERM' ? ': needs CAP_NET_ADMIN (run as root)' : '';
  return new WeftError(
    `ERR_NETLINK_${name}`,
    `${what}: ${description} (${name})${text ? `: ${text}` : ''}${hint}`,
  );
}
