import {
  type Cidr4,
  type Cidr6,
  cidrNetwork,
  formatIpv6,
  parseCidr,
  tryParseIpv4,
  tryParseIpv6,
  WeftError,
} from '@weft/core';
import { type Address, IfaFlag, type Link, type Rtnl } from '@weft/netlink';

/** The interface other nodes reach this one by, and the addresses to use on it, per family. */
export interface Underlay {
  iface: Link;
  /** The IPv4 interface address it was found by (or its first IPv4 address); IPv4 enabled only. */
  ifaceAddress?: string;
  /** What other nodes send IPv4 to: --public-ip, else ifaceAddress; IPv4 enabled only. */
  publicIp?: string;
  /** The IPv4 networks directly connected to the interface (for DirectRouting). */
  connected: Cidr4[];
  /** Its global IPv6 address (the one it was found by, or its first); IPv6 enabled only. */
  ifaceAddress6?: string;
  /** What other nodes send IPv6 to: --public-ipv6, else ifaceAddress6; IPv6 enabled only. */
  publicIpv6?: string;
  /** The IPv6 networks of the interface's global addresses (for DirectRouting). */
  connected6: Cidr6[];
}

/** The flags that choose the underlay, as {@link findUnderlay} reads them. */
export interface UnderlayOptions {
  /** --iface: addresses or interface names, tried in order. */
  iface: string[];
  /** --iface-regex: patterns over addresses, then names. */
  ifaceRegex: string[];
  /** --iface-can-reach: the interface the route to this address leaves by. */
  ifaceCanReach?: string;
  /** --public-ip: the address published in the lease (default: the interface's). */
  publicIp?: string;
  /** --public-ipv6: the IPv6 address other nodes are told (default: the interface's). */
  publicIpv6?: string;
}

/** The address families the network config enables (EnableIPv4, EnableIPv6). */
export interface Families {
  ipv4: boolean;
  ipv6: boolean;
}

interface Logger {
  info(obj: object, msg: string): void;
}

export const UnderlayErrorCode = 'ERR_WEFTD_IFACE';

const isV4 = (a: Address) => tryParseIpv4(a.address) !== undefined;

/** fe80::/10: an IPv6 link-local address (scope link), useless as a VXLAN endpoint. */
const isLinkLocal6 = (a: Address) => a.scope === 253 || /^fe[89ab]/i.test(a.address);

/**
 * A node's usable global IPv6 addresses in flannel's order of preference (pkg/ip
 * GetInterfaceIP6Addrs): not deprecated or failed, permanent before autoconfigured, then not
 * temporary; link-local ones are left out.
 */
export function globalIpv6(addresses: Address[]): Address[] {
  const usable = addresses.filter(
    (a) =>
      !isV4(a) &&
      !isLinkLocal6(a) &&
      (a.flags & (IfaFlag.deprecated | IfaFlag.dadfailed)) === 0 &&
      tryParseIpv6(a.address) !== undefined,
  );
  const rank = (a: Address) =>
    ((a.flags & IfaFlag.permanent) === 0 ? 2 : 0) + ((a.flags & IfaFlag.secondary) !== 0 ? 1 : 0);
  return usable.sort((a, b) => rank(a) - rank(b));
}

const same6 = (a: string, b: string) => {
  const x = tryParseIpv6(a);
  const y = tryParseIpv6(b);
  return x !== undefined && y !== undefined && formatIpv6(x) === formatIpv6(y);
};

/**
 * flannel's interface choice (pkg/ipmatch LookupExtIface, main.go), for the families the
 * network enables: each --iface in order (an address finds the interface holding it, else a
 * name), then each --iface-regex (first over every interface's addresses, then over names), then
 * --iface-can-reach (`ip route get`); with none of them, the interface holding --public-ip (or,
 * IPv6-only, --public-ipv6) if given, else the default route's (::/0 when IPv6-only). A
 * candidate counts only with an address of each enabled family (IPv6: a global one; flannel
 * refuses too without one, --public-ipv6 or not); the first found wins; a lookup that fails is
 * logged and the next tried. --public-ip and --public-ipv6 are what other nodes are told.
 */
