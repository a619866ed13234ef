import {
  type Cidr4,
  type Cidr6,
  formatCidr,
  formatIpv4,
  formatIpv6,
  parseCidr,
  tryParseIpv4,
  tryParseIpv6,
  WeftError,
} from '@weft/core';
import { SubnetErrorCode } from './errors.js';

/**
 * A subnet lease as flannel stores it: the key names the subnet(s), `10.244.1.0-24`,
 * `10.244.1.0-24&fd00:10:244:1::-64` (dual stack) or `0.0.0.0-0&fd00:10:244:1::-64` (IPv6 only:
 * flannel's MakeSubnetKey with an empty IPv4 subnet), and the value is the node's attributes as
 * flannel's LeaseAttrs marshals them (pkg/lease), e.g.
 * {"PublicIP":"198.18.0.11","PublicIPv6":"2001:2::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"..."},"BackendV6Data":{"VNI":1,"VtepMAC":"..."}}
 */
export interface LeaseAttrs {
  /** The node's IPv4 underlay address; absent on an IPv6-only node (flannel writes "0.0.0.0"). */
  publicIp?: string;
  /** The node's IPv6 underlay address, when the network enables IPv6. */
  publicIpv6?: string;
  backendType: string;
  /** Backend-specific data for IPv4, kept as JSON values (vxlan: VNI and VtepMAC of flannel.<VNI>). */
  backendData?: unknown;
  /** The same for IPv6 (vxlan: VNI and VtepMAC of flannel-v6.<VNI>). */
  backendV6Data?: unknown;
}

/** A node's subnet lease: its subnet(s), what the node published with it, and when it expires. */
export interface Lease {
  /** The store key, e.g. `10.244.1.0-24` (dual stack: `10.244.1.0-24&fc00:0:0:1::-64`). */
  key: string;
  /** e.g. 10.244.1.0/24; absent on an IPv6-only lease. */
  subnet?: string;
  /** e.g. fd00:10:244:1::/64, when the network enables IPv6. */
  subnet6?: string;
  /** What the node published: public IP(s), backend type and data. */
  attrs: LeaseAttrs;
  /** When it expires (ms since the epoch); undefined for a reservation, which never does. */
  expiresAt?: number;
  /** The store revision that last changed it. */
  revision: number;
}

/** A lease's subnets for messages: `10.244.1.0/24`, `10.244.1.0/24 fd00:10:244:1::/64`. */
export function describeLease(lease: { subnet?: string; subnet6?: string }): string {
  return [lease.subnet, lease.subnet6].filter(Boolean).join(' ');
}

/** flannel's empty IPv4 subnet (ip.IP4Net{}): the IPv4 half of an IPv6-only key. */
const NO_IPV4 = '0.0.0.0-0';

/** The key flannel's MakeSubnetKey writes for these subnets (at least one). */
export function subnetKey(subnet: Cidr4 | undefined, subnet6?: Cidr6): string {
  if (!subnet && !subnet6)
    throw new WeftError(SubnetErrorCode.badLease, 'a lease key needs an IPv4 or an IPv6 subnet');
  const v4 = subnet ? formatCidr(subnet).replace('/', '-') : NO_IPV4;
  return subnet6 ? `${v4}&${formatCidr(subnet6).replace('/', '-')}` : v4;
}

// flannel's subnetRegex (pkg/subnet): an IPv4 part always, then optionally `&` and an IPv6 part.
const KEY_RE = /(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-fA-F\d:]+)-(\d+))?$/;

/**
 * Parses the subnet part of a key as flannel's ParseSubnetKey does; undefined when it is not one.
 * The empty IPv4 subnet of an IPv6-only key (0.0.0.0/0) comes back as no `subnet`.
 */
export function parseSubnetKey(key: string): { subnet?: Cidr4; subnet6?: Cidr6 } | undefined {
  const m = KEY_RE.exec(key);
  // flannel parses the prefix lengths as 5- and 7-bit numbers (strconv.ParseUint bit sizes).
  if (!m || Number(m[2]) > 31 || (m[4] !== undefined && Number(m[4]) > 127)) return undefined;
  try {
    const subnet = parseCidr(`${m[1]}/${m[2]}`) as Cidr4;
    if (subnet.family !== 4) return undefined;
    const empty = subnet.address === 0 && subnet.prefixLength === 0;
    if (m[3] === undefined) return empty ? undefined : { subnet };
    const subnet6 = parseCidr(`${m[3]}/${m[4]}`) as Cidr6;
    if (subnet6.family !== 6) return undefined;
    return empty ? { subnet6 } : { subnet, subnet6 };
  } catch {
    return undefined;
  }
}

