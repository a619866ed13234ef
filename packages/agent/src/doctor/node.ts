import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { formatCidr, isWeftError, WeftError } from '@weft/core';
import { probeKernelWireguard } from '@weft/netlink';
import { SubnetErrorCode } from '@weft/subnet';
import { chooseVxlanMode } from '../kernel.js';
import type { DoctorContext } from './context.js';
import { sysctl } from './context.js';
import type { CheckResult } from './report.js';

/** The network config: readable from the store, and valid by flannel's rules. */
export function checkConfig(ctx: DoctorContext): CheckResult[] {
  const explains =
    'flanneld "failed to retrieve network config: 100: Key not found (/coreos.com/network)" and "error parsing subnet config": no node gets a lease';
  const err = ctx.configError;
  if (err) {
    const code = isWeftError(err) ? err.code : '';
    if (code === 'ERR_STORE_UNAVAILABLE')
      return [
        {
          id: 'config',
          status: 'fail',
          title: `the store cannot be reached: ${err.message}`,
          fix: 'check the store flags (--etcd-endpoints, TLS files, --store-path) and that etcd is up and reachable from this node',
          explains,
        },
      ];
    const missing = code === SubnetErrorCode.noConfig;
    return [
      {
        id: 'config',
        status: 'fail',
        title: missing
          ? `no network config in ${ctx.storeDescription}`
          : `the network config in ${ctx.storeDescription} is invalid: ${err.message}`,
        fix: missing
          ? `write it: weftd put-config '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}' with the same store flags (with etcd: etcdctl put <prefix>/config '...')`
          : 'correct the field named, then write the config again (weftd put-config checks it first)',
        explains,
      },
    ];
  }
  const c = ctx.config!;
  const b = c.backend;
  const backend =
    b.type === 'vxlan'
      ? `vxlan VNI ${b.vni} port ${b.port || 8472}${b.mtu ? ` MTU ${b.mtu}` : ''}${b.directRouting ? ' DirectRouting' : ''}`
      : b.type === 'udp'
        ? `udp port ${b.port}`
        : b.type;
  const net = [c.network && formatCidr(c.network), c.ipv6Network && formatCidr(c.ipv6Network)]
    .filter(Boolean)
    .join(' and ');
  return [
    {
      id: 'config',
      status: 'ok',
      title: `network config: ${net}, /${c.subnetLen} per node, ${backend}${ctx.options.backendType ? ` (this node: --backend-type ${ctx.options.backendType})` : ''}`,
    },
  ];
}

/** The underlay interface, found by the daemon's own rules from the same flags. */
export function checkUnderlay(ctx: DoctorContext): CheckResult[] {
  if (!ctx.underlay)
    return [
      {
        id: 'iface',
        status: 'fail',
        title: `no underlay interface: ${ctx.underlayError}`,
        fix: 'pass the interface weftd should use: --iface NAME (or --iface-regex, --iface-can-reach)',
        explains:
          'flanneld "failed to find any valid interface to use" / "Could not find valid interface matching"',
      },
    ];
  const u = ctx.underlay;
  return [
    {
      id: 'iface',
      status: 'ok',
      title: `underlay: ${u.iface.name} (${u.ifaceAddress}, MTU ${u.iface.mtu})${u.publicIp !== u.ifaceAddress ? `, public IP ${u.publicIp}` : ''}`,
    },
  ];
}

