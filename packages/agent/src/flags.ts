import { WeftError } from '@weft/core';

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
  iface?: string;
  publicIp?: string;
  subnetFile: string;
  ipMasq: boolean;
  healthzIp: string;
  healthzPort: number;
  metricsPort: number;
  vxlanMode: 'kernel' | 'userspace' | 'auto';
  backendType?: 'udp' | 'vxlan' | 'host-gw';
  releaseOnExit: boolean;
  leaseTtlSeconds: number;
  renewMarginMinutes: number;
  logLevel: string;
}

interface FlagSpec {
  name: string;
  key: keyof Options;
  kind: 'string' | 'number' | 'boolean' | 'list';
  default?: unknown;
  choices?: string[];
  help: string;
}

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
    kind: 'string',
    help: 'the underlay interface (default: the interface of the default route)',
  },
  {
    name: 'public-ip',
    key: 'publicIp',
    kind: 'string',
    help: "the node's underlay address other nodes send to (default: the first IPv4 address of --iface)",
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
    help: 'masquerade traffic from pods leaving the cluster network (iptables), and say so in subnet.env',
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
    name: 'backend-type',
    key: 'backendType',
    kind: 'string',
    choices: ['udp', 'vxlan', 'host-gw'],
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
    help: 'renew this many minutes before the lease expires',
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

function envName(flag: string): string {
  return `WEFTD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

function convert(spec: FlagSpec, raw: string, from: string): unknown {
  switch (spec.kind) {
    case 'boolean':
      if (['', 'true', '1', 'yes'].includes(raw)) return true;
      if (['false', '0', 'no'].includes(raw)) return false;
      throw new WeftError(FlagErrorCode, `${from}: ${JSON.stringify(raw)} is not true or false`);
    case 'number': {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 0)
        throw new WeftError(
          FlagErrorCode,
          `${from}: ${JSON.stringify(raw)} is not a non-negative integer`,
        );
      return n;
    }
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

/** Parses argv (flags only) and the environment; unknown flags are errors naming --help. */
export function parseFlags(argv: string[], env: NodeJS.ProcessEnv = process.env): Options {
  const values = new Map<keyof Options, unknown>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--'))
      throw new WeftError(
        FlagErrorCode,
        `unexpected argument ${JSON.stringify(arg)} (see weftd --help)`,
      );
    const [name, inline] = arg.slice(2).split(/=(.*)/s, 2);
    const spec = FLAGS.find((f) => f.name === name);
    if (!spec) throw new WeftError(FlagErrorCode, `unknown flag --${name} (see weftd --help)`);
    let raw = inline;
    if (raw === undefined) {
      if (spec.kind === 'boolean') raw = '';
      else {
        raw = argv[++i];
        if (raw === undefined) throw new WeftError(FlagErrorCode, `--${name} needs a value`);
      }
    }
    values.set(spec.key, convert(spec, raw, `--${name}`));
  }
  const options = {} as Record<string, unknown>;
  for (const spec of FLAGS) {
    let value = values.get(spec.key);
    if (value === undefined && env[envName(spec.name)] !== undefined)
      value = convert(spec, env[envName(spec.name)]!, envName(spec.name));
    options[spec.key] = value ?? spec.default;
  }
  const o = options as unknown as Options;
  o.store ??= o.etcdEndpoints.length > 0 ? 'etcd' : 'embedded';
  if (o.store === 'etcd' && o.etcdEndpoints.length === 0)
    throw new WeftError(FlagErrorCode, '--store etcd needs --etcd-endpoints');
  if (o.healthzPort > 65535 || o.metricsPort > 65535)
    throw new WeftError(FlagErrorCode, 'ports must be 0..65535');
  return o;
}

export function helpText(): string {
  const lines = [
    'weftd: the weft node daemon. Leases this node a subnet of the cluster network, writes',
    'subnet.env, and keeps the overlay (kernel VXLAN, weft userspace VXLAN, flannel UDP or host-gw)',
    "in step with every other node's lease.",
    '',
    'usage: weftd [flags]',
    "       weftd put-config '<network config JSON>' [--store-path PATH | --etcd-endpoints ...]",
    '',
    'flags (each also read from the environment variable shown):',
  ];
  for (const f of FLAGS) {
    const value = f.kind === 'boolean' ? '' : f.kind === 'number' ? ' N' : ' VALUE';
    const def =
      f.default === undefined || (Array.isArray(f.default) && f.default.length === 0)
        ? ''
        : ` (default ${JSON.stringify(f.default)})`;
    lines.push(`  --${f.name}${value}`, `      ${f.help}${def}`, `      env ${envName(f.name)}`);
  }
  return lines.join('\n');
}
