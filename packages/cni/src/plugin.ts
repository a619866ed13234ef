import { type Cidr, cidrNetwork, formatCidr, parseCidr } from '@weft/core';
import { CniCode, CniError } from './errors.js';
import { execPlugin, findPlugin } from './exec.js';
import {
  checkDelegateOptions,
  delegateConfig,
  type FlannelNetConf,
  parseNetConf,
} from './netconf.js';
import {
  argsFromEnv,
  type CniArgs,
  LATEST_VERSION,
  SUPPORTED_VERSIONS,
  versionAtLeast,
} from './protocol.js';
import {
  type DelegateRecord,
  listRecords,
  parseRecord,
  readRecordText,
  removeRecord,
  saveRecord,
} from './records.js';
import { readSubnetEnv } from './subnet-env.js';

type Json = Record<string, unknown>;
type Env = Readonly<Record<string, string | undefined>>;

/** One invocation, as a runtime makes it: the CNI_* environment and the configuration on stdin. */
export interface PluginRequest {
  env: Env;
  /** The configuration text, or a function that reads it (not called for VERSION or bad env). */
  stdin: string | (() => string);
}

/** What the plugin answers: exit code, stdout (a result or the spec's error JSON), own stderr. */
export interface PluginResponse {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** weft-cni's own error code: the pod's address or MTU no longer match the node (CHECK). */
export const STALE_ATTACHMENT = 100;

/** What the plugin prints when run with no CNI_COMMAND (libcni's skel prints its "about" then). */
export const ABOUT = `weft-cni: flannel's CNI plugin for weft (install it as "flannel" in a CNI bin directory)\nCNI protocol versions supported: ${SUPPORTED_VERSIONS.join(', ')}\n`;

/**
 * Runs one CNI command. Never throws: a failure is the spec's error JSON on stdout, exit code 1.
 * The delegate (bridge, host-local) is run synchronously; its stderr goes to this process's.
 */
export function runPlugin(request: PluginRequest): PluginResponse {
  const { env } = request;
  if (!env.CNI_COMMAND) return { exitCode: 0, stdout: '', stderr: ABOUT };
  let stdin = '';
  const log: string[] = [];
  try {
    const args = argsFromEnv(env);
    stdin = typeof request.stdin === 'string' ? request.stdin : readStdin(request.stdin);
    if (args.command === 'VERSION') {
      const result = { cniVersion: versionAsked(stdin), supportedVersions: SUPPORTED_VERSIONS };
      return { exitCode: 0, stdout: `${JSON.stringify(result)}\n`, stderr: '' };
    }
    const conf = parseNetConf(stdin, args.command);
    const minimum = { CHECK: '0.4.0', GC: '1.1.0', STATUS: '1.1.0' }[args.command as string];
    if (minimum && !versionAtLeast(conf.cniVersion, minimum)) {
      throw new CniError(
        CniCode.incompatibleVersion,
        `config version does not allow ${args.command}`,
        `${args.command} needs cniVersion ${minimum} or later; the configuration says ${conf.cniVersion}`,
      );
    }
    const say = (line: string) => log.push(`weft-cni: ${line}\n`);
    const stdout = commands[args.command](args, conf, env, say);
    return { exitCode: 0, stdout, stderr: log.join('') };
  } catch (err) {
    const e =
      err instanceof CniError
        ? err
        : new CniError(CniCode.internal, (err as Error)?.message ?? String(err));
    const stdout = `${JSON.stringify(e.toResult(versionAsked(stdin)))}\n`;
    return { exitCode: 1, stdout, stderr: log.join('') };
  }
}

function readStdin(read: () => string): string {
  try {
    return read();
  } catch (err) {
    throw new CniError(CniCode.ioFailure, `error reading from stdin: ${(err as Error).message}`);
  }
}

/** The configuration's cniVersion when it is one we speak, else the latest (for VERSION and errors). */
function versionAsked(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as Json).cniVersion;
    if (typeof v === 'string' && SUPPORTED_VERSIONS.includes(v)) return v;
  } catch {}
  return LATEST_VERSION;
}

type Command = (args: CniArgs, conf: FlannelNetConf, env: Env, say: (l: string) => void) => string;

