import { formatIp, parseCidr, parseIp, WeftError } from '@weft/core';
import { NetlinkSocket } from '@weft/tun';
import { NlmFlag, NlmsgType } from './constants.js';
import {
  type Attr,
  Attrs,
  attr,
  buildMessage,
  type Message,
  parseError,
  parseMessages,
} from './message.js';
import { type NetlinkTransport, netlinkError, type Rtnl } from './rtnl.js';

/*
 * The kernel's WireGuard over generic netlink (include/uapi/linux/wireguard.h): family
 * "wireguard", version 1; WG_CMD_SET_DEVICE configures a device made with `ip link add ... type
 * wireguard`, WG_CMD_GET_DEVICE (a dump) reads it back, as `wg` and flannel's wgctrl do.
 */
const NETLINK_GENERIC = 16;
const GENL_ID_CTRL = 0x10;
const CTRL_CMD_GETFAMILY = 3;
const CTRL_ATTR_FAMILY_ID = 1;
const CTRL_ATTR_FAMILY_NAME = 2;
/** The generic netlink family name of the kernel's WireGuard. */
export const WG_GENL_NAME = 'wireguard';
const WG_GENL_VERSION = 1;
const WgCmd = { getDevice: 0, setDevice: 1 } as const;
/** WireGuard device attributes (WGDEVICE_A_*, linux/wireguard.h). */
export const WgDevice = {
  ifindex: 1,
  ifname: 2,
  privateKey: 3,
  publicKey: 4,
  flags: 5,
  listenPort: 6,
  fwmark: 7,
  peers: 8,
} as const;
const WGDEVICE_F_REPLACE_PEERS = 1;
/** WireGuard peer attributes (WGPEER_A_*). */
export const WgPeer = {
  publicKey: 1,
  presharedKey: 2,
  flags: 3,
  endpoint: 4,
  persistentKeepaliveInterval: 5,
  lastHandshakeTime: 6,
  rxBytes: 7,
  txBytes: 8,
  allowedIps: 9,
  protocolVersion: 10,
} as const;
/** WireGuard peer flags (WGPEER_F_*). */
export const WgPeerFlag = { removeMe: 1, replaceAllowedIps: 2, updateOnly: 4 } as const;
/** WireGuard allowed-IP attributes (WGALLOWEDIP_A_*). */
export const WgAllowedIp = { family: 1, ipaddr: 2, cidrMask: 3 } as const;
const AF_INET = 2;
const AF_INET6 = 10;

/** A peer to configure on a kernel WireGuard device, as `wg set` takes one. */
export interface KernelWireguardPeer {
  /** 32 bytes. */
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: { address: string; port: number };
  persistentKeepaliveSeconds?: number;
  allowedIps?: string[];
  /** AllowedIPs replace the peer's (wgctrl's ReplaceAllowedIPs, what flannel asks). */
  replaceAllowedIps?: boolean;
  remove?: boolean;
}

/** A kernel WireGuard device's configuration (WG_CMD_SET_DEVICE). */
export interface KernelWireguardConfig {
  privateKey?: Uint8Array;
  listenPort?: number;
  /** Every peer not listed goes (wgctrl's ReplacePeers). */
  replacePeers?: boolean;
  peers?: KernelWireguardPeer[];
}

/** A kernel WireGuard device as WG_CMD_GET_DEVICE reports it (`wg show`). */
export interface KernelWireguardDevice {
  ifindex: number;
  ifname: string;
  publicKey?: Uint8Array;
  listenPort: number;
  peers: {
    publicKey: Uint8Array;
    endpoint?: string;
    allowedIps: string[];
    persistentKeepaliveSeconds: number;
    lastHandshakeSeconds: number;
    rxBytes: number;
    txBytes: number;
  }[];
}

