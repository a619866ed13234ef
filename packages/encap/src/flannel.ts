import { ipv4Check, ipv4DecrementTtl } from './ipv4.js';
import { Status } from './status.js';

/**
 * flannel's legacy `udp` backend frames nothing: the UDP payload is the bare inner IPv4 packet,
 * sent from and to port 8285. Its proxy decrements the inner TTL (patching the checksum per
 * RFC 1624) once when a packet leaves the TUN and once when it arrives from UDP, dropping a
 * packet whose TTL reaches zero.
 */
export const FLANNEL_UDP_PORT = 8285;

/**
 * Hot path: the TTL step flannel applies on both ends: validate the IPv4 header of the `len`
 * bytes at `off`, then decrement its TTL in place. Any non-ok status means drop (and count).
 */
export function flannelTtlStep(buf: Uint8Array, off: number, len: number): Status {
  const status = ipv4Check(buf, off, len);
  if (status !== Status.ok) return status;
  return ipv4DecrementTtl(buf, off);
}