const commands: Record<Exclude<CniArgs['command'], 'VERSION'>, Command> = {
  ADD: add,
  DEL: del,
  CHECK: check,
  STATUS: status,
  GC: gc,
};

const ipamType = (d: Json) => (d.ipam as Json | undefined)?.type;

/** Finds the delegate and, for a layer-3 delegate, its IPAM plugin: a missing one fails here, by name. */
function findDelegate(d: Json, dirs: readonly string[]): string {
  const path = findPlugin(d.type as string, dirs);
  const ipam = ipamType(d);
  if (typeof ipam === 'string' && ipam !== '') findPlugin(ipam, dirs);
  return path;
}

/**
 * ADD: subnet.env -> delegate configuration -> record under dataDir -> delegate ADD. A 1.1.0
 * configuration is retried at 1.0.0 when the delegate refuses 1.1.0 (Debian 12's plugins stop at
 * 1.0.0; a 1.0.0 result is a valid 1.1.0 result). If the delegate fails, its DEL undoes what it
 * did (SPEC.md section 4) and the record goes.
 */
function add(args: CniArgs, conf: FlannelNetConf, env: Env): string {
  const subnets = readSubnetEnv(conf.subnetFile);
  let d = delegateConfig(conf, subnets);
  const path = findDelegate(d, args.path);
  const attempt = (): Json => {
    saveRecord(conf.dataDir, args.containerId, d, args.ifName);
    try {
      const { result } = execPlugin(path, 'ADD', d, env);
      if (!result) {
        throw new CniError(CniCode.decodingFailure, `plugin ${path} printed no result for ADD`);
      }
      return result;
    } catch (err) {
      try {
        execPlugin(path, 'DEL', d, env);
      } catch {}
      removeRecord(conf.dataDir, args.containerId);
      throw err;
    }
  };
  let result: Json;
  try {
    result = attempt();
  } catch (err) {
    const refused =
      err instanceof CniError &&
      err.cniCode === CniCode.incompatibleVersion &&
      d.cniVersion === '1.1.0';
    if (!refused) throw err;
    d = { ...d, cniVersion: '1.0.0' };
    result = attempt();
  }
  const asked = (d.cniVersion as string | undefined) ?? conf.cniVersion;
  const answered = result.cniVersion ?? asked;
  if (answered !== asked) {
    throw new CniError(
      CniCode.decodingFailure,
      `plugin ${path} answered in CNI version ${String(answered)}, asked for ${asked}`,
    );
  }
  return `${JSON.stringify({ ...result, cniVersion: conf.cniVersion })}\n`;
}

/** A record or, when there is none, undefined; an unreadable one is logged and ignored. */
function loadRecord(conf: FlannelNetConf, containerId: string, say: (l: string) => void) {
  const text = readRecordText(conf.dataDir, containerId);
  if (text === undefined) return { found: false as const };
  const record = parseRecord(text);
  if (!record) say(`ignoring ${conf.dataDir}/${containerId}: not a delegate configuration`);
  return { found: true as const, record };
}

/**
 * DEL: the delegate's DEL with the configuration ADD recorded, then the record goes. No record
 * means nothing to undo: success (DEL is idempotent), whatever the delegate options say. A record
 * that cannot be parsed is replaced by one built from subnet.env when it is there and the options
 * will do, so the address is still released.
 */
function del(args: CniArgs, conf: FlannelNetConf, env: Env, say: (l: string) => void): string {
  const loaded = loadRecord(conf, args.containerId, say);
  if (!loaded.found) return '';
  let record: DelegateRecord | undefined = loaded.record;
  if (!record) {
    try {
      checkDelegateOptions(conf);
      record = { conf: delegateConfig(conf, readSubnetEnv(conf.subnetFile)) };
    } catch (err) {
      say(`cannot rebuild it from subnet.env (${(err as Error).message}): nothing to release`);
      removeRecord(conf.dataDir, args.containerId);
      return '';
    }
  }
  const path = findPlugin(record.conf.type as string, args.path);
  execPlugin(path, 'DEL', record.conf, env);
  removeRecord(conf.dataDir, args.containerId);
  return '';
}