/** This node's lease, and no other node on our public IP. */
export function checkLease(ctx: DoctorContext): CheckResult[] {
  if (!ctx.underlay || ctx.configError) return [];
  if (ctx.leasesError)
    return [
      {
        id: 'lease',
        status: 'fail',
        title: `the leases cannot be listed: ${ctx.leasesError}`,
        fix: 'check that the store is reachable',
      },
    ];
  const ip = ctx.underlay.publicIp;
  const mine = ctx.leases.filter((l) => l.attrs.publicIp === ip);
  if (mine.length === 0)
    return [
      {
        id: 'lease',
        status: 'fail',
        title: `no lease in ${ctx.storeDescription} for ${ip}: this node has no subnet`,
        fix: 'start weftd on this node (it leases a subnet); if it runs, see its log: a full network says so',
        explains:
          'pods stay ContainerCreating with "failed to load flannel \'subnet.env\' file"; other nodes cannot route to this one',
      },
    ];
  const out: CheckResult[] = [];
  const own = ctx.own!;
  const expires =
    own.expiresAt === undefined
      ? 'a reservation (never expires)'
      : `expires ${new Date(own.expiresAt).toISOString().replace(/\.\d+Z$/, 'Z')}`;
  out.push({
    id: 'lease',
    status: 'ok',
    title: `lease ${own.subnet} for ${ip} (${own.attrs.backendType || 'no backend'}), ${expires}`,
  });
  if (ctx.backendType && own.attrs.backendType !== ctx.backendType)
    out.push({
      id: 'lease-backend',
      status: 'fail',
      title: `this node's lease says backend ${own.attrs.backendType}, but it runs ${ctx.backendType}`,
      fix: 'restart weftd: it rewrites its lease with the backend it runs',
      explains:
        'the other nodes program this node for the wrong backend and its pods are unreachable',
    });
  return out;
}

/** Several leases with one public IP: one is stale, or two nodes share an address. */
export function checkDuplicateIps(ctx: DoctorContext): CheckResult[] {
  const byIp = new Map<string, string[]>();
  for (const l of ctx.leases)
    byIp.set(l.attrs.publicIp, [...(byIp.get(l.attrs.publicIp) ?? []), l.subnet]);
  const out: CheckResult[] = [];
  for (const [ip, subnets] of byIp) {
    if (subnets.length < 2) continue;
    out.push({
      id: 'duplicate-public-ip',
      status: 'fail',
      title: `${subnets.length} leases have public IP ${ip}: ${subnets.join(', ')}`,
      fix: `if one node owns ${ip}, delete the stale lease (etcdctl del <prefix>/subnets/<subnet key>); if several nodes report ${ip}, give each its own --public-ip or --iface`,
      explains:
        'flannel troubleshooting "Vagrant": every node picked 10.0.2.15 (a NAT interface) and the leases collide; traffic for one node goes to another',
    });
  }
  return out;
}

