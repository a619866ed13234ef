import {
  type Cidr4,
  type Cidr6,
  cidrNetwork,
  formatCidr,
  formatIpv4,
  formatIpv6,
  parseCidr,
  tryParseIpv4,
  tryParseIpv6,
  WeftError,
} from '@weft/core';
import { configError, SubnetErrorCode } from './errors.js';

/**
 * flannel's network config (the JSON at `<prefix>/config`), parsed the way flannel's Go code
 * parses it: keys match case-insensitively (Go's encoding/json), then CheckNetworkConfig's
 * defaults and rules apply. Every rejection is a WeftError naming the field and the rule.
 */
export type BackendType = 'udp' | 'vxlan' | 'host-gw' | 'alloc' | 'wireguard';

/** flannel's `udp` backend: IP packets in UDP datagrams (port 8285 by default). */
export interface UdpBackendConfig {
  type: 'udp';
  /** flannel's default 8285. */
  port: number;
}

/** flannel's `vxlan` backend: VNI, UDP port, MTU, Learning, DirectRouting and GBP as flannel reads them. */
export interface VxlanBackendConfig {
  type: 'vxlan';
  /** Default 1. */
  vni: number;
  /** 0 means the kernel's default, 8472 (flannel leaves it to the kernel). */
  port: number;
  /**
   * The underlay MTU the device's is derived from (flannel's vxlan: device and FLANNEL_MTU are
   * this less 50); 0 means the underlay interface's own MTU.
   */
  mtu: number;
  learning: boolean;
  directRouting: boolean;
  gbp: boolean;
}

/** flannel's `host-gw` backend: plain routes via each node's public IP, no encapsulation. */
export interface HostGwBackendConfig {
  type: 'host-gw';
}

/** Subnet allocation only: the node leases a subnet and forwards nothing (flannel's `alloc`). */
export interface AllocBackendConfig {
  type: 'alloc';
}

/** flannel's `wireguard` backend (pkg/backend/wireguard: RegisterNetwork's cfg and defaults). */
export interface WireguardBackendConfig {
  type: 'wireguard';
  /** The IPv4 device's port, published in the lease (default 51820). */
  listenPort: number;
  /** The IPv6 device's port in `separate` mode (default 51821). */
  listenPortV6: number;
  /** The underlay MTU the device's is derived from (less 80); 0 means the interface's own. */
  mtu: number;
  /** A pre-shared key for every peer (base64), when set. */
  psk?: string;
  /** Seconds between keepalives (flannel multiplies the number by time.Second); 0 off. */
  persistentKeepaliveSeconds: number;
  mode: 'separate' | 'auto' | 'ipv4' | 'ipv6';
}

/** The parsed `Backend` of the network config, by `Type`. */
export type BackendConfig =
  | WireguardBackendConfig
  | UdpBackendConfig
  | VxlanBackendConfig
  | HostGwBackendConfig
  | AllocBackendConfig;

/** flannel's network config as parsed and checked by {@link parseNetworkConfig}. */
export interface NetworkConfig {
  enableIpv4: boolean;
  enableIpv6: boolean;
  /** Masquerade and forward rules with nftables (table flannel-ipv4) instead of iptables. */
  enableNftables: boolean;
  network?: Cidr4;
  subnetLen: number;
  /** Network addresses of the first and last subnets that may be leased. */
  subnetMin: number;
  subnetMax: number;
  ipv6Network?: Cidr6;
  ipv6SubnetLen: number;
  ipv6SubnetMin?: Uint8Array;
  ipv6SubnetMax?: Uint8Array;
  backend: BackendConfig;
  /** The backend section as it was written (flannel hands it to the backend raw). */
  backendRaw: Record<string, unknown>;
}

/** Go's encoding/json: an exact key match first, else the first case-insensitive one. */
function field(obj: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name];
  const lower = name.toLowerCase();
  for (const key of Object.keys(obj)) if (key.toLowerCase() === lower) return obj[key];
  return undefined;
}

function expectType<T>(
  value: unknown,
  name: string,
  type: 'string' | 'number' | 'boolean',
): T | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== type)
    throw configError(name, `must be a ${type}, not ${JSON.stringify(value)}`);
  if (type === 'number' && (!Number.isInteger(value) || (value as number) < 0))
    throw configError(name, `must be a non-negative integer, not ${value}`);
  return value as T;
}

