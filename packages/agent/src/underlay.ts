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

export interface UnderlayOptions {
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach?: string;
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

  let found: { iface: Link; address?: string } | undefined;
  const tried: string[] = [];
  const explicit = o.iface.length > 0 || o.ifaceRegex.length > 0 || o.ifaceCanReach !== undefined;
  if (!explicit) {
    if (o.publicIp) {
      const iface = byAddress(o.publicIp);
      if (!iface)
        throw new WeftError(
          UnderlayErrorCode,
          `no interface has the --public-ip ${o.publicIp}: pass --iface to name the one other nodes reach this node through`,
        );
      found = { iface, address: o.publicIp };
    } else {
      const def = (await nl.routes({ family: 4 })).find(
        (r) => r.dst === '0.0.0.0/0' && r.oif !== undefined,
      );
      const iface = def && links.find((l) => l.index === def.oif);
      if (!iface)
        throw new WeftError(
          UnderlayErrorCode,
          'no default route to find the underlay interface by: pass --iface (or --iface-regex, --iface-can-reach)',
        );
      found = { iface };
    }
  }
  for (const spec of o.iface) {
    if (found) break;
    if (tryParseIpv4(spec) !== undefined || tryParseIpv6(spec) !== undefined) {
      const iface = byAddress(spec);
      if (iface) found = { iface, address: spec };
      else tried.push(`--iface ${spec}: no interface has this address`);
    } else {
      const iface = links.find((l) => l.name === spec);
      if (iface) found = { iface };
      else tried.push(`--iface ${spec}: no such interface`);
    }
    if (!found) log.info({ iface: spec }, `could not find a valid interface matching ${spec}`);
  }
  for (const pattern of o.ifaceRegex) {
    if (found) break;
    const re = new RegExp(pattern);
    for (const l of links) {
      const a = addressesOf.get(l.index)!.find((x) => re.test(x.address));
      if (a) {
        found = { iface: l, address: a.address };
        break;
      }
    }
    found ??= (() => {
      const l = links.find((x) => re.test(x.name));
      return l ? { iface: l } : undefined;
    })();
    if (!found) {
      tried.push(`--iface-regex ${pattern}: matches no address or name`);
      log.info({ ifaceRegex: pattern }, `could not find a valid interface matching ${pattern}`);
    }
  }
  if (!found && o.ifaceCanReach !== undefined) {
    const route = await nl.routeGet(o.ifaceCanReach).catch(() => undefined);
    const iface = route?.oif !== undefined ? links.find((l) => l.index === route.oif) : undefined;
    if (iface) found = { iface, address: route?.prefsrc };
    else tried.push(`--iface-can-reach ${o.ifaceCanReach}: no route`);
  }
  if (!found)
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
  const addresses = addressesOf.get(found.iface.index)!;
  const ifaceAddress = found.address ?? addresses[0]?.address;
  if (!ifaceAddress || tryParseIpv4(ifaceAddress) === undefined)
    throw new WeftError(
      UnderlayErrorCode,
      `${found.iface.name} has no IPv4 address: give it one, or pass --iface with another interface`,
    );
  if (!found.iface.mtu)
    throw new WeftError(UnderlayErrorCode, `could not read the MTU of ${found.iface.name}`);
  const connected = addresses.map(
    (a) =>
      cidrNetwork(parseCidr(`${a.address}/${a.prefixLength}`, { allowHostBits: true })) as Cidr4,
  );
  const publicIp = o.publicIp ?? ifaceAddress;
  log.info(
    { iface: found.iface.name, address: ifaceAddress, publicIp },
    `using interface ${found.iface.name} with address ${ifaceAddress}`,
  );
  return { iface: found.iface, ifaceAddress, publicIp, connected };
}
