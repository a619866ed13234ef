import { tryParseIpv4, tryParseIpv6, WeftError } from '@weft/core';

/**
 * weftd's flags, in flannel's spirit. Each has an environment twin, WEFTD_<NAME> (dashes as
 * underscores), read when the flag is not given: what a DaemonSet manifest sets.
 */
export interface Options {
  store: 'embedded' | 'etcd';
  storePath: string;
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  /** Names or addresses, tried in order (flannel's repeatable --iface). */
  iface: string[];
  /** Regexes over addresses, then names, tried in order after --iface. */
  ifaceRegex: string[];
  ifaceCanReach?: string;
  publicIp?: string;
  publicIpv6?: string;
  subnetFile: string;
  ipMasq: boolean;
  ipMasqFullyRandomDisable: boolean;
  iptablesForwardRules: boolean;
  iptablesResyncSeconds: number;
  ipBlackholeRoute: boolean;
  /** Seconds between full checks of the forwarding state the kernel or the backend holds. */
  resyncSeconds: number;
  version: boolean;
  healthzIp: string;
  healthzPort: number;
  metricsPort: number;
  vxlanMode: 'kernel' | 'userspace' | 'auto';
  wireguardMode: 'kernel' | 'userspace' | 'auto';
  backendType?: 'udp' | 'vxlan' | 'host-gw' | 'alloc' | 'wireguard';
  releaseOnExit: boolean;
  leaseTtlSeconds: number;
  renewMarginMinutes: number;
  logLevel: string;
}

interface FlagSpec {
  name: string;
  key: keyof Options;
  /** list: comma-separated; repeated: each use adds one (flannel's flagSlice). */
  kind: 'string' | 'number' | 'boolean' | 'list' | 'repeated';
  /** Inclusive bounds of a number. */
  range?: [number, number];
  default?: unknown;
  choices?: string[];
  help: string;
}

