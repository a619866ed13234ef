import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  EmbeddedStore,
  SubnetManager,
  silentLogger,
  vxlanLeaseData,
  vxlanLeaseDataV6,
} from '@weft/subnet';
import { Cluster, type Pod, type RunningWeftd, startWeftd, WEFTD } from './cluster.js';

/**
 * The main job: a three-node weft cluster on this machine. Three node namespaces on a shared
 * underlay switch, a weftd per node over the embedded store (with --ip-masq, as kube-flannel runs
 * flanneld), two pods per node made by the CNI plugin as a runtime makes them: weft-cni installed
 * as `flannel`, kube-flannel's cni-conf.json, the reference bridge (cni0) and host-local plugins.
 * Node n1 runs flannel's udp backend; n2 programs the kernel's VXLAN; n3 runs weft's userspace
 * VXLAN. It prints the lease table, a pod-to-pod reachability matrix and a throughput line per
 * path, then tears everything down (also on Ctrl-C). `--json` adds a machine-readable summary.
 *
 * `--ipv6`: the same cluster dual-stack, as flannel runs it (EnableIPv6, IPv6Network, an IPv6
 * address on every node's underlay): n1 on the kernel's VXLAN (flannel.1 and flannel-v6.1), n2
 * and n3 on weft's userspace VTEPs; pods with an address of each family; a matrix per family.
 */
const json = process.argv.includes('--json');
const ipv6 = process.argv.includes('--ipv6');
const seconds = Number(process.env.WEFT_DEMO_IPERF_SECONDS ?? 3);
let interrupted = false;
// After Ctrl-C the namespaces vanish under the main flow: only the teardown speaks then.
const say = (line = '') => {
  if (!interrupted) process.stdout.write(`${line}\n`);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.getuid?.() !== 0) {
  console.error('weft demo: needs root (network namespaces, TUN devices): run it as root');
  process.exit(1);
}

const work = mkdtempSync(join(tmpdir(), 'weft-demo-'));
const cluster = new Cluster('demo', { underlay: ipv6 ? 'dual' : 'ipv4' });
const daemons: RunningWeftd[] = [];
/** Each node's weftd flags: weftd doctor runs with the same. */
const weftdArgs: string[][] = [];
let teardown: Promise<void> | undefined;
/** Stops the daemons, removes the namespaces and the temp dir; every caller waits for the one run. */
function cleanup(): Promise<void> {
  teardown ??= (async () => {
    await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)));
    cluster.delete();
    rmSync(work, { recursive: true, force: true });
  })();
  return teardown;
}
// The process must live until the teardown (daemons, store, namespaces, temp dir) is done.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    process.stdout.write(`\n${signal === 'SIGINT' ? 'Ctrl-C' : signal}: tearing down\n`);
    void cleanup().then(() => {
      process.stdout.write('torn down\n');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  });
}

const plan = ipv6
  ? [
      {
        backend: 'vxlan',
        flags: ['--vxlan-mode', 'kernel'],
        what: "vxlan, the kernel's VXLAN (flannel.1, flannel-v6.1) programmed over netlink",
      },
      {
        backend: 'vxlan',
        flags: ['--vxlan-mode', 'userspace'],
        what: "vxlan, weft's userspace VTEPs, IPv4 and IPv6",
      },
      {
        backend: 'vxlan',
        flags: ['--vxlan-mode', 'userspace'],
        what: "vxlan, weft's userspace VTEPs, IPv4 and IPv6",
      },
    ]
  : [
      {
        backend: 'udp',
        flags: ['--backend-type', 'udp'],
        what: "flannel's udp backend (weft userspace)",
      },
      {
        backend: 'vxlan',
        flags: ['--vxlan-mode', 'kernel'],
        what: "vxlan, the kernel's VXLAN programmed over netlink",
      },
      {
        backend: 'vxlan',
        flags: ['--vxlan-mode', 'userspace'],
        what: "vxlan, weft's userspace VTEP",
      },
    ];
const config = ipv6
  ? '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/48", "Backend": {"Type": "vxlan", "VNI": 1}}'
  : '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}}';
const families: (4 | 6)[] = ipv6 ? [4, 6] : [4];