function addressesIn(prevResult: Json): string[] {
  const ips = Array.isArray(prevResult.ips) ? (prevResult.ips as unknown[]) : [];
  return ips
    .map((ip) => (ip as Json | null)?.address)
    .filter((a): a is string => typeof a === 'string');
}

/**
 * CHECK: the node daemon is there (subnet.env, else code 11), the pod's addresses are inside the
 * node's current subnets and its MTU is the overlay's (else code 100), then the delegate's CHECK
 * with the recorded configuration and the runtime's prevResult.
 */
function check(args: CniArgs, conf: FlannelNetConf, env: Env, say: (l: string) => void): string {
  if (!conf.prevResult) {
    throw new CniError(
      CniCode.invalidConfig,
      'required prevResult missing',
      'CHECK needs the result of ADD as "prevResult"',
    );
  }
  const loaded = loadRecord(conf, args.containerId, say);
  if (!loaded.found || !loaded.record) {
    throw new CniError(
      CniCode.unknownContainer,
      `no record of container ${args.containerId} in ${conf.dataDir}`,
      'weft-cni keeps one per container from ADD to DEL: the container was not added by this plugin, or its record was removed',
    );
  }
  const d = loaded.record.conf;
  const subnets = readSubnetEnv(conf.subnetFile);
  for (const address of addressesIn(conf.prevResult)) {
    let cidr: Cidr;
    try {
      cidr = parseCidr(address, { allowHostBits: true });
    } catch {
      throw new CniError(CniCode.decodingFailure, `prevResult address is not a CIDR: ${address}`);
    }
    const subnet = cidr.family === 4 ? subnets.subnet : subnets.ipv6Subnet;
    if (subnet && !inSubnet(cidr, subnet)) {
      throw new CniError(
        STALE_ATTACHMENT,
        `pod address ${address} is outside this node's subnet ${subnet} (${conf.subnetFile})`,
        "the node's lease changed since ADD: traffic for this pod now goes elsewhere; recreate the pod",
      );
    }
  }
  if (!('mtu' in conf.delegate) && d.mtu !== subnets.mtu) {
    throw new CniError(
      STALE_ATTACHMENT,
      `pod MTU ${String(d.mtu)} is not the overlay's ${subnets.mtu} (${conf.subnetFile})`,
      'the node daemon changed the MTU since ADD: recreate the pod',
    );
  }
  const path = findDelegate(d, args.path);
  const prevResult = withRouteGateways(conf.prevResult);
  if ('cniVersion' in prevResult) prevResult.cniVersion = d.cniVersion;
  execPlugin(path, 'CHECK', { ...d, prevResult }, env);
  return '';
}

/**
 * prevResult with each route's implicit gateway made explicit: the gateway of its family's
 * address, which is the next hop bridge installed (SPEC.md section 5: "If unset, a value in
 * gateway in the ips array may be used"). bridge before v1.2 (Debian 12 ships v1.1.1) matches a
 * route's gateway in CHECK even when the result leaves it unset, so every flannel route (a
 * cluster network without `gw`) would fail its CHECK.
 */
function withRouteGateways(prevResult: Json): Json {
  const out = { ...prevResult };
  if (!Array.isArray(prevResult.routes) || !Array.isArray(prevResult.ips)) return out;
  const gateways = new Map<number, string>();
  for (const ip of prevResult.ips as Json[]) {
    if (typeof ip?.gateway !== 'string' || typeof ip.address !== 'string') continue;
    const family = ip.gateway.includes(':') ? 6 : 4;
    if (!gateways.has(family)) gateways.set(family, ip.gateway);
  }
  out.routes = (prevResult.routes as Json[]).map((r) => {
    if (typeof r?.dst !== 'string' || r.gw !== undefined) return r;
    const gw = gateways.get(r.dst.includes(':') ? 6 : 4);
    const isDefault = r.dst === '0.0.0.0/0' || r.dst === '::/0';
    return gw && !isDefault ? { ...r, gw } : r;
  });
  return out;
}