function ipv4Field(value: unknown, name: string): number | undefined {
  const text = expectType<string>(value, name, 'string');
  if (text === undefined || text === '') return undefined;
  const ip = tryParseIpv4(text);
  if (ip === undefined) throw configError(name, `${JSON.stringify(text)} is not an IPv4 address`);
  return ip;
}

function ipv6Field(value: unknown, name: string): Uint8Array | undefined {
  const text = expectType<string>(value, name, 'string');
  if (text === undefined || text === '') return undefined;
  const ip = tryParseIpv6(text);
  if (ip === undefined) throw configError(name, `${JSON.stringify(text)} is not an IPv6 address`);
  return ip;
}

function cidrField(value: unknown, name: string, family: 4 | 6): Cidr4 | Cidr6 | undefined {
  const text = expectType<string>(value, name, 'string');
  if (text === undefined || text === '') return undefined;
  let cidr: Cidr4 | Cidr6;
  try {
    // flannel's ip.IP4Net unmarshal keeps the network, so host bits are cleared rather than refused.
    cidr = cidrNetwork(parseCidr(text, { allowHostBits: true }));
  } catch (err) {
    throw configError(name, `${JSON.stringify(text)} is not a CIDR: ${(err as Error).message}`);
  }
  if (cidr.family !== family)
    throw configError(name, `${JSON.stringify(text)} must be an IPv${family} network`);
  return cidr;
}

function parseBackend(raw: unknown): {
  backend: BackendConfig;
  backendRaw: Record<string, unknown>;
} {
  if (raw === undefined || raw === null)
    return { backend: { type: 'udp', port: 8285 }, backendRaw: {} };
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw configError('Backend', 'must be an object');
  const obj = raw as Record<string, unknown>;
  // flannel: no Backend means udp; a Backend without Type is an unknown (empty) type; the type
  // is matched lowercased (pkg/backend/manager.go GetBackend: strings.ToLower).
  const type = (
    expectType<string>(field(obj, 'Type'), 'Backend.Type', 'string') ?? ''
  ).toLowerCase();
  switch (type) {
    case 'udp': {
      const port = expectType<number>(field(obj, 'Port'), 'Backend.Port', 'number') ?? 8285;
      if (port < 1 || port > 65535) throw configError('Backend.Port', `${port} must be 1..65535`);
      return { backend: { type, port }, backendRaw: obj };
    }
    case 'vxlan': {
      const vni = expectType<number>(field(obj, 'VNI'), 'Backend.VNI', 'number') ?? 1;
      if (vni > 0xffffff) throw configError('Backend.VNI', `${vni} must fit 24 bits (0..16777215)`);
      const port = expectType<number>(field(obj, 'Port'), 'Backend.Port', 'number') ?? 0;
      if (port > 65535)
        throw configError(
          'Backend.Port',
          `${port} must be 0..65535 (0: the kernel's default, 8472)`,
        );
      const mtu = expectType<number>(field(obj, 'MTU'), 'Backend.MTU', 'number') ?? 0;
      if (mtu !== 0 && (mtu < 68 || mtu > 65535))
        throw configError('Backend.MTU', `${mtu} must be 68..65535, or 0 to derive it`);
      return {
        backend: {
          type,
          vni,
          port,
          mtu,
          learning:
            expectType<boolean>(field(obj, 'Learning'), 'Backend.Learning', 'boolean') ?? false,
          directRouting:
            expectType<boolean>(field(obj, 'DirectRouting'), 'Backend.DirectRouting', 'boolean') ??
            false,
          gbp: expectType<boolean>(field(obj, 'GBP'), 'Backend.GBP', 'boolean') ?? false,
        },
        backendRaw: obj,
      };
    }
    case 'host-gw':
    case 'alloc':
      return { backend: { type }, backendRaw: obj };
    case 'wireguard': {
      const int = (name: string, fallback: number, max: number) => {
        const v = expectType<number>(field(obj, name), `Backend.${name}`, 'number') ?? fallback;
        if (!Number.isInteger(v) || v < 0 || v > max)
          throw configError(`Backend.${name}`, `${v} must be a whole number 0..${max}`);
        return v;
      };
      const listenPort = int('ListenPort', 51820, 65535);
      const listenPortV6 = int('ListenPortV6', 51821, 65535);
      const mtu = int('MTU', 0, 65535);
      if (mtu !== 0 && mtu < 148)
        throw configError(
          'Backend.MTU',
          `${mtu} leaves no room for WireGuard's 80 bytes: use 148..65535, or 0`,
        );
      // A time.Duration in Go's JSON: a number, which flannel then multiplies by a second; wg keeps 16 bits.
      const persistentKeepaliveSeconds = int('PersistentKeepaliveInterval', 0, 65535);
      const psk = expectType<string>(field(obj, 'PSK'), 'Backend.PSK', 'string') || undefined;
      if (psk !== undefined && !/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(psk))
        throw configError(
          'Backend.PSK',
          'is not a WireGuard key: use 32 bytes in base64, as `wg genpsk` prints',
        );
      const mode = expectType<string>(field(obj, 'Mode'), 'Backend.Mode', 'string') ?? 'separate';
      if (mode !== 'separate' && mode !== 'auto' && mode !== 'ipv4' && mode !== 'ipv6')
        throw configError(
          'Backend.Mode',
          `${JSON.stringify(mode)} is not one of separate, auto, ipv4, ipv6`,
        );
      return {
        backend: { type, listenPort, listenPortV6, mtu, psk, persistentKeepaliveSeconds, mode },
        backendRaw: obj,
      };
    }
    default:
      throw configError(
        'Backend.Type',
        `${JSON.stringify(type)} is not a backend weft runs: use udp, vxlan, wireguard, host-gw or alloc`,
      );
  }
}