export async function findUnderlay(
  nl: Rtnl,
  o: UnderlayOptions,
  log: Logger,
  families: Families = { ipv4: true, ipv6: false },
): Promise<Underlay> {
  const links = await nl.links();
  const addressesOf = new Map<number, Address[]>();
  const all = await nl.addresses();
  for (const l of links)
    addressesOf.set(
      l.index,
      all.filter((a) => a.index === l.index),
    );
  const v4Of = (l: Link) => addressesOf.get(l.index)!.filter(isV4);
  const byAddress = (ip: string) =>
    links.find((l) =>
      addressesOf
        .get(l.index)!
        .some((a) => a.address === ip || (tryParseIpv6(ip) !== undefined && same6(a.address, ip))),
    );

  let found: { iface: Link; address?: string; address6?: string } | undefined;
  const tried: string[] = [];
  /** Takes a candidate that has what every enabled family needs, else says why not. */
  const take = (
    iface: Link | undefined,
    address: string | undefined,
    what: string,
    why: string,
  ) => {
    if (found) return;
    let reason = why;
    if (iface) {
      const given4 = address !== undefined && tryParseIpv4(address) !== undefined;
      const given6 = address !== undefined && !given4;
      const v4 = given4 ? address : v4Of(iface)[0]?.address;
      const v6 = given6 ? address : globalIpv6(addressesOf.get(iface.index)!)[0]?.address;
      const missing: string[] = [];
      if (families.ipv4 && v4 === undefined) missing.push('no IPv4 address');
      // As flannel: the interface needs an IPv6 address of its own, --public-ipv6 or not.
      if (families.ipv6 && v6 === undefined) {
        const linkLocal = addressesOf.get(iface.index)!.filter((a) => !isV4(a) && isLinkLocal6(a));
        missing.push(
          linkLocal.length > 0
            ? `no global IPv6 address (only the link-local ${linkLocal.map((a) => a.address).join(', ')})`
            : 'no IPv6 address',
        );
      }
      if (missing.length === 0) {
        found = {
          iface,
          address: families.ipv4 ? v4 : undefined,
          address6: families.ipv6 ? v6 : undefined,
        };
        return;
      }
      reason = `${iface.name} has ${missing.join(' and ')}`;
    }
    tried.push(`${what}: ${reason}`);
    log.info({ spec: what, reason }, `could not find a valid interface matching ${what}`);
  };
  const explicit = o.iface.length > 0 || o.ifaceRegex.length > 0 || o.ifaceCanReach !== undefined;
  if (!explicit) {
    const by = families.ipv4 ? o.publicIp : o.publicIpv6;
    if (by) {
      take(
        byAddress(by),
        by,
        `--public-ip${families.ipv4 ? '' : 'v6'} ${by}`,
        'no interface has this address',
      );
    } else {
      const family = families.ipv4 ? 4 : 6;
      const any = family === 4 ? '0.0.0.0/0' : '::/0';
      const def = (await nl.routes({ family })).find((r) => r.dst === any && r.oif !== undefined);
      if (!def)
        throw new WeftError(
          UnderlayErrorCode,
          `no ${family === 4 ? '' : 'IPv6 '}default route to find the underlay interface by: pass --iface (or --iface-regex, --iface-can-reach)`,
        );
      take(
        links.find((l) => l.index === def.oif),
        undefined,
        `the ${family === 4 ? '' : 'IPv6 '}default route`,
        'its interface is gone',
      );
    }
  }
  for (const spec of o.iface) {
    if (tryParseIpv4(spec) !== undefined || tryParseIpv6(spec) !== undefined)
      take(byAddress(spec), spec, `--iface ${spec}`, 'no interface has this address');
    else
      take(
        links.find((l) => l.name === spec),
        undefined,
        `--iface ${spec}`,
        'no such interface',
      );
  }
  for (const pattern of o.ifaceRegex) {
    if (found) break;
    const re = new RegExp(pattern);
    let byAddr: { iface: Link; address: string } | undefined;
    for (const l of links) {
      const a = addressesOf
        .get(l.index)!
        .find((x) => (isV4(x) ? families.ipv4 : !isLinkLocal6(x)) && re.test(x.address));
      if (a) {
        byAddr = { iface: l, address: a.address };
        break;
      }
    }
    if (byAddr) take(byAddr.iface, byAddr.address, `--iface-regex ${pattern}`, '');
    else
      take(
        links.find((x) => re.test(x.name)),
        undefined,
        `--iface-regex ${pattern}`,
        'matches no address or name',
      );
  }
  if (!found && o.ifaceCanReach !== undefined) {
    const route = await nl.routeGet(o.ifaceCanReach).catch(() => undefined);
    const iface = route?.oif !== undefined ? links.find((l) => l.index === route.oif) : undefined;
    take(iface, route?.prefsrc, `--iface-can-reach ${o.ifaceCanReach}`, 'no route');
  }
  const describe = (l: Link) =>
    `${l.name} [${addressesOf
      .get(l.index)!
      .map((a) => a.address)
      .join(' ')}]`;
  if (!found) {
    const six =
      families.ipv6 && tried.some((t) => /IPv6/.test(t))
        ? ': the network config enables IPv6 (EnableIPv6), so the underlay interface needs a global IPv6 address: add one, or pick an interface that has one (--iface)'
        : '';
    if (!explicit)
      throw new WeftError(UnderlayErrorCode, `${tried.join('; ')}${six || ': pass --iface'}`);
    throw new WeftError(
      UnderlayErrorCode,
      `no interface matches the interfaces and regexes given (${tried.join('; ')})${six}; interfaces here: ${links.map(describe).join(', ')}`,
    );
  }
  const { iface, address, address6 } = found as {
    iface: Link;
    address?: string;
    address6?: string;
  };
  if (!iface.mtu) throw new WeftError(UnderlayErrorCode, `could not read the MTU of ${iface.name}`);
  const addresses = addressesOf.get(iface.index)!;
  const network = (a: Address) =>
    cidrNetwork(parseCidr(`${a.address}/${a.prefixLength}`, { allowHostBits: true }));
  const underlay: Underlay = {
    iface,
    connected: families.ipv4 ? (addresses.filter(isV4).map(network) as Cidr4[]) : [],
    connected6: families.ipv6 ? (globalIpv6(addresses).map(network) as Cidr6[]) : [],
  };
  if (families.ipv4) {
    underlay.ifaceAddress = address;
    underlay.publicIp = o.publicIp ?? address;
  }
  if (families.ipv6) {
    // Canonical text (RFC 5952), as leases and the kernel's dumps spell addresses.
    const canonical = (ip: string | undefined) => {
      const b = ip === undefined ? undefined : tryParseIpv6(ip);
      return b ? formatIpv6(b) : ip;
    };
    underlay.ifaceAddress6 = canonical(address6);
    underlay.publicIpv6 = canonical(o.publicIpv6 ?? address6);
  }
  log.info(
    {
      iface: iface.name,
      address,
      publicIp: underlay.publicIp,
      address6,
      publicIpv6: underlay.publicIpv6,
    },
    `using interface ${iface.name} with address ${[address, address6].filter(Boolean).join(' and ')}`,
  );
  return underlay;
}

/**
 * Waits while the underlay's IPv6 address is tentative (duplicate address detection, about a
 * second after it was added): until then the kernel neither sends from it nor binds to it.
 */
export async function waitForIpv6(
  nl: Rtnl,
  underlay: Underlay,
  log: Logger,
  timeoutMs = 5000,
): Promise<void> {
  const ip = underlay.ifaceAddress6;
  if (!ip) return;
  const deadline = Date.now() + timeoutMs;
  let said = false;
  for (;;) {
    const a = (await nl.addresses(underlay.iface.index)).find((x) => same6(x.address, ip));
    if (!a || (a.flags & IfaFlag.tentative) === 0) return;
    if (a.flags & IfaFlag.dadfailed)
      throw new WeftError(
        UnderlayErrorCode,
        `${ip} on ${underlay.iface.name} failed duplicate address detection: another host has it`,
      );
    if (Date.now() > deadline)
      throw new WeftError(
        UnderlayErrorCode,
        `${ip} on ${underlay.iface.name} stayed tentative for ${timeoutMs} ms (duplicate address detection did not finish): is the link up?`,
      );
    if (!said) {
      said = true;
      log.info({ address: ip }, `waiting for ${ip} to finish duplicate address detection`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