/** Whether an address (its own prefix length aside) lies inside `subnet`. */
function inSubnet(address: Cidr, subnet: string): boolean {
  const net = parseCidr(subnet);
  if (net.family !== address.family) return false;
  return formatCidr(cidrNetwork({ ...address, prefixLength: net.prefixLength } as Cidr)) === subnet;
}

/** Whether a plugin speaks 1.1.0 (and so knows STATUS and GC): asked with VERSION. */
function speaks11(path: string, env: Env): boolean {
  try {
    const { result } = execPlugin(path, 'VERSION', { cniVersion: LATEST_VERSION }, env);
    const versions = result?.supportedVersions;
    return Array.isArray(versions) && versions.includes('1.1.0');
  } catch {
    return false;
  }
}

/**
 * STATUS: ready when subnet.env is there and valid and the delegate and its IPAM plugin are
 * installed (else code 50, saying which); a delegate that speaks 1.1.0 is asked too.
 */
function status(args: CniArgs, conf: FlannelNetConf, env: Env): string {
  let d: Json;
  let path: string;
  try {
    d = delegateConfig(conf, readSubnetEnv(conf.subnetFile));
    path = findDelegate(d, args.path);
  } catch (err) {
    const e = err as CniError;
    throw new CniError(CniCode.notAvailable, e.msg ?? e.message, e.details, { cause: err });
  }
  if (speaks11(path, env)) execPlugin(path, 'STATUS', { ...d, cniVersion: '1.1.0' }, env);
  return '';
}

/**
 * GC: every record of this network whose container is not in `cni.dev/valid-attachments` is
 * released through the delegate's DEL (no netns: the spec lets GC assume it is gone) and removed;
 * a delegate that speaks 1.1.0 also gets the GC. Errors do not stop the sweep; all are reported.
 */
function gc(args: CniArgs, conf: FlannelNetConf, env: Env, say: (l: string) => void): string {
  const valid = conf.raw['cni.dev/valid-attachments'];
  if (
    !Array.isArray(valid) ||
    !valid.every((a) => typeof (a as Json | null)?.containerID === 'string')
  ) {
    throw new CniError(
      CniCode.invalidConfig,
      'GC needs "cni.dev/valid-attachments"',
      'a list of {"containerID", "ifname"}: the attachments to keep',
    );
  }
  const keep = new Set(valid.map((a) => (a as Json).containerID as string));
  const failures: CniError[] = [];
  let sample: Json | undefined;
  for (const id of listRecords(conf.dataDir)) {
    let record: DelegateRecord | undefined;
    try {
      record = parseRecord(readRecordText(conf.dataDir, id) ?? '');
    } catch (err) {
      failures.push(err as CniError);
      continue;
    }
    if (!record || record.conf.name !== conf.name) continue;
    sample ??= record.conf;
    if (keep.has(id)) continue;
    try {
      const path = findPlugin(record.conf.type as string, args.path);
      const ifName = record.ifName ?? 'eth0';
      const delEnv = { ...env, CNI_CONTAINERID: id, CNI_IFNAME: ifName, CNI_NETNS: undefined };
      execPlugin(path, 'DEL', record.conf, delEnv);
      removeRecord(conf.dataDir, id);
      say(`GC: released stale attachment ${id}/${ifName}`);
    } catch (err) {
      failures.push(err instanceof CniError ? err : new CniError(CniCode.internal, String(err)));
    }
  }
  let d: Json | undefined;
  try {
    d = delegateConfig(conf, readSubnetEnv(conf.subnetFile));
  } catch {
    d = sample;
  }
  if (d) {
    try {
      const path = findDelegate(d, args.path);
      if (speaks11(path, env)) {
        const gcConf = { ...d, cniVersion: '1.1.0', 'cni.dev/valid-attachments': valid };
        execPlugin(path, 'GC', gcConf, env);
      }
    } catch (err) {
      failures.push(err instanceof CniError ? err : new CniError(CniCode.internal, String(err)));
    }
  }
  if (failures.length > 0) {
    throw new CniError(
      failures[0].cniCode,
      `GC: ${failures.length} stale resource(s) could not be cleaned up`,
      failures.map((f) => f.message).join('; '),
    );
  }
  return '';
}