/** GET /readyz of a weftd on this node, when --healthz-port says where. */
export async function checkDaemon(ctx: DoctorContext): Promise<CheckResult[]> {
  const o = ctx.options;
  if (!o.healthzPort) return [];
  const host = o.healthzIp === '0.0.0.0' ? '127.0.0.1' : o.healthzIp;
  const answer = await new Promise<{ status: number; body: string } | Error>((resolve) => {
    const req = request({ host, port: o.healthzPort, path: '/readyz', timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 2 s')));
    req.on('error', (err) => resolve(err));
    req.end();
  });
  if (answer instanceof Error)
    return [
      {
        id: 'weftd',
        status: 'warn',
        title: `no weftd answers on ${host}:${o.healthzPort} (${answer.message}): checking the node without it`,
        fix: 'start weftd (its lease, routes and subnet.env age without it); or drop --healthz-port here if it listens elsewhere',
      },
    ];
  if (answer.status === 200)
    return [{ id: 'weftd', status: 'ok', title: `weftd on :${o.healthzPort} is ready` }];
  return [
    {
      id: 'weftd',
      status: 'fail',
      title: `weftd on :${o.healthzPort} is not ready (${answer.status}): ${answer.body}`,
      fix: 'the reason says what weftd waits for; its log says more',
    },
  ];
}

/** Modes that read and write a TUN device (`kernel`: whether the kernel has the backend's device). */
function needsTun(ctx: DoctorContext, kernel: boolean | undefined): boolean {
  if (ctx.backendType === 'udp') return true;
  if (ctx.backendType !== 'vxlan' && ctx.backendType !== 'wireguard') return false;
  if (ctx.running) return ctx.running.startsWith('userspace-');
  const mode = ctx.backendType === 'vxlan' ? ctx.options.vxlanMode : ctx.options.wireguardMode;
  return mode === 'userspace' || kernel === false;
}

/** /dev/net/tun present and openable (the userspace modes need it). */
export function checkTun(ctx: DoctorContext, kernel: boolean | undefined): CheckResult[] {
  const needed = needsTun(ctx, kernel);
  const explains =
    'flanneld "failed to open TUN device: open /dev/net/tun: no such file or directory" (flannel issue 1267)';
  let problem: string | undefined;
  let fix = '';
  try {
    closeSync(openSync('/dev/net/tun', constants.O_RDWR));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      problem = '/dev/net/tun does not exist';
      fix =
        'load the module (modprobe tun); in a container, mount the device in (kube-flannel: a hostPath volume /dev/net/tun of type CharDevice)';
    } else if (code === 'EACCES' || code === 'EPERM') {
      problem = `/dev/net/tun cannot be opened (${code})`;
      fix =
        'run weftd as root or with CAP_NET_ADMIN; in a container, allow the device (devices cgroup: c 10:200 rwm)';
    } else {
      problem = `/dev/net/tun cannot be opened: ${(err as Error).message}`;
      fix = 'load the tun module (modprobe tun) and check the device node (c 10:200)';
    }
  }
  const why =
    ctx.backendType === 'udp'
      ? 'the udp backend'
      : ctx.backendType === 'wireguard'
        ? "weft's userspace WireGuard"
        : "weft's userspace VTEP";
  if (!problem)
    return [
      {
        id: 'tun',
        status: 'ok',
        title: `/dev/net/tun opens${needed ? ` (${why} needs it)` : ''}`,
      },
    ];
  return [
    {
      id: 'tun',
      status: needed ? 'fail' : 'warn',
      title: needed
        ? `${problem}: ${why} cannot run`
        : `${problem}: not needed by this node's mode, but the udp backend and the userspace VTEP would fail`,
      fix,
      explains,
    },
  ];
}

/** CAP_NET_ADMIN in the effective set (bit 12 of CapEff). */
export function checkCapability(): CheckResult[] {
  let capEff: bigint | undefined;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) capEff = BigInt(`0x${m[1]}`);
  } catch {}
  if (capEff === undefined)
    return [
      {
        id: 'cap-net-admin',
        status: 'warn',
        title: 'cannot read this process capabilities (/proc/self/status)',
        fix: 'run the doctor as weftd runs (root, or with CAP_NET_ADMIN)',
      },
    ];
  if ((capEff >> 12n) & 1n)
    return [{ id: 'cap-net-admin', status: 'ok', title: 'CAP_NET_ADMIN held' }];
  return [
    {
      id: 'cap-net-admin',
      status: 'fail',
      title:
        'CAP_NET_ADMIN is not held: weftd cannot create devices, routes, neighbors or traffic rules',
      fix: 'run weftd (and this doctor) as root, or grant CAP_NET_ADMIN (kube-flannel: securityContext capabilities add NET_ADMIN, NET_RAW)',
      explains:
        'flannel troubleshooting "Permissions": "Error adding route", "Add L2 failed", "Failed to set up IP Masquerade", "Error registering network: operation not permitted"',
    },
  ];
}

/**
 * Whether the kernel has VXLAN and what --vxlan-mode picks here: the agent's own choice
 * (chooseVxlanMode) over a throwaway device that is created, never brought up, and removed.
 * A device of kind vxlan already there answers without one.
 */
