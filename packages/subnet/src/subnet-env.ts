import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { type Cidr, cidrNetwork, formatCidr, parseCidr, WeftError } from '@weft/core';
import type { NetworkConfig } from './config.js';
import { SubnetErrorCode } from './errors.js';

/**
 * flannel's subnet.env: what the CNI plugin and the node read to know the node's subnet.
 * FLANNEL_SUBNET is the subnet's first host address with its prefix (10.244.1.1/24).
 */
export interface SubnetEnv {
  network?: string;
  subnet?: string;
  ipv6Network?: string;
  ipv6Subnet?: string;
  mtu: number;
  ipMasq: boolean;
}

function firstHost(subnet: string): string {
  const c = parseCidr(subnet);
  if (c.family === 4)
    return formatCidr({ family: 4, address: c.address + 1, prefixLength: c.prefixLength });
  const address = Uint8Array.from(c.address);
  for (let i = 15; i >= 0; i--) {
    address[i] = (address[i] + 1) & 0xff;
    if (address[i] !== 0) break;
  }
  return formatCidr({ family: 6, address, prefixLength: c.prefixLength });
}

/** The file's text, in flannel's order and spelling. */
export function subnetEnvText(
  config: NetworkConfig,
  lease: { subnet?: string; subnet6?: string },
  mtu: number,
  ipMasq: boolean,
): string {
  let out = '';
  if (config.enableIpv4 && config.network && lease.subnet) {
    out += `FLANNEL_NETWORK=${formatCidr(config.network)}\nFLANNEL_SUBNET=${firstHost(lease.subnet)}\n`;
  }
  if (config.enableIpv6 && config.ipv6Network && lease.subnet6) {
    out += `FLANNEL_IPV6_NETWORK=${formatCidr(config.ipv6Network)}\nFLANNEL_IPV6_SUBNET=${firstHost(lease.subnet6)}\n`;
  }
  return `${out}FLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=${ipMasq}\n`;
}

/** Writes subnet.env atomically: a temp file in the same directory, fsync, rename, fsync the directory. */
export function writeSubnetEnv(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch (err) {
    // The old file, if any, stays whole; a half-written temp does not linger.
    try {
      rmSync(tmp, { force: true });
    } catch {}
    throw new WeftError(
      SubnetErrorCode.subnetFile,
      `cannot write ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** Reads subnet.env; undefined when the file does not exist. */
export function readSubnetEnv(path: string): SubnetEnv | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WeftError(
      SubnetErrorCode.subnetFile,
      `cannot read ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars.set(m[1], m[2].trim());
  }
  return {
    network: vars.get('FLANNEL_NETWORK'),
    subnet: vars.get('FLANNEL_SUBNET'),
    ipv6Network: vars.get('FLANNEL_IPV6_NETWORK'),
    ipv6Subnet: vars.get('FLANNEL_IPV6_SUBNET'),
    mtu: Number(vars.get('FLANNEL_MTU') ?? 0),
    ipMasq: vars.get('FLANNEL_IPMASQ') === 'true',
  };
}

/** The lease subnet recorded in a subnet.env (10.244.1.1/24 -> 10.244.1.0/24), to ask for it again. */
export function previousSubnets(env: SubnetEnv | undefined): { subnet?: Cidr; subnet6?: Cidr } {
  const parse = (text: string | undefined) => {
    if (!text) return undefined;
    try {
      return cidrNetwork(parseCidr(text, { allowHostBits: true }));
    } catch {
      return undefined;
    }
  };
  return { subnet: parse(env?.subnet), subnet6: parse(env?.ipv6Subnet) };
}
