import {
  type Cidr4,
  type Cidr6,
  formatCidr,
  parseCidr,
  tryParseIpv4,
  tryParseIpv6,
  WeftError,
} from '@weft/core';
import { SubnetErrorCode } from './errors.js';

/**
 * A subnet lease as flannel stores it: the key names the subnet(s), `10.244.1.0-24` or
 * `10.244.1.0-24&fc00::-64`, and the value is the node's attributes as JSON, e.g.
 * {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
 */
export interface LeaseAttrs {
  publicIp: string;
  publicIpv6?: string;
  backendType: string;
  /** Backend-specific data, kept as JSON values (vxlan: VNI and VtepMAC). */
  backendData?: unknown;
  backendV6Data?: unknown;
}

/** A node's subnet lease: its subnet(s), what the node published with it, and when it expires. */
export interface Lease {
  /** The store key, e.g. `10.244.1.0-24` (dual stack: `10.244.1.0-24&fc00:0:0:1::-64`). */
  key: string;
  /** e.g. 10.244.1.0/24 */
  subnet: string;
  /** e.g. fc00:0:0:1::/64, when dual-stack */
  subnet6?: string;
  /** What the node published: public IP(s), backend type and data. */
  attrs: LeaseAttrs;
  /** When it expires (ms since the epoch); undefined for a reservation, which never does. */
  expiresAt?: number;
  /** The store revision that last changed it. */
  revision: number;
}

/** The store key of a subnet (pair), flannel's: `10.244.1.0-24`, `10.244.1.0-24&fc00::-64`. */
export function subnetKey(subnet: Cidr4, subnet6?: Cidr6): string {
  const v4 = formatCidr(subnet).replace('/', '-');
  return subnet6 ? `${v4}&${formatCidr(subnet6).replace('/', '-')}` : v4;
}

const KEY_RE = /(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-fA-F\d:]+)-(\d+))?$/;

/** Parses the subnet part of a key (as flannel's ParseSubnetKey); undefined when it is not one. */
export function parseSubnetKey(key: string): { subnet: Cidr4; subnet6?: Cidr6 } | undefined {
  const m = KEY_RE.exec(key);
  if (!m) return undefined;
  try {
    const subnet = parseCidr(`${m[1]}/${m[2]}`) as Cidr4;
    if (subnet.family !== 4) return undefined;
    if (m[3] === undefined) return { subnet };
    const subnet6 = parseCidr(`${m[3]}/${m[4]}`) as Cidr6;
    return subnet6.family === 6 ? { subnet, subnet6 } : undefined;
  } catch {
    return undefined;
  }
}

/** flannel's JSON for the attributes, fields in Go's order (PublicIPv6 is null, not omitted). */
export function leaseAttrsJson(attrs: LeaseAttrs): string {
  const out: Record<string, unknown> = {
    PublicIP: attrs.publicIp,
    PublicIPv6: attrs.publicIpv6 ?? null,
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
  if (typeof publicIp !== 'string' || tryParseIpv4(publicIp) === undefined)
    throw bad(`PublicIP ${JSON.stringify(publicIp)} is not an IPv4 address`);
  const publicIpv6 = get(o, 'PublicIPv6');
  if (
    publicIpv6 !== undefined &&
    publicIpv6 !== null &&
    (typeof publicIpv6 !== 'string' || tryParseIpv6(publicIpv6) === undefined)
  ) {
    throw bad(`PublicIPv6 ${JSON.stringify(publicIpv6)} is not an IPv6 address`);
  }
  const backendType = get(o, 'BackendType');
  if (backendType !== undefined && typeof backendType !== 'string')
    throw bad('BackendType is not a string');
  const attrs: LeaseAttrs = { publicIp, backendType: (backendType as string | undefined) ?? '' };
  if (typeof publicIpv6 === 'string') attrs.publicIpv6 = publicIpv6;
  const data = get(o, 'BackendData');
  if (data !== undefined && data !== null) attrs.backendData = data;
  const data6 = get(o, 'BackendV6Data');
  if (data6 !== undefined && data6 !== null) attrs.backendV6Data = data6;
  return attrs;
}

/** vxlan's BackendData: {"VNI":1,"VtepMAC":"..."} (flannel's vxlanLeaseAttrs). */
export interface VxlanLeaseData {
  vni: number;
  vtepMac: string;
}

/** The VXLAN backend data of a lease (VNI and VTEP MAC), or undefined for another backend. */
export function vxlanLeaseData(attrs: LeaseAttrs): VxlanLeaseData | undefined {
  const d = attrs.backendData;
  if (typeof d !== 'object' || d === null) return undefined;
  const vni = get(d as Record<string, unknown>, 'VNI');
  const mac = get(d as Record<string, unknown>, 'VtepMAC');
  if (typeof vni !== 'number' || typeof mac !== 'string') return undefined;
  return { vni, vtepMac: mac.toLowerCase() };
}