export async function checkVxlanMode(
  ctx: DoctorContext,
): Promise<{ results: CheckResult[]; kernelVxlan?: boolean }> {
  if (ctx.backendType !== 'vxlan' || !ctx.nl) return { results: [] };
  const nl = ctx.nl;
  const haveOne = ctx.links.some((l) => l.kind === 'vxlan');
  const name = `weftdoc${process.pid % 100000}`;
  const setup = async () => {
    if (haveOne) return;
    const link = await nl.createVxlan({ name, vni: 1, port: 4790, learning: false });
    await nl.deleteLink(link.index);
  };
  const mode = ctx.options.vxlanMode;
  const explains =
    'flanneld "failed to create VXLAN device ... operation not supported": a kernel without the vxlan module';
  try {
    const choice = await chooseVxlanMode(mode, setup);
    const running =
      ctx.running === 'kernel-vxlan'
        ? `; ${ctx.overlayName} is the kernel's VXLAN`
        : ctx.running === 'userspace-vxlan'
          ? `; ${ctx.overlayName} is weft's userspace VTEP`
          : '';
    if (choice.kernel)
      return {
        kernelVxlan: true,
        results: [
          {
            id: 'vxlan-mode',
            status: 'ok',
            title: `the kernel has VXLAN: --vxlan-mode ${mode} uses it${running}`,
          },
        ],
      };
    if (mode === 'userspace')
      return {
        kernelVxlan: haveOne || undefined,
        results: [
          {
            id: 'vxlan-mode',
            status: 'ok',
            title: `--vxlan-mode userspace: weft's userspace VTEP${running}`,
          },
        ],
      };
    return {
      kernelVxlan: false,
      results: [
        {
          id: 'vxlan-mode',
          status: 'warn',
          title: `${choice.reason}: --vxlan-mode auto runs weft's userspace VTEP${running}`,
          fix: "nothing to do if that is wanted (it needs /dev/net/tun); for the kernel's VXLAN load the module: modprobe vxlan",
          explains,
        },
      ],
    };
  } catch (err) {
    const noVxlan = err instanceof WeftError && /EOPNOTSUPP|EAFNOSUPPORT/.test(err.code);
    return {
      kernelVxlan: noVxlan ? false : undefined,
      results: [
        {
          id: 'vxlan-mode',
          status: 'fail',
          title: noVxlan
            ? `--vxlan-mode kernel, but the kernel has no VXLAN (${(err as Error).message})`
            : `a VXLAN device cannot be created: ${(err as Error).message}`,
          fix: noVxlan
            ? 'load the module (modprobe vxlan), or run --vxlan-mode auto (userspace when the kernel lacks it)'
            : 'weftd needs CAP_NET_ADMIN to create flannel.<VNI>: run it as root',
          explains,
        },
      ],
    };
  }
}

/** net.ipv4.ip_forward (and IPv6 forwarding when the config enables IPv6). */
export function checkForwarding(ctx: DoctorContext): CheckResult[] {
  const out: CheckResult[] = [];
  const v4 = sysctl('net', 'ipv4', 'ip_forward');
  if (v4 === '1') out.push({ id: 'ip-forward', status: 'ok', title: 'net.ipv4.ip_forward = 1' });
  else
    out.push({
      id: 'ip-forward',
      status: 'fail',
      title: `net.ipv4.ip_forward = ${v4 ?? '(unreadable)'}: this node does not forward between its pods and the overlay`,
      fix: 'sysctl -w net.ipv4.ip_forward=1, and set it in /etc/sysctl.d/ so a reboot keeps it',
      explains:
        'pods reach nothing beyond their own node (and kubeadm\'s preflight "/proc/sys/net/ipv4/ip_forward contents are not set to 1")',
    });
  if (ctx.config?.enableIpv6) {
    const v6 = sysctl('net', 'ipv6', 'conf', 'all', 'forwarding');
    if (v6 === '1')
      out.push({ id: 'ipv6-forward', status: 'ok', title: 'net.ipv6.conf.all.forwarding = 1' });
    else
      out.push({
        id: 'ipv6-forward',
        status: 'fail',
        title: `net.ipv6.conf.all.forwarding = ${v6 ?? '(unreadable)'}: IPv6 pod traffic is not forwarded`,
        fix: 'sysctl -w net.ipv6.conf.all.forwarding=1, and set it in /etc/sysctl.d/',
        explains: "dual-stack pods' IPv6 traffic dies at the node while IPv4 works",
      });
  }
  return out;
}