try {
  say(
    `weft demo: a three-node ${ipv6 ? 'dual-stack ' : ''}cluster in network namespaces, leases in an embedded store`,
  );
  const storePath = join(work, 'subnets.json');
  const store = new EmbeddedStore(storePath);
  await store.putConfig(config);
  say(`network config: ${config}`);
  say(
    "pods: kube-flannel's cni-conf.json (flannel, then portmap); weft-cni installed as `flannel`, delegating to /usr/lib/cni's bridge and host-local",
  );

  for (const [i, p] of plan.entries()) {
    const node = cluster.addNode();
    const dir = join(work, node.name);
    mkdirSync(dir, { recursive: true });
    const args = [
      '--store-path',
      storePath,
      '--subnet-file',
      join(dir, 'subnet.env'),
      '--iface',
      'eth0',
      '--healthz-port',
      '9471',
      '--ip-masq',
      ...p.flags,
    ];
    weftdArgs.push(args);
    const weftd = startWeftd(node.ns, args);
    daemons.push(weftd);
    await weftd.waitForLog('ready');
    const pods = cluster.addPods(node, join(dir, 'subnet.env'), 2);
    say(`  ${node.name} (${[node.ip, node.ip6].filter(Boolean).join(', ')}) up: ${plan[i].what}`);
    say(
      `    pods ${pods.map((p) => [p.ip, p.ip6].filter(Boolean).join(' ')).join(', ')}: CNI ADD through weft-cni (bridge cni0 + host-local)`,
    );
  }

  const { leases } = await new SubnetManager(store, { logger: silentLogger }).listLeases();
  say('\nleases');
  const ip = (l: (typeof leases)[number]) => l.attrs.publicIp ?? '-';
  if (ipv6)
    say(
      `  ${'subnet'.padEnd(16)} ${'IPv6 subnet'.padEnd(21)} ${'public IP'.padEnd(13)} ${'public IPv6'.padEnd(12)} ${'backend'.padEnd(8)} ${'VTEP MAC'.padEnd(18)} ${'IPv6 VTEP MAC'.padEnd(18)} expires`,
    );
  else
    say(
      `  ${'subnet'.padEnd(16)} ${'public IP'.padEnd(13)} ${'backend'.padEnd(8)} ${'VTEP MAC'.padEnd(18)} expires`,
    );
  for (const l of leases.sort((a, b) => ip(a).localeCompare(ip(b)))) {
    const mac = vxlanLeaseData(l.attrs)?.vtepMac ?? '-';
    const mac6 = vxlanLeaseDataV6(l.attrs)?.vtepMac ?? '-';
    const expires = l.expiresAt ? new Date(l.expiresAt).toISOString().slice(0, 16) : 'never';
    say(
      ipv6
        ? `  ${(l.subnet ?? '-').padEnd(16)} ${(l.subnet6 ?? '-').padEnd(21)} ${ip(l).padEnd(13)} ${(l.attrs.publicIpv6 ?? '-').padEnd(12)} ${l.attrs.backendType.padEnd(8)} ${mac.padEnd(18)} ${mac6.padEnd(18)} ${expires}`
        : `  ${(l.subnet ?? '-').padEnd(16)} ${ip(l).padEnd(13)} ${l.attrs.backendType.padEnd(8)} ${mac.padEnd(18)} ${expires}`,
    );
  }

  const backendOf = (p: Pod) => plan[cluster.nodes.indexOf(p.node)].backend;
  const shouldReach = (a: Pod, b: Pod) =>
    a.node === b.node || (backendOf(a) === backendOf(b) && backendOf(a) === 'vxlan');
  const pods = cluster.pods;
  const matrices: Record<string, Record<string, Record<string, boolean>>> = {};
  const checks = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => ({ a, b })));
  let failures = 0;
  for (const family of families) {
    const matrix: Record<string, Record<string, boolean>> = {};
    matrices[`ipv${family}`] = matrix;
    // The nodes learn of each other through the store's watch: give a pair that should connect
    // until the deadline before calling it failed.
    const deadline = Date.now() + 15_000;
    let pending = checks;
    while (pending.length > 0) {
      const results = await Promise.all(
        pending.map(async ({ a, b }) => ({ a, b, ok: await cluster.reaches(a, b, 1, family) })),
      );
      for (const { a, b, ok } of results) {
        matrix[a.name] ??= {};
        matrix[a.name][b.name] = ok;
      }
      pending = results.filter((r) => !r.ok && shouldReach(r.a, r.b));
      if (pending.length === 0 || Date.now() > deadline || interrupted) break;
      await sleep(500);
    }
    say(
      ipv6
        ? `\npod-to-pod reachability over IPv${family} (row pings column): ✓ reached, ✗ failed`
        : '\npod-to-pod reachability (row pings column): ✓ reached, ✗ failed, · not expected (a udp node reaches only udp nodes, as in flannel)',
    );
    const width = family === 6 ? 30 : 22;
    say(`  ${''.padEnd(width)} ${pods.map((p) => p.name.padEnd(10)).join('')}`);
    for (const a of pods) {
      const cells = pods.map((b) => {
        if (a === b) return '-'.padEnd(10);
        const ok = matrix[a.name][b.name];
        const expected = shouldReach(a, b);
        if (expected && !ok) failures++;
        if (!expected && ok) failures++;
        return (expected ? (ok ? '✓' : '✗') : ok ? '!' : '·').padEnd(10);
      });
      say(`  ${`${a.name} ${family === 6 ? a.ip6 : a.ip}`.padEnd(width)} ${cells.join('')}`);
    }
  }

  say(`\nthroughput (iperf3, one TCP stream, ${seconds} s)`);
  const [n1, n2, n3] = cluster.nodes;
  const paths = ipv6
    ? [
        {
          from: n1.pods[0],
          to: n2.pods[0],
          family: 6,
          what: "n1 -> n2 IPv6: kernel VXLAN to weft's userspace VXLAN",
        },
        {
          from: n2.pods[0],
          to: n1.pods[0],
          family: 6,
          what: "n2 -> n1 IPv6: weft's userspace VXLAN to kernel VXLAN",
        },
        {
          from: n2.pods[0],
          to: n3.pods[0],
          family: 6,
          what: "n2 -> n3 IPv6: weft's userspace VXLAN both ends",
        },
        {
          from: n1.pods[0],
          to: n2.pods[0],
          family: 4,
          what: "n1 -> n2 IPv4: kernel VXLAN to weft's userspace VXLAN",
        },
      ]
    : [
        {
          from: n2.pods[0],
          to: n3.pods[0],
          family: 4,
          what: "n2 -> n3: kernel VXLAN to weft's userspace VXLAN",
        },
        {
          from: n3.pods[0],
          to: n2.pods[0],
          family: 4,
          what: "n3 -> n2: weft's userspace VXLAN to kernel VXLAN",
        },
        {
          from: n1.pods[0],
          to: n1.pods[1],
          family: 4,
          what: 'n1 -> n1: two pods on the udp node (its bridge)',
        },
      ];
  const throughput: Record<string, number> = {};
  for (const p of paths) {
    const to = p.family === 6 ? p.to.ip6! : p.to.ip;
    const server = p.to.ns.spawn(['iperf3', '-s', '-1', '--forceflush', '-B', to]);
    await sleep(300);
    try {
      const { stdout } = await p.from.ns.exec(['iperf3', '-c', to, '-t', String(seconds), '-J'], {
        timeoutMs: (seconds + 20) * 1000,
      });
      const bps = (JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } }).end
        .sum_received.bits_per_second;
      throughput[p.what] = bps;
      say(`  ${p.what.padEnd(56)} ${(bps / 1e9).toFixed(2)} Gbit/s`);
    } catch (err) {
      say(`  ${p.what.padEnd(56)} failed: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      server.kill('SIGKILL');
    }
  }
  // weftd doctor on every node, with its weftd's flags and the CNI files its pods were made with.
  say('\nweftd doctor on each node: its checks, and its path to every peer');
  const doctor: Record<string, { status: number; ok: number; warn: number; fail: number }> = {};
  const runs = await Promise.all(
    cluster.nodes.map(async (node, i) => {
      const cni = cluster.cniFiles(node, join(work, node.name, 'subnet.env'));
      const argv = [process.execPath, WEFTD, 'doctor', ...weftdArgs[i]];
      argv.push('--cni-conf-dir', cni.confDir, '--cni-bin-dir', cni.binDirs.join(':'));
      return node.ns.exec(argv).then(
        (r) => ({ status: 0, stdout: r.stdout }),
        (e: { code?: number; stdout?: string }) => ({
          status: e.code ?? 1,
          stdout: e.stdout ?? '',
        }),
      );
    }),
  );
  for (const [i, node] of cluster.nodes.entries()) {
    const lines = runs[i].stdout.split('\n');
    const marks = (m: string) => lines.filter((l) => l.startsWith(`${m} `)).length;
    doctor[node.name] = {
      status: runs[i].status,
      ok: marks('✓'),
      warn: marks('!'),
      fail: marks('✗'),
    };
    if (runs[i].status !== 0) failures++;
    const d = doctor[node.name];
    say(
      `  ${node.name} (${node.ip}): ${d.ok} checks ✓${d.warn ? `, ${d.warn} !` : ''}${d.fail ? `, ${d.fail} ✗` : ''}`,
    );
    for (const l of lines) if (/^[!✗] |^ {4}fix: /.test(l)) say(`    ${l}`);
    const table = lines.findIndex((l) => l.startsWith('path checks from this node'));
    const end = lines.indexOf('', table);
    for (const l of lines.slice(table + 1, end < 0 ? undefined : end)) say(`  ${l}`);
  }
  say(
    failures === 0
      ? '\nevery pair that should connect does, and no other'
      : `\n${failures} pairs did not behave as expected`,
  );
  if (json)
    say(
      `summary ${JSON.stringify({ leases: leases.length, matrix: matrices.ipv4, ...(ipv6 ? { matrix6: matrices.ipv6 } : {}), expected: Object.fromEntries(checks.map(({ a, b }) => [`${a.name}>${b.name}`, shouldReach(a, b)])), failures, throughput, doctor })}`,
    );
  process.exitCode = failures === 0 ? 0 : 1;
} catch (err) {
  // Ctrl-C reaches the commands the demo runs too; let its handler run before blaming them.
  await sleep(100);
  if (!interrupted) {
    console.error(`weft demo failed: ${(err as Error).message}`);
    for (const d of daemons) if (d.stderr()) console.error(d.stderr());
    process.exitCode = 1;
  }
} finally {
  if (!interrupted) {
    say('tearing down');
    await cleanup();
  }
}
