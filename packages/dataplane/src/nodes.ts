import {
  formatCidr,
  formatIp,
  formatMac,
  type IpAddress,
  parseCidr,
  parseIp,
  parseMac,
  WeftError,
} from '@weft/core';

/** A remote node as a node agent knows it from its subnet lease. */
export interface RemoteNode {
  /** The node's pod subnet, e.g. `10.244.2.0/24` (required for TUN-mode backends). */
  subnet?: string;
  /** Its IPv6 pod subnet, when dual-stack. */
  subnet6?: string;
  /** The node's underlay (public) address, where its encapsulated traffic goes. */
  publicIp: string;
  /** vxlan: the remote VTEP's MAC (flannel's `VtepMAC`). */
  vtepMac?: string;
  /** vxlan, TUN mode: the remote VTEP's address; flannel's convention is the subnet's first address. */
  vtepAddress?: string;
  vtepAddress6?: string;
  /** The node's UDP port, when it differs from this backend's. */
  port?: number;
  /** A label for status output, e.g. the node name. */
  name?: string;
}

export interface ParsedNode {
  key: string;
  input: RemoteNode;
  subnet: string | undefined;
  subnet6: string | undefined;
  publicIp: IpAddress;
  vtepMac: string | undefined;
  vtepAddress: string | undefined;
  vtepAddress6: string | undefined;
  port: number | undefined;
}

/** The `code` of each WeftError this package throws or reports. */
export const DataplaneErrorCode = {
  /** A remote node that does not parse or lacks what the backend needs; nothing was changed. */
  badNode: 'ERR_DATAPLANE_BAD_NODE',
  /** An option of the wrong type or out of range. */
  badOption: 'ERR_DATAPLANE_BAD_OPTION',
  /** A call on a backend after close(). */
  closed: 'ERR_DATAPLANE_CLOSED',
  /** The TUN/TAP device went away under a running backend (deleted, or its namespace removed). */
  deviceLost: 'ERR_DATAPLANE_DEVICE_LOST',
  /** Reading the underlay socket failed for good. */
  socketLost: 'ERR_DATAPLANE_SOCKET_LOST',
} as const;

/** Validates a node; `needs` says which fields this backend requires. */
export function parseNode(
  node: RemoteNode,
  needs: { subnet: boolean; vtepMac: boolean },
): ParsedNode {
  const describe = node.name ?? node.subnet ?? node.publicIp;
  try {
    const publicIp = parseIp(node.publicIp);
    const subnet = node.subnet === undefined ? undefined : formatCidr(parseCidr(node.subnet));
    const subnet6 = node.subnet6 === undefined ? undefined : formatCidr(parseCidr(node.subnet6));
    if (needs.subnet && subnet === undefined)
      throw new WeftError(DataplaneErrorCode.badNode, 'subnet is required');
    if (needs.vtepMac && node.vtepMac === undefined)
      throw new WeftError(DataplaneErrorCode.badNode, 'vtepMac is required for a vxlan node');
    const vtepMac = node.vtepMac === undefined ? undefined : formatMac(parseMac(node.vtepMac));
    // flannel's convention: a node's VTEP address is the first address of its subnet (10.244.2.0).
    const vtepAddress = node.vtepAddress ?? (subnet ? subnet.split('/')[0] : undefined);
    const vtepAddress6 = node.vtepAddress6 ?? (subnet6 ? subnet6.split('/')[0] : undefined);
    if (vtepAddress !== undefined) parseIp(vtepAddress);
    if (vtepAddress6 !== undefined) parseIp(vtepAddress6);
    if (
      node.port !== undefined &&
      (!Number.isInteger(node.port) || node.port < 1 || node.port > 65535)
    ) {
      throw new WeftError(DataplaneErrorCode.badNode, `port ${node.port} is not a UDP port`);
    }
    return {
      key: subnet ?? formatIp(publicIp),
      input: node,
      subnet,
      subnet6,
      publicIp,
      vtepMac,
      vtepAddress,
      vtepAddress6,
      port: node.port,
    };
  } catch (err) {
    const code = err instanceof WeftError ? err.code : DataplaneErrorCode.badNode;
    throw new WeftError(code, `remote node ${describe}: ${(err as Error).message}`, { cause: err });
  }
}
