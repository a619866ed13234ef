import { readFileSync } from 'node:fs';
import { type Cidr, cidrNetwork, formatCidr, parseCidr } from '@weft/core';
import { CniCode, CniError } from './errors.js';

/** Where flanneld and weftd write the node's lease, and where the plugin reads it by default. */
export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

/**
 * subnet.env as flannel's CNI plugin reads it: the cluster networks (deduplicated), the node's
 * subnets as networks (FLANNEL_SUBNET=10.244.1.1/24 is 10.244.1.0/24), the MTU for pods, and
 * whether the daemon masquerades (then the bridge must not).
 */
export interface FlannelSubnetEnv {
  networks: string[];
  subnet?: string;
  ipv6Networks: string[];
  ipv6Subnet?: string;
  mtu: number;
  ipMasq: boolean;
}

const KNOWN_KEYS = [
  'FLANNEL_NETWORK',
  'FLANNEL_SUBNET',
  'FLANNEL_IPV6_NETWORK',
  'FLANNEL_IPV6_SUBNET',
  'FLANNEL_MTU',
  'FLANNEL_IPMASQ',
];

function cidrOf(path: string, key: string, text: string, family: 4 | 6): Cidr {
  let cidr: Cidr;
  try {
    cidr = parseCidr(text.trim(), { allowHostBits: true });
  } catch (err) {
    throw new CniError(
      CniCode.invalidConfig,
      `${path}: ${key} is not a CIDR`,
      `${(err as Error).message}; the node daemon (weftd or flanneld) writes this file: restart it`,
    );
  }
  if (cidr.family !== family) {
    throw new CniError(
      CniCode.invalidConfig,
      `${path}: ${key} must be an IPv${family} CIDR`,
      `got ${text.trim()}`,
    );
  }
  // flannel (Go's net.IPNet) would print ::ffff:10.1.0.0/112 as the IPv4 network 10.1.0.0/16.
  if (cidr.family === 6 && isIpv4Mapped(cidr.address)) {
    throw new CniError(
      CniCode.invalidConfig,
      `${path}: ${key} is an IPv4-mapped address, not an IPv6 CIDR`,
      `got ${text.trim()}`,
    );
  }
  return cidrNetwork(cidr);
}

function cidrList(path: string, key: string, text: string, family: 4 | 6): string[] {
  const out: string[] = [];
  for (const part of text.split(',')) {
    const network = formatCidr(cidrOf(path, key, part, family));
    if (!out.includes(network)) out.push(network);
  }
  return out;
}

/** True for ::ffff:a.b.c.d (RFC 4291 section 2.5.5.2): an IPv4 address written as IPv6. */
export function isIpv4Mapped(address: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (address[i] !== 0) return false;
  return address[10] === 0xff && address[11] === 0xff;
}

/**
 * Parses subnet.env text. Lines and keys are read as flannel reads them (bufio.Scanner's lines, a
 * key is the text before the first "=", as it stands); unknown keys are ignored. A value is
 * trimmed. A bad value or a missing key is a CniError (code 7) naming the file and the key.
 */
export function parseSubnetEnv(text: string, path = 'subnet.env'): FlannelSubnetEnv {
  let networks: string[] | undefined;
  let ipv6Networks: string[] | undefined;
  let subnet: string | undefined;
  let ipv6Subnet: string | undefined;
  let mtu: number | undefined;
  let ipMasq: boolean | undefined;
  for (const raw of text.split('\n')) {
    // One CR before the newline ends the line too (Go's bufio.ScanLines).
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const eq = line.indexOf('=');
    const key = eq < 0 ? line : line.slice(0, eq);
    const value = eq < 0 ? undefined : line.slice(eq + 1).trim();
    if (!KNOWN_KEYS.includes(key)) continue;
    if (value === undefined) {
      throw new CniError(
        CniCode.invalidConfig,
        `${path}: ${key} has no value`,
        `expected ${key}=...`,
      );
    }
    switch (key) {
      case 'FLANNEL_NETWORK':
        networks = cidrList(path, key, value, 4);
        break;
      case 'FLANNEL_SUBNET':
        subnet = formatCidr(cidrOf(path, key, value, 4));
        break;
      case 'FLANNEL_IPV6_NETWORK':
        ipv6Networks = cidrList(path, key, value, 6);
        break;
      case 'FLANNEL_IPV6_SUBNET':
        ipv6Subnet = formatCidr(cidrOf(path, key, value, 6));
        break;
      case 'FLANNEL_MTU': {
        // Decimal digits, leading zeros allowed (strconv.ParseUint, base 10, as flannel).
        const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
        // 68 is the smallest MTU IPv4 allows (RFC 791); 65535 the largest an IP packet can use.
        if (!(n >= 68 && n <= 65535)) {
          throw new CniError(
            CniCode.invalidConfig,
            `${path}: FLANNEL_MTU must be a whole number from 68 to 65535`,
            `got ${JSON.stringify(value)}`,
          );
        }
        mtu = n;
        break;
      }
      case 'FLANNEL_IPMASQ':
        ipMasq = value === 'true';
        break;
    }
  }
  const missing: string[] = [];
  if (!networks && !ipv6Networks) missing.push('FLANNEL_NETWORK', 'FLANNEL_IPV6_NETWORK');
  if (!subnet && !ipv6Subnet) missing.push('FLANNEL_SUBNET', 'FLANNEL_IPV6_SUBNET');
  if (mtu === undefined) missing.push('FLANNEL_MTU');
  if (ipMasq === undefined) missing.push('FLANNEL_IPMASQ');
  if (missing.length > 0) {
    throw new CniError(
      CniCode.invalidConfig,
      `${path} is missing ${missing.join(', ')}`,
      'the node daemon (weftd or flanneld) writes this file whole: restart it',
    );
  }
  const env: FlannelSubnetEnv = {
    networks: networks ?? [],
    ipv6Networks: ipv6Networks ?? [],
    mtu: mtu as number,
    ipMasq: ipMasq as boolean,
  };
  if (subnet) env.subnet = subnet;
  if (ipv6Subnet) env.ipv6Subnet = ipv6Subnet;
  return env;
}

/**
 * Reads and parses subnet.env. A missing file is "try again later" (code 11): the node daemon
 * writes it once it holds a lease, so a pod started before that succeeds on the runtime's retry.
 */
export function readSubnetEnv(path: string): FlannelSubnetEnv {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new CniError(
        CniCode.tryAgainLater,
        `failed to load flannel 'subnet.env' file: ${path} does not exist`,
        'the node daemon (weftd or flanneld) writes it once it holds a subnet lease: check that it runs on this node and see its log',
        { cause: err },
      );
    }
    throw new CniError(
      CniCode.ioFailure,
      `failed to load flannel 'subnet.env' file: cannot read ${path}`,
      (err as Error).message,
      { cause: err },
    );
  }
  return parseSubnetEnv(text, path);
}