/** Every weftd flag (flanneld's names and defaults): kind, bounds, choices and help text. */
export const FLAGS: FlagSpec[] = [
  {
    name: 'store',
    key: 'store',
    kind: 'string',
    choices: ['embedded', 'etcd'],
    help: 'where leases live: embedded (a file shared by the nodes of one host) or etcd; --etcd-endpoints implies etcd',
  },
  {
    name: 'store-path',
    key: 'storePath',
    kind: 'string',
    default: '/var/lib/weft/subnets.json',
    help: 'the embedded store file',
  },
  {
    name: 'etcd-endpoints',
    key: 'etcdEndpoints',
    kind: 'list',
    default: [],
    help: 'comma-separated etcd endpoints, e.g. http://127.0.0.1:2379',
  },
  {
    name: 'etcd-prefix',
    key: 'etcdPrefix',
    kind: 'string',
    default: '/coreos.com/network',
    help: "etcd key prefix (flannel's default)",
  },
  {
    name: 'etcd-cafile',
    key: 'etcdCafile',
    kind: 'string',
    help: "TLS: the CA that signed etcd's certificate",
  },
  { name: 'etcd-certfile', key: 'etcdCertfile', kind: 'string', help: 'TLS: client certificate' },
  { name: 'etcd-keyfile', key: 'etcdKeyfile', kind: 'string', help: 'TLS: client key' },
  { name: 'etcd-username', key: 'etcdUsername', kind: 'string', help: 'etcd user' },
  { name: 'etcd-password', key: 'etcdPassword', kind: 'string', help: 'etcd password' },
  {
    name: 'iface',
    key: 'iface',
    kind: 'repeated',
    default: [],
    help: 'the underlay interface, by name or address; may repeat: the first that exists wins (default: the interface of the default route)',
  },
  {
    name: 'iface-regex',
    key: 'ifaceRegex',
    kind: 'repeated',
    default: [],
    help: "a regex matched against every interface's addresses, then names; may repeat; tried after --iface",
  },
  {
    name: 'iface-can-reach',
    key: 'ifaceCanReach',
    kind: 'string',
    help: 'the interface (and source address) the kernel would use to reach this IP (`ip route get`); tried last',
  },
  {
    name: 'public-ip',
    key: 'publicIp',
    kind: 'string',
    help: "the node's underlay address other nodes send to (default: the address the interface was found by, else its first IPv4 address)",
  },
  {
    name: 'public-ipv6',
    key: 'publicIpv6',
    kind: 'string',
    help: "the node's IPv6 underlay address, recorded in its lease when the config enables IPv6",
  },
  {
    name: 'subnet-file',
    key: 'subnetFile',
    kind: 'string',
    default: '/run/flannel/subnet.env',
    help: "where to write the node's subnet for the CNI plugin",
  },
  {
    name: 'ip-masq',
    key: 'ipMasq',
    kind: 'boolean',
    default: false,
    help: "masquerade traffic from pods leaving the cluster network (flannel's rules, iptables or, with EnableNFTables, nftables), and say so in subnet.env",
  },
  {
    name: 'ip-masq-fully-random-disable',
    key: 'ipMasqFullyRandomDisable',
    kind: 'boolean',
    default: false,
    help: 'masquerade without --random-fully (fully-random port mapping)',
  },
  {
    name: 'iptables-forward-rules',
    key: 'iptablesForwardRules',
    kind: 'boolean',
    default: true,
    help: 'accept forwarded traffic from and to the cluster network (FLANNEL-FWD, or the nftables forward chain), whatever the FORWARD policy',
  },
  {
    name: 'iptables-resync',
    key: 'iptablesResyncSeconds',
    kind: 'number',
    default: 5,
    range: [1, 86400],
    help: 'seconds between checks that the masquerade, forward and blackhole rules are still in place (put back when not)',
  },
  {
    name: 'ip-blackhole-route',
    key: 'ipBlackholeRoute',
    kind: 'boolean',
    default: false,
    help: "a blackhole route for this node's subnet, for when no bridge plugin owns it",
  },
  {
    name: 'healthz-ip',
    key: 'healthzIp',
    kind: 'string',
    default: '0.0.0.0',
    help: 'address for /healthz and /readyz',
  },
  {
    name: 'healthz-port',
    key: 'healthzPort',
    kind: 'number',
    default: 0,
    help: 'port for /healthz and /readyz (0: off)',
  },
  {
    name: 'metrics-port',
    key: 'metricsPort',
    kind: 'number',
    default: 0,
    help: 'port for Prometheus /metrics (0: off)',
  },
  {
    name: 'vxlan-mode',
    key: 'vxlanMode',
    kind: 'string',
    default: 'auto',
    choices: ['kernel', 'userspace', 'auto'],
    help: "vxlan: program the kernel's VXLAN, run weft's userspace VTEP, or auto (kernel when it has VXLAN)",
  },
  {
    name: 'wireguard-mode',
    key: 'wireguardMode',
    kind: 'string',
    default: 'auto',
    choices: ['kernel', 'userspace', 'auto'],
    help: "wireguard: program the kernel's WireGuard, run weft's userspace WireGuard, or auto (kernel when it has WireGuard)",
  },
  {
    name: 'backend-type',
    key: 'backendType',
    kind: 'string',
    choices: ['udp', 'vxlan', 'wireguard', 'host-gw', 'alloc'],
    help: "this node's backend instead of the config's Backend.Type (a node reaches only nodes of the same type)",
  },
  {
    name: 'release-on-exit',
    key: 'releaseOnExit',
    kind: 'boolean',
    default: false,
    help: 'release the lease on SIGTERM (default: leave it to expire, as flannel does)',
  },
  {
    name: 'lease-ttl',
    key: 'leaseTtlSeconds',
    kind: 'number',
    default: 86400,
    help: "lease lifetime in seconds (flannel's 24 h)",
  },
  {
    name: 'subnet-lease-renew-margin',
    key: 'renewMarginMinutes',
    kind: 'number',
    default: 60,
    range: [1, 1439],
    help: 'renew this many minutes before the lease expires (1..1439, as flannel)',
  },
  {
    name: 'resync',
    key: 'resyncSeconds',
    kind: 'number',
    default: 10,
    range: [1, 3600],
    help: 'seconds between full checks of the forwarding state (routes, neighbors, FDB, device); what was removed by hand is put back; kernel changes are also watched and repaired at once',
  },
  {
    name: 'version',
    key: 'version',
    kind: 'boolean',
    default: false,
    help: 'print the version and exit',
  },
  {
    name: 'log-level',
    key: 'logLevel',
    kind: 'string',
    default: 'info',
    choices: ['debug', 'info', 'warn', 'error'],
    help: 'log level',
  },
];

