import {
  type Cidr4,
  cidrNetwork,
  parseCidr,
  tryParseIpv4,
  tryParseIpv6,
  WeftError,
} from '@weft/core';
import type { Link, Rtnl } from '@weft/netlink';

/** The interface other nodes reach this one by, and the addresses to use on it. */
export interface Underlay {
  iface: Link;
  /** The interface address it was found by (or its first IPv4 address). */
  ifaceAddress: string;
  /** What other nodes send to: --public-ip, else ifaceAddress. */
  publicIp: string;
  /** The networks directly connected to the interface (for DirectRouting). */
  connected: Cidr4[];
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
}

interface Logger {
  info(obj: object, msg: string): void;
}

export const UnderlayErrorCode = 'ERR_WEFTD_IFACE';

async function ipv4Addresses(
  nl: Rtnl,
  link: Link,
): Promise<{ address: string; prefixLength: number }[]> {
  return (await nl.addresses(link.index)).filter((a) => tryParseIpv4(a.address) !== undefined);
}

/**
 * flannel's interface choice (pkg/ipmatch LookupExtIface, main.go), IPv4: each --iface in order
 * (an address finds the interface holding it, else a name), then each --iface-regex (first over
 * every interface's addresses, then over names), then --iface-can-reach (`ip route get`); with
 * none of them, the interface holding --public-ip if given, else the default route's. The first
 * found wins; a lookup that fails is logged and the next is tried.
 */
export async function findUnderlay(nl: Rtnl, o: UnderlayOptions, log: Logger): Promise<Underlay> {
  const links = await nl.links();
  const addressesOf = new Map<number, { address: string; prefixLength: number }[]>();
  for (const l of links) addressesOf.set(l.index, await ipv4Addresses(nl, l));
  const byAddress = (ip: string) =>
    links.find((l) => addressesOf.get(l.index)!.some((a) => a.address === ip));

  let found: { iface: Link; address: string } | undefined;
  const tried: string[] = [];
  /** A candidate counts only with an IPv4 address to use (flannel's lookup fails otherwise, and the next is tried). */
  const take = (
    iface: Link | undefined,
    address: string | undefined,
    what: string,
    why: string,
  ) => {
    if (found) return;
    const ip = address ?? (iface ? addressesOf.get(iface.index)![0]?.address : undefined);
    if (iface && ip && tryParseIpv4(ip) !== undefined) {
      found = { iface, address: ip };
      return;
    }
    const reason = iface ? `${iface.name} has no IPv4 address` : why;
    tried.push(`${what}: ${reason}`);
    log.info({ spec: what, reason }, `could not find a valid interface matching ${what}`);
  };
  const explicit = o.iface.length > 0 || o.ifaceRegex.length > 0 || o.ifaceCanReach !== undefined;
  if (!explicit) {
    if (o.publicIp) {
      take(
        byAddress(o.publicIp),
        o.publicIp,
        `--public-ip ${o.publicIp}`,
        'no interface has this address',
      );
    } else {
      const def = (await nl.routes({ family: 4 })).find(
        (r) => r.dst === '0.0.0.0/0' && r.oif !== undefined,
      );
      if (!def)
        throw new WeftError(
          UnderlayErrorCode,
          'no default route to find the underlay interface by: pass --iface (or --iface-regex, --iface-can-reach)',
        );
      take(
        links.find((l) => l.index === def.oif),
        undefined,
        'the default route',
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
      const a = addressesOf.get(l.index)!.find((x) => re.test(x.address));
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
  if (!found) {
    if (!explicit) throw new WeftError(UnderlayErrorCode, `${tried.join('; ')}: pass --iface`);
    throw new WeftError(
      UnderlayErrorCode,
      `no interface matches the interfaces and regexes given (${tried.join('; ')}); interfaces here: ${links
        .map(
          (l) =>
            `${l.name} [${addressesOf
              .get(l.index)!
              .map((a) => a.address)
              .join(' ')}]`,
        )
        .join(', ')}`,
    );
  }
  const { iface } = found as { iface: Link; address: string };
  const ifaceAddress = (found as { address: string }).address;
  const addresses = addressesOf.get(iface.index)!;
  if (!iface.mtu) throw new WeftError(UnderlayErrorCode, `could not read the MTU of ${iface.name}`);
  const connected = addresses.map(
    (a) =>
      cidrNetwork(parseCidr(`${a.address}/${a.prefixLength}`, { allowHostBits: true })) as Cidr4,
  );
  const publicIp = o.publicIp ?? ifaceAddress;
  log.info(
    { iface: iface.name, address: ifaceAddress, publicIp },
    `using interface ${iface.name} with address ${ifaceAddress}`,
  );
  return { iface, ifaceAddress, publicIp, connected };
}
