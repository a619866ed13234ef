import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedStore, SubnetManager, silentLogger, vxlanLeaseData } from '@weft/subnet';
import { Cluster, type Pod, type RunningWeftd, startWeftd, WEFTD } from './cluster.js';

/**
 * The main job: a three-node weft cluster on this machine. Three node namespaces on a shared
 * underlay switch, a weftd per node over the embedded store (with --ip-masq, as kube-flannel runs
 * flanneld), two pods per node made by the CNI plugin as a runtime makes them: weft-cni installed
 * as `flannel`, kube-flannel's cni-conf.json, the reference bridge (cni0) and host-local plugins.
 * Node n1 runs flannel's udp backend; n2 programs the kernel's VXLAN; n3 runs weft's userspace
 * VXLAN. It prints the lease table, a pod-to-pod reachability matrix and a throughput line per
 * path, then tears everything down (also on Ctrl-C). `--json` adds a machine-readable summary.
 */
const json = process.argv.includes('--json');
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
const cluster = new Cluster('demo');
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

const plan = [
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
  { backend: 'vxlan', flags: ['--vxlan-mode', 'userspace'], what: "vxlan, weft's userspace VTEP" },
];

try {
  say('weft demo: a three-node cluster in network namespaces, leases in an embedded store');
  const storePath = join(work, 'subnets.json');
  const store = new EmbeddedStore(storePath);
  await store.putConfig('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}}');
  say('network config: {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}}');
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
    say(`  ${node.name} (${node.ip}) up: ${plan[i].what}`);
    say(
      `    pods ${pods.map((p) => p.ip).join(', ')}: CNI ADD through weft-cni (bridge cni0 + host-local)`,
    );
  }

  const { leases } = await new SubnetManager(store, { logger: silentLogger }).listLeases();
  say('\nleases');
  say(
    `  ${'subnet'.padEnd(16)} ${'public IP'.padEnd(13)} ${'backend'.padEnd(8)} ${'VTEP MAC'.padEnd(18)} expires`,
  );
  const ip = (l: (typeof leases)[number]) => l.attrs.publicIp ?? '-';
  for (const l of leases.sort((a, b) => ip(a).localeCompare(ip(b)))) {
    const mac = vxlanLeaseData(l.attrs)?.vtepMac ?? '-';
    const expires = l.expiresAt ? new Date(l.expiresAt).toISOString().slice(0, 16) : 'never';
    say(
      `  ${(l.subnet ?? '-').padEnd(16)} ${ip(l).padEnd(13)} ${l.attrs.backendType.padEnd(8)} ${mac.padEnd(18)} ${expires}`,
    );
  }

  const backendOf = (p: Pod) => plan[cluster.nodes.indexOf(p.node)].backend;
  const shouldReach = (a: Pod, b: Pod) =>
    a.node === b.node || (backendOf(a) === backendOf(b) && backendOf(a) === 'vxlan');
  const pods = cluster.pods;
  const matrix: Record<string, Record<string, boolean>> = {};
  const checks = pods.flatMap((a) => pods.filter((b) => b !== a).map((b) => ({ a, b })));
  // The nodes learn of each other through the store's watch: give a pair that should connect
  // until the deadline before calling it failed.
  const deadline = Date.now() + 15_000;
  let pending = checks;
  while (pending.length > 0) {
    const results = await Promise.all(
      pending.map(async ({ a, b }) => ({ a, b, ok: await cluster.reaches(a, b) })),
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
    '\npod-to-pod reachability (row pings column): ✓ reached, ✗ failed, · not expected (a udp node reaches only udp nodes, as in flannel)',
  );
  say(`  ${''.padEnd(22)} ${pods.map((p) => p.name.padEnd(10)).join('')}`);
  let failures = 0;
  for (const a of pods) {
    const cells = pods.map((b) => {
      if (a === b) return '-'.padEnd(10);
      const ok = matrix[a.name][b.name];
      const expected = shouldReach(a, b);
      if (expected && !ok) failures++;
      if (!expected && ok) failures++;
      return (expected ? (ok ? '✓' : '✗') : ok ? '!' : '·').padEnd(10);
    });
    say(`  ${`${a.name} ${a.ip}`.padEnd(22)} ${cells.join('')}`);
  }

  say(`\nthroughput (iperf3, one TCP stream, ${seconds} s)`);
  const paths = [
    {
      from: cluster.nodes[1].pods[0],
      to: cluster.nodes[2].pods[0],
      what: "n2 -> n3: kernel VXLAN to weft's userspace VXLAN",
    },
    {
      from: cluster.nodes[2].pods[0],
      to: cluster.nodes[1].pods[0],
      what: "n3 -> n2: weft's userspace VXLAN to kernel VXLAN",
    },
    {
      from: cluster.nodes[0].pods[0],
      to: cluster.nodes[0].pods[1],
      what: 'n1 -> n1: two pods on the udp node (its bridge)',
    },
  ];
  const throughput: Record<string, number> = {};
  for (const p of paths) {
    const server = p.to.ns.spawn(['iperf3', '-s', '-1', '--forceflush', '-B', p.to.ip]);
    await sleep(300);
    try {
      const { stdout } = await p.from.ns.exec(
        ['iperf3', '-c', p.to.ip, '-t', String(seconds), '-J'],
        { timeoutMs: (seconds + 20) * 1000 },
      );
      const bps = (JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } }).end
        .sum_received.bits_per_second;
      throughput[p.what] = bps;
      say(`  ${p.what.padEnd(52)} ${(bps / 1e9).toFixed(2)} Gbit/s`);
    } catch (err) {
      say(`  ${p.what.padEnd(52)} failed: ${(err as Error).message.split('\n')[0]}`);
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
      `summary ${JSON.stringify({ leases: leases.length, matrix, expected: Object.fromEntries(checks.map(({ a, b }) => [`${a.name}>${b.name}`, shouldReach(a, b)])), failures, throughput, doctor })}`,
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
