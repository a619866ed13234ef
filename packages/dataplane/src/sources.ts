import { type Cidr, parseCidr, parseIp } from '@weft/core';
import { Ipv6Map, ipv6PrefixEquals, NumberMap } from '@weft/fdb';

/**
 * What the receive path knows of a remote node by its underlay address: the subnets its pods may
 * send from. A node re-leasing a new subnet can briefly hold two leases on one address, so a
 * source has a list. Addresses as signed 32-bit numbers, which no call boxes.
 */
export class SourceNode {
  /** IPv4 subnets: network and mask, signed 32-bit. */
  readonly nets4: Int32Array;
  readonly masks4: Int32Array;
  /** IPv6 subnets: 16 bytes each, and their prefix lengths. */
  readonly nets6: Uint8Array[];
  readonly prefixes6: Uint8Array;

  constructor(subnets: readonly Cidr[]) {
    const v4 = subnets.filter((s) => s.family === 4);
    const v6 = subnets.filter((s) => s.family === 6);
    this.nets4 = Int32Array.from(v4, (s) => (s.address as number) | 0);
    this.masks4 = Int32Array.from(v4, (s) =>
      s.prefixLength === 0 ? 0 : (0xffffffff << (32 - s.prefixLength)) | 0,
    );
    this.nets6 = v6.map((s) => s.address as Uint8Array);
    this.prefixes6 = Uint8Array.from(v6, (s) => s.prefixLength);
  }

  /** Hot path: whether IPv4 address `ip` (either sign) lies in one of the node's subnets. */
  owns4(ip: number): boolean {
    const nets = this.nets4;
    for (let k = 0; k < nets.length; k++) if (((ip ^ nets[k]) & this.masks4[k]) === 0) return true;
    return false;
  }

  /** Hot path: whether the IPv6 address at buf[off] lies in one of the node's subnets. */
  owns6(buf: Uint8Array, off: number): boolean {
    for (let k = 0; k < this.nets6.length; k++)
      if (ipv6PrefixEquals(buf, off, this.nets6[k], this.prefixes6[k])) return true;
    return false;
  }
}

/** Remote nodes by underlay address, IPv4 and IPv6, for the receive path. */
export class SourceIndex {
  private readonly v4 = new NumberMap<SourceNode>();
  private readonly v6 = new Ipv6Map<SourceNode>();

  /** Builds the index from (underlay address, subnets) pairs; one address may appear twice. */
  constructor(sources: readonly { underlay: string; subnets: readonly string[] }[]) {
    const byAddress = new Map<string, { underlay: string; subnets: Cidr[] }>();
    for (const s of sources) {
      const key = s.underlay;
      const entry = byAddress.get(key) ?? { underlay: s.underlay, subnets: [] };
      for (const text of s.subnets) entry.subnets.push(parseCidr(text));
      byAddress.set(key, entry);
    }
    for (const { underlay, subnets } of byAddress.values()) {
      const ip = parseIp(underlay);
      const node = new SourceNode(subnets);
      if (ip.family === 4) this.v4.set(ip.address, node);
      else this.v6.set(ip.address, node);
    }
  }

  /** Hot path: the node at IPv4 underlay address `ip` (either sign), or undefined. */
  get4(ip: number): SourceNode | undefined {
    return this.v4.getWords(0, ip | 0);
  }

  /** Hot path: the node at the IPv6 underlay address at buf[off], or undefined. */
  get6(buf: Uint8Array, off: number): SourceNode | undefined {
    return this.v6.get(buf, off);
  }
}