export const FlagErrorCode = 'ERR_WEFTD_FLAG';

function envName(flag: string, prefix = 'WEFTD'): string {
  return `${prefix}_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/** flanneld flags weft has no use for, with what to do instead. */
const FLANNEL_ONLY: Record<string, string> = {
  'kube-subnet-mgr':
    'weftd keeps leases in etcd or its embedded store, not in Kubernetes node objects: use --etcd-endpoints',
  'kube-api-url': 'weftd has no Kubernetes subnet manager: use --etcd-endpoints',
  'kube-annotation-prefix': 'weftd has no Kubernetes subnet manager: use --etcd-endpoints',
  'kubeconfig-file': 'weftd has no Kubernetes subnet manager: use --etcd-endpoints',
  'net-config-path':
    "weftd reads the network config from its store (flannel's etcd mode): write it with weftd put-config",
  'set-node-network-unavailable': 'weftd has no Kubernetes subnet manager',
};

function convert(spec: FlagSpec, raw: string, from: string): unknown {
  switch (spec.kind) {
    case 'boolean':
      if (['', 'true', '1', 'yes'].includes(raw)) return true;
      if (['false', '0', 'no'].includes(raw)) return false;
      throw new WeftError(FlagErrorCode, `${from}: ${JSON.stringify(raw)} is not true or false`);
    case 'number': {
      const n = raw.trim() === '' ? Number.NaN : Number(raw);
      if (!Number.isInteger(n) || n < 0)
        throw new WeftError(
          FlagErrorCode,
          `${from}: ${JSON.stringify(raw)} is not a non-negative integer`,
        );
      if (spec.range && (n < spec.range[0] || n > spec.range[1]))
        throw new WeftError(
          FlagErrorCode,
          `${from}: ${n} is out of range: ${spec.range[0]}..${spec.range[1]}`,
        );
      return n;
    }
    case 'repeated':
      return [raw];
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    default:
      if (spec.choices && !spec.choices.includes(raw))
        throw new WeftError(
          FlagErrorCode,
          `${from}: ${JSON.stringify(raw)} must be one of ${spec.choices.join(', ')}`,
        );
      return raw;
  }
}

/**
 * Parses argv (flags only) and the environment; unknown flags are errors naming --help. As Go's
 * flag package (flanneld's), a flag may start with one dash or two. A flag not given is read from
 * WEFTD_<NAME>, else from flanneld's FLANNELD_<NAME> (flannel's SetFlagsFromEnv).
 */
export function parseFlags(argv: string[], env: NodeJS.ProcessEnv = process.env): Options {
  const values = new Map<keyof Options, unknown>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('-') || arg === '-' || arg === '--')
      throw new WeftError(
        FlagErrorCode,
        `unexpected argument ${JSON.stringify(arg)} (see weftd --help)`,
      );
    const [name, inline] = arg.replace(/^--?/, '').split(/=(.*)/s, 2);
    const spec = FLAGS.find((f) => f.name === name);
    if (!spec) {
      const instead = FLANNEL_ONLY[name];
      throw new WeftError(
        FlagErrorCode,
        instead
          ? `--${name} is a flanneld flag weftd does not take: ${instead}`
          : `unknown flag --${name} (see weftd --help)`,
      );
    }
    let raw = inline;
    if (raw === undefined) {
      if (spec.kind === 'boolean') raw = '';
      else {
        raw = argv[++i];
        if (raw === undefined) throw new WeftError(FlagErrorCode, `--${name} needs a value`);
      }
    }
    const value = convert(spec, raw, `--${name}`);
    const before = values.get(spec.key);
    values.set(
      spec.key,
      spec.kind === 'repeated' && Array.isArray(before)
        ? [...before, ...(value as string[])]
        : value,
    );
  }
  const options = {} as Record<string, unknown>;
  for (const spec of FLAGS) {
    let value = values.get(spec.key);
    for (const prefix of ['WEFTD', 'FLANNELD']) {
      const name = envName(spec.name, prefix);
      if (value === undefined && env[name] !== undefined) value = convert(spec, env[name]!, name);
    }
    options[spec.key] = value ?? spec.default;
  }
  const o = options as unknown as Options;
  o.store ??= o.etcdEndpoints.length > 0 ? 'etcd' : 'embedded';
  if (o.store === 'etcd' && o.etcdEndpoints.length === 0)
    throw new WeftError(FlagErrorCode, '--store etcd needs --etcd-endpoints');
  if (o.healthzPort > 65535 || o.metricsPort > 65535)
    throw new WeftError(FlagErrorCode, 'ports must be 0..65535');
  for (const re of o.ifaceRegex) {
    try {
      new RegExp(re);
    } catch (err) {
      throw new WeftError(
        FlagErrorCode,
        `--iface-regex: ${JSON.stringify(re)} is not a regex: ${(err as Error).message}`,
      );
    }
  }
  if (o.publicIp !== undefined && tryParseIpv4(o.publicIp) === undefined)
    throw new WeftError(
      FlagErrorCode,
      `--public-ip: ${JSON.stringify(o.publicIp)} is not an IPv4 address`,
    );
  if (o.publicIpv6 !== undefined && tryParseIpv6(o.publicIpv6) === undefined)
    throw new WeftError(
      FlagErrorCode,
      `--public-ipv6: ${JSON.stringify(o.publicIpv6)} is not an IPv6 address`,
    );
  if (
    o.ifaceCanReach !== undefined &&
    tryParseIpv4(o.ifaceCanReach) === undefined &&
    tryParseIpv6(o.ifaceCanReach) === undefined
  )
    throw new WeftError(
      FlagErrorCode,
      `--iface-can-reach: ${JSON.stringify(o.ifaceCanReach)} is not an IP address`,
    );
  return o;
}

/** What `weftd --help` prints: usage and every flag with its default. */
export function helpText(): string {
  const lines = [
    'weftd: the weft node daemon. Leases this node a subnet of the cluster network, writes',
    'subnet.env, and keeps the overlay (kernel VXLAN, weft userspace VXLAN, flannel UDP or host-gw)',
    "in step with every other node's lease.",
    '',
    'usage: weftd [flags]',
    "       weftd put-config '<network config JSON>' [store flags: --store-path, --etcd-*]",
    '       weftd doctor [flags] [--json] [--cni-conf-dir DIR] [--cni-bin-dir DIR[:DIR]]',
    '                    [--probe-timeout MS] [--skip-paths]',
    '         checks this node (with or without a running weftd) and its path to every peer:',
    '         one line per check (✓ ok, ! warning, ✗ problem, each ! and ✗ with its fix), a',
    '         row per peer; exit status 0 only when nothing is ✗. Takes the flags weftd runs with.',
    '',
    'The embedded store is a file shared by the nodes of one host (tests, demos, one machine);',
    'nodes on several hosts share leases through etcd (--etcd-endpoints), as flannel does.',
    '',
    'flags (a flag may start with - or --; each is also read from the environment variable shown,',
    "or from flanneld's FLANNELD_<NAME>):",
  ];
  for (const f of FLAGS) {
    const value = f.kind === 'boolean' ? '' : f.kind === 'number' ? ' N' : ' VALUE';
    const range = f.range ? ` (${f.range[0]}..${f.range[1]})` : '';
    const def =
      f.default === undefined || (Array.isArray(f.default) && f.default.length === 0)
        ? ''
        : ` (default ${JSON.stringify(f.default)})`;
    lines.push(
      `  --${f.name}${value}${range}`,
      `      ${f.help}${def}`,
      `      env ${envName(f.name)}`,
    );
  }
  return lines.join('\n');
}
