import { CniCode, CniError } from './errors.js';

/**
 * The spec versions weft-cni speaks, as flannel's plugin does (libcni's `version.All`). The
 * delegate's result is passed through in the version asked for, so every version works that the
 * delegate speaks; 1.1.0 also works with a delegate that stops at 1.0.0 (see plugin.ts).
 */
export const SUPPORTED_VERSIONS: readonly string[] = [
  '0.1.0',
  '0.2.0',
  '0.3.0',
  '0.3.1',
  '0.4.0',
  '1.0.0',
  '1.1.0',
];
/** The newest CNI spec version the plugin speaks, and answers VERSION with. */
export const LATEST_VERSION = '1.1.0';

/** A CNI operation, as a runtime names it in CNI_COMMAND. */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';
export const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'];

/** The parameters a runtime passes in the environment (SPEC.md section 2, "Parameters"). */
export interface CniArgs {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
  /** CNI_PATH split on ':' (empty entries dropped). */
  path: string[];
}

/** Which variables each command requires, as libcni's skel checks them. */
const REQUIRED: Record<CniCommand, readonly string[]> = {
  ADD: ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  GC: ['CNI_COMMAND', 'CNI_PATH'],
  STATUS: ['CNI_COMMAND', 'CNI_PATH'],
  VERSION: ['CNI_COMMAND'],
};

// The spec's rule for container IDs and network names: no path separators, no leading dot.
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** A container ID is also a file name under dataDir: the spec's character set keeps it one. */
export function validateContainerId(id: string): void {
  if (!NAME_RE.test(id)) {
    throw new CniError(
      CniCode.invalidEnvironment,
      'invalid characters in containerID',
      `${JSON.stringify(id)}: CNI_CONTAINERID must start with a letter or digit, followed by letters, digits, '_', '.' or '-'`,
    );
  }
}

/** The kernel's rules for an interface name (net/core/dev.c dev_valid_name), as libcni checks them. */
export function validateIfName(name: string): void {
  const fail = (msg: string, details = '') => {
    throw new CniError(CniCode.invalidEnvironment, msg, details);
  };
  if (Buffer.byteLength(name) > 15)
    fail('interface name is too long', 'interface name should be less than 16 characters');
  if (name === '.' || name === '..') fail('interface name is . or ..');
  if (/[/:\s]/u.test(name)) fail('interface name contains / or : or whitespace characters');
}

export function validateNetworkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name === '') {
    throw new CniError(
      CniCode.invalidConfig,
      'missing network name',
      'the configuration needs "name"',
    );
  }
  if (!NAME_RE.test(name)) {
    throw new CniError(CniCode.invalidConfig, 'invalid characters found in network name', name);
  }
}

/**
 * Reads and checks the CNI_* variables. The command must be known and its required variables set
 * (code 4, naming every missing one); container ID and interface name are checked when required.
 */
export function argsFromEnv(env: Readonly<Record<string, string | undefined>>): CniArgs {
  const raw = env.CNI_COMMAND ?? '';
  const command = COMMANDS.find((c) => c === raw);
  const required = command ? REQUIRED[command] : ['CNI_COMMAND'];
  const missing = required.filter((name) => !env[name]);
  if (missing.length > 0) {
    throw new CniError(
      CniCode.invalidEnvironment,
      `required env variables [${missing.join(',')}] missing`,
    );
  }
  if (!command) throw new CniError(CniCode.invalidEnvironment, `unknown CNI_COMMAND: ${raw}`);
  const containerId = env.CNI_CONTAINERID ?? '';
  const ifName = env.CNI_IFNAME ?? '';
  if (required.includes('CNI_CONTAINERID')) validateContainerId(containerId);
  if (required.includes('CNI_IFNAME')) validateIfName(ifName);
  return {
    command,
    containerId,
    netns: env.CNI_NETNS ?? '',
    ifName,
    args: env.CNI_ARGS ?? '',
    path: (env.CNI_PATH ?? '').split(':').filter(Boolean),
  };
}

function parseVersion(v: string): [number, number, number] {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  if (!m) {
    throw new CniError(CniCode.decodingFailure, `unparsable CNI version ${JSON.stringify(v)}`);
  }
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** Whether version `a` is at least `b` (both "x.y.z"; a malformed one is code 6). */
export function versionAtLeast(a: string, b: string): boolean {
  const [x, y] = [parseVersion(a), parseVersion(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return true;
}

/** The configuration's version ("" means 0.1.0, as libcni decodes it); unsupported ones are code 1. */
export function configVersion(conf: Record<string, unknown>): string {
  const v = conf.cniVersion ?? '';
  if (typeof v !== 'string') {
    throw new CniError(
      CniCode.decodingFailure,
      'decoding version from network config: cniVersion must be a string',
      JSON.stringify(v),
    );
  }
  const version = v === '' ? '0.1.0' : v;
  if (!SUPPORTED_VERSIONS.includes(version)) {
    throw new CniError(
      CniCode.incompatibleVersion,
      'incompatible CNI versions',
      `config is ${JSON.stringify(version)}, plugin supports [${SUPPORTED_VERSIONS.map((s) => JSON.stringify(s)).join(' ')}]`,
    );
  }
  return version;
}
