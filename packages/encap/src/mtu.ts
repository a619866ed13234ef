import { ETHERNET_HEADER_BYTES } from './ethernet.js';
import { IPV4_HEADER_BYTES, IPV4_MIN_MTU } from './ipv4.js';
import { IPV6_HEADER_BYTES } from './ipv6.js';
import { EncapError, EncapErrorCode } from './status.js';
import { UDP_HEADER_BYTES } from './udp.js';
import { VXLAN_HEADER_BYTES } from './vxlan.js';
import { WIREGUARD_OVERHEAD_BYTES } from './wireguard.js';

/** Outer IPv4 + UDP + VXLAN + inner Ethernet: 20 + 8 + 8 + 14 = 50 (why flannel.1 has MTU 1450). */
export const VXLAN_IPV4_OVERHEAD_BYTES =
  IPV4_HEADER_BYTES + UDP_HEADER_BYTES + VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES;
/** Outer IPv6 + UDP + VXLAN + inner Ethernet: 40 + 8 + 8 + 14 = 70. */
export const VXLAN_IPV6_OVERHEAD_BYTES =
  IPV6_HEADER_BYTES + UDP_HEADER_BYTES + VXLAN_HEADER_BYTES + ETHERNET_HEADER_BYTES;
/** Outer IPv4 + UDP: 28 (why flannel0 has MTU 1472 on a 1500 underlay). */
export const FLANNEL_UDP_OVERHEAD_BYTES = IPV4_HEADER_BYTES + UDP_HEADER_BYTES;

/** The encapsulations weft sends, for {@link overheadBytes}. */
export type Encapsulation = 'vxlan' | 'vxlan6' | 'flannel-udp' | 'wireguard';

/** Bytes an encapsulation adds to each inner packet (what flannel subtracts from the MTU). */
export function overheadBytes(encapsulation: Encapsulation): number {
  switch (encapsulation) {
    case 'vxlan':
      return VXLAN_IPV4_OVERHEAD_BYTES;
    case 'vxlan6':
      return VXLAN_IPV6_OVERHEAD_BYTES;
    case 'flannel-udp':
      return FLANNEL_UDP_OVERHEAD_BYTES;
    case 'wireguard':
      return WIREGUARD_OVERHEAD_BYTES;
    default:
      // Reachable from untyped callers (a config file): a NaN MTU would pass every comparison.
      throw new EncapError(
        EncapErrorCode.badValue,
        'encapsulation',
        `encapsulation: ${JSON.stringify(encapsulation)} is not one of vxlan, vxlan6, flannel-udp, wireguard`,
      );
  }
}

/**
 * The overlay device MTU for an underlay MTU: underlay - overhead. Throws when what is left is
 * below the IPv4 minimum of 68 bytes (RFC 791).
 */
export function overlayMtu(underlayMtuBytes: number, encapsulation: Encapsulation): number {
  const mtu = underlayMtuBytes - overheadBytes(encapsulation);
  if (!Number.isInteger(underlayMtuBytes) || mtu < IPV4_MIN_MTU) {
    throw new EncapError(
      EncapErrorCode.badValue,
      'mtu',
      `mtu: an underlay MTU of ${underlayMtuBytes} leaves ${mtu} bytes for ${encapsulation}, below the IPv4 minimum of ${IPV4_MIN_MTU}`,
    );
  }
  return mtu;
}
