import { type Cidr, formatCidr, formatIp, parseCidr, tryParseIp } from '@weft/core';
import { CniCode, CniError } from './errors.js';
import { configVersion, validateNetworkName } from './protocol.js';
import { DEFAULT_SUBNET_FILE, type FlannelSubnetEnv, isIpv4Mapped } from './subnet-env.js';

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

/** A string option; null is "not set", as Go's encoding/json reads it into flannel's NetConf. */
function optionalString(conf: Json, key: string, fallback: string): string {
  const v = conf[key];
  if (v === undefined || v === null) return fallback;
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

function badRoutes(details: string): never {
  bad('failed to parse ipam.routes', details);
}

/**
 * An integer route option as Go reads it into an int64. flannel re-encodes the JSON first, so a
 * whole double counts, and -2^63 does not: Go writes it as -9223372036854776000.
 */
function routeInt(route: Json, key: string): number | undefined {
  const v = route[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || Math.abs(v) >= 2 ** 63) {
    badRoutes(`"${key}" must be a whole number: ${JSON.stringify(route)}`);
  }
  return v;
}

/**
 * One of `ipam.routes` as flannel passes it on: read and written by libcni's types.Route, so
 * `dst` (host bits kept) and `gw` in canonical text, an empty or null `gw` left out, `mtu`,
 * `advmss` and `priority` unless 0, `table` and `scope` unless null, and nothing else.
 */
function flannelRoute(r: unknown): Json {
  // flannel writes a route without dst (or null) as {"dst": "<nil>"}, which the IPAM plugin refuses.
  if (!isObject(r) || r.dst === undefined) {
    badRoutes(`each route needs a "dst" CIDR: ${JSON.stringify(r)}`);
  }
  if (typeof r.dst !== 'string') badRoutes(`"dst" must be a CIDR: ${JSON.stringify(r)}`);
  let dst: Cidr;
  try {
    dst = parseCidr(r.dst, { allowHostBits: true });
  } catch (err) {
    return badRoutes((err as Error).message);
  }
  // Go prints an IPv4-mapped route as IPv4 with the mask's last 32 bits: another route.
  if (dst.family === 6 && isIpv4Mapped(dst.address)) {
    badRoutes(`"dst" ${r.dst} is IPv4-mapped: write the IPv4 network`);
  }
  const out: Json = { dst: formatCidr(dst) };
  if (r.gw !== undefined && r.gw !== null && r.gw !== '') {
    const gw = typeof r.gw === 'string' ? tryParseIp(r.gw) : undefined;
    if (!gw) badRoutes(`"gw" must be an IP address: ${JSON.stringify(r.gw)}`);
    if (gw.family === 6 && isIpv4Mapped(gw.address)) {
      badRoutes(`"gw" ${r.gw} is IPv4-mapped: write the IPv4 address`);
    }
    out.gw = formatIp(gw);
  }
  for (const key of ['mtu', 'advmss', 'priority']) {
    const v = routeInt(r, key);
    if (v !== undefined && v !== 0) out[key] = v;
  }
  for (const key of ['table', 'scope']) {
    const v = routeInt(r, key);
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/** `ipam.routes` as flannel passes them on (null: none). */
function flannelRoutes(routes: unknown): Json[] {
  if (routes === null) return [];
  if (!Array.isArray(routes)) return badRoutes('expected a list of routes');
  return routes.map(flannelRoute);
}

/**
 * How deep a configuration may nest: far beyond any real one, and well within what JSON.stringify
 * writes on Node's default stack (about 4000 levels; Go's decoder stops at 10000).
 */
const MAX_NESTING = 1000;

/** The deepest nesting in a parsed JSON value (the top level is 1), without recursion. */
function nestingDepth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number];
    if (v === null || typeof v !== 'object') continue;
    if (depth > deepest) deepest = depth;
    if (deepest > MAX_NESTING) break;
    for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
  return deepest;
}

// An unpaired UTF-16 surrogate: Go decodes its \u escape as U+FFFD.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * A JSON value as flannel's maps hold it (Go's encoding/json into interface{}): a number beyond a
 * double is an error (JSON.parse would make it Infinity, written on as null), an unpaired
 * surrogate in a string or key is U+FFFD. Keys are defined, never assigned: "__proto__" is a key.
 */
function goJson(v: unknown, where: string): unknown {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) bad(`a number in "${where}" is out of range`, 'beyond a double');
    return v;
  }
  if (typeof v === 'string') return v.replace(LONE_SURROGATE, '\ufffd');
  if (Array.isArray(v)) return v.map((x) => goJson(x, where));
  if (v === null || typeof v !== 'object') return v;
  const out: Json = {};
  for (const [k, x] of Object.entries(v)) {
    const value = goJson(x, where);
    Object.defineProperty(out, k.replace(LONE_SURROGATE, '\ufffd'), {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/** An object option (null: not set), as Go's encoding/json fills a map. */
function goObject(conf: Json, key: string): Json | undefined {
  const v = optionalObject(conf, key);
  return v === undefined ? undefined : (goJson(v, key) as Json);
}

const isStringOrNull = (v: unknown) => v === undefined || v === null || typeof v === 'string';
const isStringList = (v: unknown) =>
  v === undefined || v === null || (Array.isArray(v) && v.every(isStringOrNull));

/**
 * libcni's own keys (types.PluginConf), which flannel decodes with its configuration: a value of
 * the wrong type fails its ADD, though none of them reaches the delegate.
 */
function checkLibcniKeys(conf: Json): void {
  const fail = (key: string, what: string): never =>
    bad(`"${key}" must be ${what}`, JSON.stringify(conf[key]));
  if (!isStringOrNull(conf.type)) fail('type', 'a string');
  const caps = conf.capabilities;
  if (
    caps !== undefined &&
    caps !== null &&
    !(isObject(caps) && Object.values(caps).every((v) => v === null || typeof v === 'boolean'))
  ) {
    fail('capabilities', 'an object of true or false');
  }
  const dns = conf.dns;
  if (
    dns !== undefined &&
    dns !== null &&
    !(
      isObject(dns) &&
      isStringOrNull(dns.domain) &&
      isStringList(dns.nameservers) &&
      isStringList(dns.search) &&
      isStringList(dns.options)
    )
  ) {
    fail('dns', 'an object of "nameservers", "domain", "search" and "options" (strings)');
  }
  const valid = conf['cni.dev/valid-attachments'];
  if (
    valid !== undefined &&
    valid !== null &&
    !(
      Array.isArray(valid) &&
      valid.every(
        (a) =>
          a === null || (isObject(a) && isStringOrNull(a.containerID) && isStringOrNull(a.ifname)),
      )
    )
  ) {
    fail('cni.dev/valid-attachments', 'a list of {"containerID", "ifname"}');
  }
}

/**
 * Parses the configuration a runtime passes on stdin (code 6 when it is not JSON, 7 when it is
 * not a valid flannel configuration, 1 for an unsupported cniVersion). For DEL, as flannel's DEL,
 * only what decodes it is checked: the delegate's and IPAM's options are ADD's concern
 * (checkDelegateOptions), and a configuration ADD refused must not keep a pod from being deleted.
 */
export function parseNetConf(stdin: string, command?: string): FlannelNetConf {
  let conf: unknown;
  try {
    conf = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(
      CniCode.decodingFailure,
      `error unmarshall network config: ${(err as Error).message}`,
    );
  }
  if (nestingDepth(conf) > MAX_NESTING) {
    throw new CniError(
      CniCode.decodingFailure,
      `error unmarshall network config: nested deeper than ${MAX_NESTING} levels`,
    );
  }
  // JSON null decodes into libcni's struct as no keys at all: no name.
  if (conf === null) conf = {};
  if (!isObject(conf)) {
    throw new CniError(CniCode.decodingFailure, 'error unmarshall network config: not an object');
  }
  if (conf.name !== undefined && conf.name !== null && typeof conf.name !== 'string') {
    throw new CniError(
      CniCode.decodingFailure,
      'error unmarshall network config: "name" must be a string',
      JSON.stringify(conf.name),
    );
  }
  validateNetworkName(conf.name);
  const cniVersion = configVersion(conf);
  checkLibcniKeys(conf);
  const out: FlannelNetConf = {
    cniVersion,
    name: conf.name,
    subnetFile: optionalString(conf, 'subnetFile', DEFAULT_SUBNET_FILE),
    dataDir: optionalString(conf, 'dataDir', DEFAULT_DATA_DIR),
    delegate: goObject(conf, 'delegate') ?? {},
    raw: conf,
  };
  const ipam = goObject(conf, 'ipam');
  if (ipam) out.ipam = ipam;
  const runtimeConfig = goObject(conf, 'runtimeConfig');
  if (runtimeConfig) out.runtimeConfig = runtimeConfig;
  const prevResult = goObject(conf, 'prevResult');
  if (prevResult) out.prevResult = prevResult;
  if (command !== 'DEL') checkDelegateOptions(out);
  return out;
}

/**
 * What ADD (flannel's doCmdAdd) requires of the `delegate` and `ipam` options (code 7 when they
 * will not do); `ipam.routes` become what flannel passes on.
 */
export function checkDelegateOptions(conf: FlannelNetConf): void {
  const { delegate, ipam } = conf;
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
  if (ipam && 'type' in ipam && (typeof ipam.type !== 'string' || ipam.type === '')) {
    bad('"ipam.type" must name an IPAM plugin', JSON.stringify(ipam.type));
  }
  if (ipam && 'routes' in ipam) ipam.routes = flannelRoutes(ipam.routes);
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