/** Parses and checks flannel's network config JSON (text or an already-parsed object). */
export function parseNetworkConfig(input: string | Record<string, unknown>): NetworkConfig {
  let obj: unknown = input;
  if (typeof input === 'string') {
    try {
      obj = JSON.parse(input);
    } catch (err) {
      throw new WeftError(
        SubnetErrorCode.badConfig,
        `network config is not JSON: ${(err as Error).message}`,
      );
    }
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new WeftError(SubnetErrorCode.badConfig, 'network config must be a JSON object');
  }
  const raw = obj as Record<string, unknown>;
  const enableIpv4 = expectType<boolean>(field(raw, 'EnableIPv4'), 'EnableIPv4', 'boolean') ?? true;
  const enableIpv6 =
    expectType<boolean>(field(raw, 'EnableIPv6'), 'EnableIPv6', 'boolean') ?? false;
  const enableNftables =
    expectType<boolean>(field(raw, 'EnableNFTables'), 'EnableNFTables', 'boolean') ?? false;
  const { backend, backendRaw } = parseBackend(field(raw, 'Backend'));
  const config: NetworkConfig = {
    enableIpv4,
    enableIpv6,
    enableNftables,
    subnetLen: 0,
    subnetMin: 0,
    subnetMax: 0,
    ipv6SubnetLen: 0,
    backend,
    backendRaw,
  };

  if (enableIpv4) {
    const network = cidrField(field(raw, 'Network'), 'Network', 4) as Cidr4 | undefined;
    if (!network) throw configError('Network', 'is required (e.g. "10.244.0.0/16")');
    config.network = network;
    let subnetLen = expectType<number>(field(raw, 'SubnetLen'), 'SubnetLen', 'number') ?? 0;
    if (subnetLen > 0) {
      if (subnetLen > 30)
        throw configError(
          'SubnetLen',
          `${subnetLen} must be <= 30 (a node needs room for a tunnel and a bridge address)`,
        );
      if (subnetLen < network.prefixLength + 2) {
        throw configError(
          'SubnetLen',
          `${subnetLen} must be >= ${network.prefixLength + 2} (the Network /${network.prefixLength} must hold at least four subnets)`,
        );
      }
    } else if (network.prefixLength > 28) {
      throw configError(
        'Network',
        `/${network.prefixLength} is too small: the longest useful prefix is /28`,
      );
    } else {
      subnetLen = network.prefixLength <= 22 ? 24 : network.prefixLength + 2;
    }
    config.subnetLen = subnetLen;
    const size = 2 ** (32 - subnetLen);
    const last = network.address + 2 ** (32 - network.prefixLength) - size;
    const min = ipv4Field(field(raw, 'SubnetMin'), 'SubnetMin');
    const max = ipv4Field(field(raw, 'SubnetMax'), 'SubnetMax');
    const inNetwork = (ip: number) =>
      ip >= network.address && ip < network.address + 2 ** (32 - network.prefixLength);
    if (min !== undefined && !inNetwork(min))
      throw configError(
        'SubnetMin',
        `${formatIpv4(min)} is not inside Network ${formatCidr(network)}`,
      );
    if (max !== undefined && !inNetwork(max))
      throw configError(
        'SubnetMax',
        `${formatIpv4(max)} is not inside Network ${formatCidr(network)}`,
      );
    // flannel skips the first subnet: its first address would be the network's own.
    config.subnetMin = min ?? network.address + size;
    config.subnetMax = max ?? last;
    if (config.subnetMin % size !== 0)
      throw configError(
        'SubnetMin',
        `${formatIpv4(config.subnetMin)} is not on a /${subnetLen} boundary`,
      );
    if (config.subnetMax % size !== 0)
      throw configError(
        'SubnetMax',
        `${formatIpv4(config.subnetMax)} is not on a /${subnetLen} boundary`,
      );
    if (config.subnetMin > config.subnetMax)
      throw configError(
        'SubnetMin',
        `${formatIpv4(config.subnetMin)} is after SubnetMax ${formatIpv4(config.subnetMax)}`,
      );
  }

  if (enableIpv6) {
    const network = cidrField(field(raw, 'IPv6Network'), 'IPv6Network', 6) as Cidr6 | undefined;
    if (!network)
      throw configError('IPv6Network', 'is required when EnableIPv6 is true (e.g. "fc00::/48")');
    config.ipv6Network = network;
    let len = expectType<number>(field(raw, 'IPv6SubnetLen'), 'IPv6SubnetLen', 'number') ?? 0;
    if (len > 0) {
      if (len > 126) throw configError('IPv6SubnetLen', `${len} must be <= 126`);
      if (len < network.prefixLength + 2)
        throw configError(
          'IPv6SubnetLen',
          `${len} must be >= ${network.prefixLength + 2} (the IPv6Network must hold at least four subnets)`,
        );
    } else if (network.prefixLength > 124) {
      throw configError(
        'IPv6Network',
        `/${network.prefixLength} is too small: the longest useful prefix is /124`,
      );
    } else {
      len = network.prefixLength <= 62 ? 64 : network.prefixLength + 2;
    }
    config.ipv6SubnetLen = len;
    const base = toBig(network.address);
    const size = 1n << BigInt(128 - len);
    const end = base + (1n << BigInt(128 - network.prefixLength));
    const min = ipv6Field(field(raw, 'IPv6SubnetMin'), 'IPv6SubnetMin');
    const max = ipv6Field(field(raw, 'IPv6SubnetMax'), 'IPv6SubnetMax');
    for (const [name, v] of [
      ['IPv6SubnetMin', min],
      ['IPv6SubnetMax', max],
    ] as const) {
      if (v === undefined) continue;
      const n = toBig(v);
      if (n < base || n >= end)
        throw configError(
          name,
          `${formatIpv6(v)} is not inside IPv6Network ${formatCidr(network)}`,
        );
      if (n % size !== 0n) throw configError(name, `${formatIpv6(v)} is not on a /${len} boundary`);
    }
    config.ipv6SubnetMin = min ?? fromBig(base + size);
    config.ipv6SubnetMax = max ?? fromBig(end - size);
  }
  if (!enableIpv4 && !enableIpv6)
    throw configError('EnableIPv4', 'and EnableIPv6 are both false: nothing to do');
  return config;
}

export function toBig(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

export function fromBig(n: bigint): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/** The network config back as flannel's JSON (for `etcdctl put`-style seeding and tests). */
export function networkConfigJson(config: NetworkConfig): string {
  const out: Record<string, unknown> = {};
  if (!config.enableIpv4) out.EnableIPv4 = false;
  if (config.network) {
    out.Network = formatCidr(config.network);
    out.SubnetLen = config.subnetLen;
    out.SubnetMin = formatIpv4(config.subnetMin);
    out.SubnetMax = formatIpv4(config.subnetMax);
  }
  if (config.enableIpv6 && config.ipv6Network) {
    out.EnableIPv6 = true;
    out.IPv6Network = formatCidr(config.ipv6Network);
    out.IPv6SubnetLen = config.ipv6SubnetLen;
    if (config.ipv6SubnetMin) out.IPv6SubnetMin = formatIpv6(config.ipv6SubnetMin);
    if (config.ipv6SubnetMax) out.IPv6SubnetMax = formatIpv6(config.ipv6SubnetMax);
  }
  if (config.enableNftables) out.EnableNFTables = true;
  out.Backend = config.backendRaw;
  return JSON.stringify(out);
}