/** Reverse-path filtering on the overlay device and the bridge: strict (1) drops asymmetric paths. */
export function checkRpFilter(ctx: DoctorContext, bridge: string): CheckResult[] {
  const all = Number(sysctl('net', 'ipv4', 'conf', 'all', 'rp_filter') ?? 0);
  const strict: string[] = [];
  const checked: string[] = [];
  for (const dev of [ctx.overlayName, bridge]) {
    if (!dev || !ctx.links.some((l) => l.name === dev)) continue;
    const own = Number(sysctl('net', 'ipv4', 'conf', dev, 'rp_filter') ?? 0);
    // The kernel applies the larger of conf/all and conf/<dev>.
    const effective = Math.max(all, own);
    checked.push(`${dev} ${effective}`);
    if (effective === 1) strict.push(dev);
  }
  if (checked.length === 0) return [];
  if (strict.length === 0)
    return [
      {
        id: 'rp-filter',
        status: 'ok',
        title: `rp_filter not strict (${checked.join(', ')})`,
      },
    ];
  return [
    {
      id: 'rp-filter',
      status: 'warn',
      title: `rp_filter is strict (1) on ${strict.join(' and ')}: a packet whose way back leaves by another device is dropped`,
      // sysctl writes a dot in an interface name as a slash (net.ipv4.conf.flannel/1.rp_filter).
      fix: `use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 ${strict.map((d) => `net.ipv4.conf.${d.replace(/\./g, '/')}.rp_filter=2`).join(' ')} (and in /etc/sysctl.d/)`,
      explains:
        'packets that arrive on flannel.1 and never reach cni0 (flannel issue 1473); with DirectRouting, several underlays or a host route elsewhere, replies come in by one device and are checked against another',
    },
  ];
}

/**
 * wireguard: whether the kernel has WireGuard and what --wireguard-mode picks, by the agent's own
 * probe (a wireguard link and the generic netlink family), made under a throwaway name and
 * removed; a wireguard link already there answers without one.
 */
export async function checkWireguardMode(
  ctx: DoctorContext,
): Promise<{ results: CheckResult[]; kernel?: boolean }> {
  if (ctx.backendType !== 'wireguard' || !ctx.nl) return { results: [] };
  const nl = ctx.nl;
  const mode = ctx.options.wireguardMode;
  const running =
    ctx.running === 'kernel-wireguard'
      ? `; ${ctx.overlayName} is the kernel's WireGuard`
      : ctx.running === 'userspace-wireguard'
        ? `; ${ctx.overlayName} is weft's userspace WireGuard`
        : '';
  let kernel: boolean;
  let reason = '';
  if (ctx.links.some((l) => l.kind === 'wireguard')) kernel = true;
  else {
    const name = `weftdocwg${process.pid % 100000}`;
    const probe = await probeKernelWireguard(nl, name);
    kernel = probe.ok;
    if (probe.ok) {
      probe.genl.close();
      const link = await nl.link(name);
      if (link) await nl.deleteLink(link.index);
    } else reason = probe.reason;
  }
  if (kernel)
    return {
      kernel,
      results: [
        {
          id: 'wireguard-mode',
          status: 'ok',
          title: `the kernel has WireGuard: --wireguard-mode ${mode} ${mode === 'userspace' ? "runs weft's userspace WireGuard anyway" : 'uses it'}${running}`,
        },
      ],
    };
  if (mode === 'kernel')
    return {
      kernel,
      results: [
        {
          id: 'wireguard-mode',
          status: 'fail',
          title: `--wireguard-mode kernel, but ${reason}`,
          fix: 'load the module (modprobe wireguard), or run --wireguard-mode auto (userspace when the kernel lacks it)',
          explains: 'flanneld "failed to create wireguard interface: operation not supported"',
        },
      ],
    };
  return {
    kernel,
    results: [
      {
        id: 'wireguard-mode',
        status: 'ok',
        title: `${mode === 'userspace' ? '--wireguard-mode userspace' : `auto: ${reason}`}: weft's userspace WireGuard${running}`,
      },
    ],
  };
}