/** Canonical text of an address (Go's net.IP String: RFC 5952 for IPv6), or the text as given. */
function canonical(text: string | undefined, family: 4 | 6): string | undefined {
  if (text === undefined) return undefined;
  if (family === 4) {
    const v4 = tryParseIpv4(text);
    return v4 === undefined ? text : formatIpv4(v4);
  }
  const v6 = tryParseIpv6(text);
  return v6 === undefined ? text : formatIpv6(v6);
}

/**
 * flannel's JSON for the attributes (encoding/json over LeaseAttrs): fields in Go's order,
 * PublicIP always (ip.IP4's zero value "0.0.0.0" on an IPv6-only node), PublicIPv6 a string or
 * null (a *ip.IP6), BackendType, BackendData and BackendV6Data left out when empty (omitempty).
 */
export function leaseAttrsJson(attrs: LeaseAttrs): string {
  const out: Record<string, unknown> = {
    PublicIP: canonical(attrs.publicIp, 4) ?? '0.0.0.0',
    PublicIPv6: canonical(attrs.publicIpv6, 6) ?? null,
  };
  if (attrs.backendType) out.BackendType = attrs.backendType;
  if (attrs.backendData !== undefined && attrs.backendData !== null)
    out.BackendData = attrs.backendData;
  if (attrs.backendV6Data !== undefined && attrs.backendV6Data !== null)
    out.BackendV6Data = attrs.backendV6Data;
  return JSON.stringify(out);
}

function get(obj: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === lower) return obj[k];
  return undefined;
}

/** Parses a lease value; a WeftError (ERR_SUBNET_BAD_LEASE) says what is wrong with it. */
export function parseLeaseAttrs(json: string, key = 'lease'): LeaseAttrs {
  const bad = (why: string) => new WeftError(SubnetErrorCode.badLease, `${key}: ${why}`);
  let obj: unknown;
  try {
    obj = JSON.parse(json);
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw bad('not a JSON object');
  const o = obj as Record<string, unknown>;
  const publicIp = get(o, 'PublicIP');
  if (
    publicIp !== undefined &&
    (typeof publicIp !== 'string' || tryParseIpv4(publicIp) === undefined)
  )
    throw bad(`PublicIP ${JSON.stringify(publicIp)} is not an IPv4 address`);
  const publicIpv6 = get(o, 'PublicIPv6');
  if (
    publicIpv6 !== undefined &&
    publicIpv6 !== null &&
    (typeof publicIpv6 !== 'string' || tryParseIpv6(publicIpv6) === undefined)
  ) {
    throw bad(`PublicIPv6 ${JSON.stringify(publicIpv6)} is not an IPv6 address`);
  }
  // ip.IP4's zero value: what an IPv6-only node writes.
  const v4 = publicIp === undefined || tryParseIpv4(publicIp) === 0 ? undefined : publicIp;
  if (v4 === undefined && typeof publicIpv6 !== 'string')
    throw bad('has neither a PublicIP nor a PublicIPv6: no node can be reached by it');
  const backendType = get(o, 'BackendType');
  if (backendType !== undefined && typeof backendType !== 'string')
    throw bad('BackendType is not a string');
  const attrs: LeaseAttrs = { backendType: (backendType as string | undefined) ?? '' };
  if (v4 !== undefined) attrs.publicIp = v4;
  if (typeof publicIpv6 === 'string') attrs.publicIpv6 = publicIpv6;
  const data = get(o, 'BackendData');
  if (data !== undefined && data !== null) attrs.backendData = data;
  const data6 = get(o, 'BackendV6Data');
  if (data6 !== undefined && data6 !== null) attrs.backendV6Data = data6;
  return attrs;
}

/** vxlan's BackendData / BackendV6Data: {"VNI":1,"VtepMAC":"..."} (flannel's vxlanLeaseAttrs). */
export interface VxlanLeaseData {
  vni: number;
  vtepMac: string;
}

function vxlanData(d: unknown): VxlanLeaseData | undefined {
  if (typeof d !== 'object' || d === null) return undefined;
  const vni = get(d as Record<string, unknown>, 'VNI');
  const mac = get(d as Record<string, unknown>, 'VtepMAC');
  if (typeof vni !== 'number' || typeof mac !== 'string') return undefined;
  return { vni, vtepMac: mac.toLowerCase() };
}

/** The IPv4 VTEP (flannel.<VNI>) of a vxlan lease. */
export function vxlanLeaseData(attrs: LeaseAttrs): VxlanLeaseData | undefined {
  return vxlanData(attrs.backendData);
}

/** The IPv6 VTEP (flannel-v6.<VNI>) of a vxlan lease. */
export function vxlanLeaseDataV6(attrs: LeaseAttrs): VxlanLeaseData | undefined {
  return vxlanData(attrs.backendV6Data);
}
