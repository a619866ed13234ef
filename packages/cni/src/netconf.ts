import { parseCidr, tryParseIp } from '@weft/core';
import { CniCode, CniError } from './errors.js';
import { configVersion, validateNetworkName } from './protocol.js';
import { DEFAULT_SUBNET_FILE, type FlannelSubnetEnv } from './subnet-env.js';

/** Where the plugin keeps each container's delegate configuration, for DEL. */
export const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';

type Json = Record<string, unknown>;

/** The plugin's own configuration (kube-flannel's cni-conf.json entry), checked. */
export interface FlannelNetConf {
  cniVersion: string;
  name: string;
  subnetFile: string;
  dataDir: string;
  /** Options for the delegate plugin; flannel fills in the rest. */
  delegate: Json;
  /** The base of the delegate's `ipam` section. */
  ipam?: Json;
  runtimeConfig?: Json;
  prevResult?: Json;
  /** The whole configuration as given (GC reads `cni.dev/valid-attachments` from it). */
  raw: Json;
}

const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(msg: string, details: string): never {
  throw new CniError(CniCode.invalidConfig, msg, details);
}

function optionalString(conf: Json, key: string, fallback: string): string {
  const v = conf[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || v === '')
    bad(`"${key}" must be a non-empty string`, JSON.stringify(v));
  return v;
}

function optionalObject(conf: Json, key: string): Json | undefined {
  const v = conf[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) bad(`"${key}" must be an object`, JSON.stringify(v));
  return v;
}

/** Checks `ipam.routes` as flannel does (each a route with a CIDR `dst` and optional IP `gw`). */
function checkRoutes(routes: unknown): void {
  if (!Array.isArray(routes)) bad('failed to parse ipam.routes', 'expected a list of routes');
  for (const r of routes) {
    if (!isObject(r) || typeof r.dst !== 'string') {
      bad('failed to parse ipam.routes', `each route needs a "dst" CIDR: ${JSON.stringify(r)}`);
    }
    try {
      parseCidr(r.dst, { allowHostBits: true });
    } catch (err) {
      bad('failed to parse ipam.routes', (err as Error).message);
    }
    if (r.gw !== undefined && (typeof r.gw !== 'string' || !tryParseIp(r.gw))) {
      bad('failed to parse ipam.routes', `"gw" must be an IP address: ${JSON.stringify(r.gw)}`);
    }
  }
}

/**
 * Parses the configuration a runtime passes on stdin (code 6 when it is not JSON, 7 when it is
 * not a valid flannel configuration, 1 for an unsupported cniVersion).
 */
export function parseNetConf(stdin: string): FlannelNetConf {
  let conf: unknown;
  try {
    conf = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(
      CniCode.decodingFailure,
      `error unmarshall network config: ${(err as Error).message}`,
    );
  }
  if (!isObject(conf)) {
    throw new CniError(CniCode.decodingFailure, 'error unmarshall network config: not an object');
  }
  validateNetworkName(conf.name);
  const cniVersion = configVersion(conf);
  const delegate = optionalObject(conf, 'delegate') ?? {};
  if ('type' in delegate && typeof delegate.type !== 'string') {
    bad(
      "'delegate' dictionary, if present, must have (string) 'type' field",
      JSON.stringify(delegate.type),
    );
  }
  if (delegate.type === '' || (typeof delegate.type === 'string' && /[/\\]/.test(delegate.type))) {
    bad("'delegate' type must name a plugin in CNI_PATH", JSON.stringify(delegate.type));
  }
  if ('name' in delegate) {
    bad("'delegate' dictionary must not have 'name' field, it'll be set by flannel", 'remove it');
  }
  if ('ipam' in delegate) {
    bad(
      "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
      'put IPAM options in the top-level "ipam" instead',
    );
  }
  const ipam = optionalObject(conf, 'ipam');
  if (ipam && 'type' in ipam && (typeof ipam.type !== 'string' || ipam.type === '')) {
    bad('"ipam.type" must name an IPAM plugin', JSON.stringify(ipam.type));
  }
  if (ipam?.routes !== undefined) checkRoutes(ipam.routes);
  const out: FlannelNetConf = {
    cniVersion,
    name: conf.name,
    subnetFile: optionalString(conf, 'subnetFile', DEFAULT_SUBNET_FILE),
    dataDir: optionalString(conf, 'dataDir', DEFAULT_DATA_DIR),
    delegate,
    raw: conf,
  };
  if (ipam) out.ipam = ipam;
  const runtimeConfig = optionalObject(conf, 'runtimeConfig');
  if (runtimeConfig) out.runtimeConfig = runtimeConfig;
  const prevResult = optionalObject(conf, 'prevResult');
  if (prevResult) out.prevResult = prevResult;
  return out;
}

/**
 * The configuration flannel hands its delegate: the `delegate` options, with `name`, `type`
 * (bridge), `ipMasq` (off when the daemon masquerades), `mtu`, `isGateway` (bridge) and
 * `cniVersion` filled in where absent, and an `ipam` section (host-local by default) with a range
 * per node subnet and a route per cluster network.
 */
export function delegateConfig(conf: FlannelNetConf, env: FlannelSubnetEnv): Json {
  const d: Json = { ...conf.delegate };
  if (conf.runtimeConfig) d.runtimeConfig = conf.runtimeConfig;
  d.name = conf.name;
  if (!('type' in d)) d.type = 'bridge';
  if (!('ipMasq' in d)) d.ipMasq = !env.ipMasq;
  if (!('mtu' in d)) d.mtu = env.mtu;
  if (d.type === 'bridge' && !('isGateway' in d)) d.isGateway = true;
  // As flannel: a configuration without cniVersion gives the delegate none (0.1.0 to libcni).
  if (typeof conf.raw.cniVersion === 'string' && conf.raw.cniVersion !== '')
    d.cniVersion = conf.cniVersion;
  const ipam: Json = { ...conf.ipam };
  if (!('type' in ipam)) ipam.type = 'host-local';
  const ranges: Json[][] = [];
  if (env.subnet) ranges.push([{ subnet: env.subnet }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: env.ipv6Subnet }]);
  ipam.ranges = ranges;
  const routes = Array.isArray(ipam.routes) ? [...ipam.routes] : [];
  for (const dst of [...env.networks, ...env.ipv6Networks]) routes.push({ dst });
  ipam.routes = routes;
  d.ipam = ipam;
  return d;
}
