import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tryParseIp } from '@weft/core';

/**
 * The CNI spec's result types (SPEC.md section 5), as strict checks: every key the spec names has
 * its type, and no other key appears. Each returns the problems found (empty when it conforms).
 */
type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isUint = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const isIp = (v: unknown) => typeof v === 'string' && tryParseIp(v) !== undefined;
const isCidr = (v: unknown) => {
  if (typeof v !== 'string') return false;
  const [ip, len, extra] = v.split('/');
  const max = ip?.includes(':') ? 128 : 32;
  return extra === undefined && isIp(ip) && /^\d{1,3}$/.test(len ?? '') && Number(len) <= max;
};
const isStrings = (v: unknown) => Array.isArray(v) && v.every((s) => typeof s === 'string');

function fields(
  where: string,
  value: unknown,
  shape: Record<string, (v: unknown) => boolean>,
  required: string[],
  problems: string[],
): void {
  if (!isObject(value)) {
    problems.push(`${where}: not an object`);
    return;
  }
  for (const key of required) if (!(key in value)) problems.push(`${where}: missing ${key}`);
  for (const [key, v] of Object.entries(value)) {
    const check = shape[key];
    if (!check) problems.push(`${where}: unexpected key ${key}`);
    else if (!check(v)) problems.push(`${where}.${key}: bad value ${JSON.stringify(v)}`);
  }
}

const SEMVER = (v: unknown) => typeof v === 'string' && /^\d+\.\d+\.\d+$/.test(v);

/** ADD success for 0.3.0 to 1.1.0 (before 1.0.0 an IP carries `version`, 1.1.0 adds route and interface keys). */
export function addResultProblems(result: unknown, version: string): string[] {
  const problems: string[] = [];
  const v1 = version.startsWith('1.');
  const v11 = version === '1.1.0';
  fields(
    'result',
    result,
    {
      cniVersion: (v) => v === version,
      interfaces: Array.isArray,
      ips: Array.isArray,
      routes: Array.isArray,
      dns: isObject,
    },
    ['cniVersion'],
    problems,
  );
  if (!isObject(result)) return problems;
  const interfaces = (result.interfaces as unknown[] | undefined) ?? [];
  interfaces.forEach((i, n) => {
    fields(
      `interfaces[${n}]`,
      i,
      {
        name: (x) => typeof x === 'string' && x !== '',
        mac: (x) => typeof x === 'string',
        sandbox: (x) => typeof x === 'string',
        ...(v11
          ? {
              mtu: isUint,
              socketPath: (x) => typeof x === 'string',
              pciID: (x) => typeof x === 'string',
            }
          : {}),
      },
      ['name'],
      problems,
    );
  });
  ((result.ips as unknown[] | undefined) ?? []).forEach((ip, n) => {
    fields(
      `ips[${n}]`,
      ip,
      {
        address: isCidr,
        gateway: isIp,
        interface: (x) => isUint(x) && (x as number) < interfaces.length,
        ...(v1 ? {} : { version: (x) => x === '4' || x === '6' }),
      },
      v1 ? ['address'] : ['address', 'version'],
      problems,
    );
  });
  ((result.routes as unknown[] | undefined) ?? []).forEach((r, n) => {
    fields(
      `routes[${n}]`,
      r,
      {
        dst: isCidr,
        gw: isIp,
        ...(v11
          ? { mtu: isUint, advmss: isUint, priority: isUint, table: isUint, scope: isUint }
          : {}),
      },
      ['dst'],
      problems,
    );
  });
  if (isObject(result.dns)) {
    fields(
      'dns',
      result.dns,
      {
        nameservers: (x) => isStrings(x) && (x as string[]).every(isIp),
        domain: (x) => typeof x === 'string',
        search: isStrings,
        options: isStrings,
      },
      [],
      problems,
    );
  }
  return problems;
}

/** The error result: cniVersion, code, msg, optional details; nothing else. */
export function errorResultProblems(result: unknown): string[] {
  const problems: string[] = [];
  fields(
    'error',
    result,
    {
      cniVersion: SEMVER,
      code: (v) => isUint(v) && (v as number) > 0,
      msg: (v) => typeof v === 'string' && v !== '',
      details: (v) => typeof v === 'string',
    },
    ['cniVersion', 'code', 'msg'],
    problems,
  );
  return problems;
}

/** The VERSION result: cniVersion and supportedVersions. */
export function versionResultProblems(result: unknown): string[] {
  const problems: string[] = [];
  fields(
    'version',
    result,
    {
      cniVersion: SEMVER,
      supportedVersions: (v) => Array.isArray(v) && v.length > 0 && v.every(SEMVER),
    },
    ['cniVersion', 'supportedVersions'],
    problems,
  );
  return problems;
}

export const SUBNET_ENV =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

/**
 * A stand-in delegate in `dir` (named `name`, default bridge): a shell script that appends each
 * call (command, container, interface, netns, args, stdin) to `calls.jsonl` and answers from the
 * files `answer-<COMMAND>` (stdout) and `status-<COMMAND>` (exit code) when they exist; by
 * default it succeeds with a 1.0.0-style result echoing the cniVersion it was given.
 */
export function fakeDelegate(dir: string, name = 'bridge'): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(
    path,
    `#!/bin/sh
in=$(cat)
d=${JSON.stringify(dir)}
printf '{"plugin":"%s","command":"%s","containerId":"%s","ifName":"%s","netns":"%s","args":"%s","netnsSet":"%s","stdin":%s}\\n' \\
  ${JSON.stringify(name)} "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_NETNS" "$CNI_ARGS" "\${CNI_NETNS+set}" "$in" >> "$d/calls.jsonl"
if [ -f "$d/answer-${name}-$CNI_COMMAND" ]; then cat "$d/answer-${name}-$CNI_COMMAND"
elif [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}'
elif [ "$CNI_COMMAND" = ADD ]; then
  v=$(printf '%s' "$in" | sed -n 's/.*"cniVersion":"\\([0-9.]*\\)".*/\\1/p')
  printf '{"cniVersion":"%s","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"%s"}],"ips":[{"address":"10.244.3.2/24","gateway":"10.244.3.1","interface":1}],"routes":[{"dst":"10.244.0.0/16"}],"dns":{}}\\n' "$v" "$CNI_NETNS"
fi
if [ -f "$d/status-${name}-$CNI_COMMAND" ]; then exit $(cat "$d/status-${name}-$CNI_COMMAND"); fi
exit 0
`,
  );
  chmodSync(path, 0o755);
  return path;
}

/** The calls a stand-in delegate in `dir` recorded, oldest first. */
export function delegateCalls(dir: string): {
  plugin: string;
  command: string;
  containerId: string;
  ifName: string;
  netns: string;
  netnsSet: string;
  args: string;
  stdin: Json;
}[] {
  let text = '';
  try {
    text = readFileSync(join(dir, 'calls.jsonl'), 'utf8');
  } catch {}
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

/** Makes the stand-in `name` answer `command` with `stdout` and exit `status`. */
export function answer(
  dir: string,
  name: string,
  command: string,
  stdout: string,
  status = 0,
): void {
  writeFileSync(join(dir, `answer-${name}-${command}`), stdout);
  writeFileSync(join(dir, `status-${name}-${command}`), String(status));
}

/** subnet.env as flannel's own plugin tests write it (flannel_linux_test.go): IPv4, IPv6, dual stack. */
export const FLANNEL_TEST_ENVS = {
  V4: 'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
  V6: 'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
  DUAL: 'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
};