/** struct sockaddr_in / sockaddr_in6 for WGPEER_A_ENDPOINT (port and address in network order). */
export function sockaddr(address: string, port: number): Uint8Array {
  const ip = parseIp(address);
  if (ip.family === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    b.writeUInt32BE(ip.address, 4);
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  b.set(ip.address, 8);
  return b;
}

function parseSockaddr(b: Buffer): string | undefined {
  if (b.length >= 8 && b.readUInt16LE(0) === AF_INET)
    return `${formatIp({ family: 4, address: b.readUInt32BE(4) })}:${b.readUInt16BE(2)}`;
  if (b.length >= 24 && b.readUInt16LE(0) === AF_INET6)
    return `[${formatIp({ family: 6, address: new Uint8Array(b.subarray(8, 24)) })}]:${b.readUInt16BE(2)}`;
  return undefined;
}

function key(what: string, k: Uint8Array | undefined): Uint8Array | undefined {
  if (k === undefined) return undefined;
  if (!(k instanceof Uint8Array) || k.length !== 32)
    throw new WeftError('ERR_NETLINK_BAD_REQUEST', `${what} must be 32 bytes`);
  return k;
}

/** The attributes of WG_CMD_SET_DEVICE for device `ifname` (exported for the encoding tests). */
export function setDeviceAttrs(ifname: string, c: KernelWireguardConfig): Attr[] {
  const attrs: Attr[] = [attr.string(WgDevice.ifname, ifname)];
  const priv = key('privateKey', c.privateKey);
  if (priv) attrs.push(attr.bytes(WgDevice.privateKey, priv));
  if (c.listenPort !== undefined) attrs.push(attr.u16(WgDevice.listenPort, c.listenPort));
  if (c.replacePeers) attrs.push(attr.u32(WgDevice.flags, WGDEVICE_F_REPLACE_PEERS));
  if (c.peers && c.peers.length > 0) {
    attrs.push(
      attr.nested(
        WgDevice.peers,
        c.peers.map((p, i) => {
          const peer: Attr[] = [attr.bytes(WgPeer.publicKey, key('peer publicKey', p.publicKey)!)];
          let flags = 0;
          if (p.remove) flags |= WgPeerFlag.removeMe;
          if (p.replaceAllowedIps) flags |= WgPeerFlag.replaceAllowedIps;
          if (flags) peer.push(attr.u32(WgPeer.flags, flags));
          const psk = key('presharedKey', p.presharedKey);
          if (psk) peer.push(attr.bytes(WgPeer.presharedKey, psk));
          if (p.endpoint)
            peer.push(attr.bytes(WgPeer.endpoint, sockaddr(p.endpoint.address, p.endpoint.port)));
          if (p.persistentKeepaliveSeconds !== undefined)
            peer.push(attr.u16(WgPeer.persistentKeepaliveInterval, p.persistentKeepaliveSeconds));
          if (p.allowedIps && p.allowedIps.length > 0)
            peer.push(
              attr.nested(
                WgPeer.allowedIps,
                p.allowedIps.map((cidr, j) => {
                  const c6 = parseCidr(cidr);
                  const bytes =
                    c6.family === 4
                      ? (() => {
                          const b = Buffer.alloc(4);
                          b.writeUInt32BE(c6.address as number);
                          return b;
                        })()
                      : (c6.address as Uint8Array);
                  return attr.nested(j, [
                    attr.u16(WgAllowedIp.family, c6.family === 4 ? AF_INET : AF_INET6),
                    attr.bytes(WgAllowedIp.ipaddr, bytes),
                    attr.u8(WgAllowedIp.cidrMask, c6.prefixLength),
                  ]);
                }),
              ),
            );
          return attr.nested(i, peer);
        }),
      ),
    );
  }
  return attrs;
}

/** Reads one WG_CMD_GET_DEVICE reply message's attributes (after the 4-byte genl header). */
export function parseDevice(payload: Buffer): KernelWireguardDevice {
  const a = new Attrs(payload, 4);
  const peers: KernelWireguardDevice['peers'] = [];
  for (const p of a.nested(WgDevice.peers)?.list ?? []) {
    const pa = new Attrs(p.value);
    const allowed: string[] = [];
    for (const ip of pa.nested(WgPeer.allowedIps)?.list ?? []) {
      const ia = new Attrs(ip.value);
      const addr = ia.get(WgAllowedIp.ipaddr);
      const mask = ia.u8(WgAllowedIp.cidrMask);
      if (!addr || mask === undefined) continue;
      allowed.push(
        ia.u16(WgAllowedIp.family) === AF_INET
          ? `${formatIp({ family: 4, address: addr.readUInt32BE(0) })}/${mask}`
          : `${formatIp({ family: 6, address: new Uint8Array(addr) })}/${mask}`,
      );
    }
    const hs = pa.get(WgPeer.lastHandshakeTime);
    peers.push({
      publicKey: new Uint8Array(pa.get(WgPeer.publicKey) ?? []),
      endpoint: pa.get(WgPeer.endpoint) && parseSockaddr(pa.get(WgPeer.endpoint)!),
      allowedIps: allowed,
      persistentKeepaliveSeconds: pa.u16(WgPeer.persistentKeepaliveInterval) ?? 0,
      lastHandshakeSeconds: hs && hs.length >= 8 ? Number(hs.readBigInt64LE(0)) : 0,
      rxBytes: Number(pa.get(WgPeer.rxBytes)?.readBigUInt64LE(0) ?? 0n),
      txBytes: Number(pa.get(WgPeer.txBytes)?.readBigUInt64LE(0) ?? 0n),
    });
  }
  const pub = a.get(WgDevice.publicKey);
  return {
    ifindex: a.u32(WgDevice.ifindex) ?? 0,
    ifname: a.string(WgDevice.ifname) ?? '',
    publicKey: pub ? new Uint8Array(pub) : undefined,
    listenPort: a.u16(WgDevice.listenPort) ?? 0,
    peers,
  };
}

/**
 * A generic-netlink client for the kernel's WireGuard. `open` resolves the family; when the
 * kernel has no WireGuard (the module is absent) it resolves to undefined: the caller runs weft's
 * userspace WireGuard instead.
 */
export class KernelWireguard {
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private waiting:
    | {
        seq: number;
        messages: Message[];
        resolve: (m: Message[]) => void;
        reject: (e: Error) => void;
      }
    | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly socket: NetlinkTransport,
    readonly familyId: number,
  ) {}

  /**
   * Opens a generic netlink socket and looks the WireGuard family up; undefined when this kernel
   * has none (no module).
   */
  static async open(options: { netns?: string } = {}): Promise<KernelWireguard | undefined> {
    return KernelWireguard.over(
      NetlinkSocket.open({ protocol: NETLINK_GENERIC, netns: options.netns }),
    );
  }

  /** Over any transport of the socket's shape (tests). Closes it when the family is missing. */
  static async over(socket: NetlinkTransport): Promise<KernelWireguard | undefined> {
    const probe = new KernelWireguard(socket, GENL_ID_CTRL);
    socket.onMessage(
      (d) => probe.receive(d),
      (err) => probe.fail(err),
    );
    try {
      const replies = await probe.request(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        1,
        0,
        [attr.string(CTRL_ATTR_FAMILY_NAME, WG_GENL_NAME)],
        'resolving the wireguard generic netlink family',
      );
      const id =
        replies.length > 0 ? new Attrs(replies[0].payload, 4).u16(CTRL_ATTR_FAMILY_ID) : undefined;
      if (id === undefined)
        throw new WeftError('ERR_NETLINK_MALFORMED', 'CTRL_CMD_GETFAMILY gave no family id');
      (probe as { familyId: number }).familyId = id;
      return probe;
    } catch (err) {
      if (err instanceof WeftError && err.code === 'ERR_NETLINK_ENOENT') {
        socket.close();
        return undefined;
      }
      socket.close();
      throw err;
    }
  }

  private receive(datagram: Buffer): void {
    const w = this.waiting;
    if (!w) return;
    let messages: Message[];
    try {
      messages = parseMessages(datagram);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    for (const m of messages) {
      if (m.seq !== w.seq) continue;
      if (m.type === NlmsgType.error) {
        this.waiting = undefined;
        const e = parseError(m);
        if (e.errno === 0) w.resolve(w.messages);
        else w.reject(netlinkError('wireguard genetlink', e.errno, e.text));
        return;
      }
      if (m.type === NlmsgType.done) {
        this.waiting = undefined;
        w.resolve(w.messages);
        return;
      }
      w.messages.push(m);
    }
  }

  private fail(err: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(err);
  }

  /** One request at a time: resolves with the replies on the ACK or the end of a dump. */
  private request(
    family: number,
    cmd: number,
    version: number,
    flags: number,
    attrs: Attr[],
    what: string,
  ): Promise<Message[]> {
    const run = () =>
      new Promise<Message[]>((resolve, reject) => {
        this.seq = (this.seq + 1) & 0x7fffffff;
        const seq = this.seq;
        const header = Uint8Array.of(cmd, version, 0, 0);
        const dump = (flags & NlmFlag.dump) === NlmFlag.dump;
        this.waiting = {
          seq,
          messages: [],
          resolve,
          reject: (e) =>
            reject(e instanceof WeftError ? new WeftError(e.code, `${what}: ${e.message}`) : e),
        };
        try {
          this.socket.send(
            buildMessage(
              family,
              flags | NlmFlag.request | (dump ? 0 : NlmFlag.ack),
              seq,
              header,
              attrs,
            ),
          );
        } catch (err) {
          this.waiting = undefined;
          reject(err);
        }
      });
    const next = this.chain.then(run, run);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** WG_CMD_SET_DEVICE: what `wg set` and wgctrl's ConfigureDevice do. */
  async setDevice(ifname: string, config: KernelWireguardConfig): Promise<void> {
    await this.request(
      this.familyId,
      WgCmd.setDevice,
      WG_GENL_VERSION,
      0,
      setDeviceAttrs(ifname, config),
      `configuring ${ifname}`,
    );
  }

  /** WG_CMD_GET_DEVICE: the device and its peers (`wg show`). */
  async device(ifname: string): Promise<KernelWireguardDevice> {
    const replies = await this.request(
      this.familyId,
      WgCmd.getDevice,
      WG_GENL_VERSION,
      NlmFlag.dump,
      [attr.string(WgDevice.ifname, ifname)],
      `reading ${ifname}`,
    );
    const devices = replies.map((m) => parseDevice(m.payload));
    if (devices.length === 0)
      throw new WeftError('ERR_NETLINK_ENODEV', `reading ${ifname}: no such WireGuard device`);
    // A device with many peers comes in several messages: the peers add up.
    return { ...devices[0], peers: devices.flatMap((d) => d.peers) };
  }

  /** Closes the socket; requests in flight fail with ERR_NETLINK_CLOSED. */
  close(): void {
    this.fail(new WeftError('ERR_NETLINK_CLOSED', 'the wireguard genetlink socket was closed'));
    this.socket.close();
  }
}

/**
 * Whether the kernel can make a WireGuard device: creates `name` of kind wireguard (which loads
 * the module where it exists, as flannel's LinkAdd does) and resolves the generic netlink family.
 * Returns the client with the device in place, or why not (the device, if made, removed).
 */
export async function probeKernelWireguard(
  nl: Rtnl,
  name: string,
  options: { netns?: string; mtu?: number } = {},
): Promise<{ ok: true; genl: KernelWireguard; ifindex: number } | { ok: false; reason: string }> {
  const ifinfo = new Uint8Array(16);
  const attrs: Attr[] = [
    attr.string(3 /* IFLA_IFNAME */, name),
    attr.nested(18 /* IFLA_LINKINFO */, [attr.bareString(1 /* IFLA_INFO_KIND */, 'wireguard')]),
  ];
  if (options.mtu) attrs.push(attr.u32(4 /* IFLA_MTU */, options.mtu));
  try {
    await nl.request(
      16 /* RTM_NEWLINK */,
      NlmFlag.create | NlmFlag.excl,
      ifinfo,
      attrs,
      `${name} type wireguard`,
    );
  } catch (err) {
    return {
      ok: false,
      reason: `the kernel cannot make a wireguard device: ${(err as Error).message}`,
    };
  }
  const link = await nl.link(name);
  const remove = async () => {
    if (link) await nl.deleteLink(link.index).catch(() => undefined);
  };
  try {
    const genl = await KernelWireguard.open({ netns: options.netns });
    if (!genl) {
      await remove();
      return { ok: false, reason: 'the kernel has no wireguard generic netlink family' };
    }
    return { ok: true, genl, ifindex: link?.index ?? 0 };
  } catch (err) {
    await remove();
    return { ok: false, reason: (err as Error).message };
  }
}
