// How long a runtime waits for weft-cni, and how much of that is weft-cni's own: per round, an ADD
// and a DEL through the installed plugin (`flannel`, as a runtime runs it), then the same ADD and
// DEL sent straight to the reference bridge plugin with the configuration weft-cni handed it. The
// difference is the plugin's own part (Node's start-up, subnet.env, the record, the delegate's
// exec). Needs root and `pnpm build`; makes its own namespaces and removes them.
//   node packages/cni/scripts/add-latency.mjs [rounds, default 30]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [, script, first, ...rest] = process.argv;

if (first !== '--inner') {
  const rounds = Number(first ?? 30);
  const { installPlugin } = await import('../dist/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-latency-'));
  const node = `weft-cnilat-${process.pid}-0`;
  const pod = `weft-cnilat-${process.pid}-1`;
  try {
    installPlugin(join(dir, 'bin'));
    writeFileSync(
      join(dir, 'subnet.env'),
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    for (const ns of [node, pod]) execFileSync('ip', ['netns', 'add', ns]);
    // The rounds run inside the node's namespace, as a runtime on that node would run the plugin.
    const out = execFileSync(
      'ip',
      ['netns', 'exec', node, process.execPath, script, '--inner', dir, pod, String(rounds)],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
    );
    process.stdout.write(out);
  } finally {
    for (const ns of [node, pod]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }
} else {
  const [dir, pod, roundsText] = rest;
  const rounds = Number(roundsText);
  const conf = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'cbr0',
    type: 'flannel',
    subnetFile: join(dir, 'subnet.env'),
    dataDir: join(dir, 'flannel'),
    ipam: { dataDir: join(dir, 'ipam') },
    delegate: { hairpinMode: true, isDefaultGateway: true },
  });
  const env = (command, id) => ({
    ...process.env,
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: `/run/netns/${pod}`,
    CNI_IFNAME: 'eth0',
    CNI_PATH: `${join(dir, 'bin')}:/usr/lib/cni`,
  });
  // CPU time of the finished children (the plugin and all it ran), from /proc/self/stat: unlike
  // wall time it hardly moves when other work shares the CPUs.
  const tickMs = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
  const childCpuMs = () => {
    const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
    return (Number(f[13]) + Number(f[14])) * tickMs;
  };
  const t = {
    weftAdd: [],
    weftDel: [],
    bridgeAdd: [],
    bridgeDel: [],
    own: [],
    version: [],
    node: [],
  };
  const cpu = {};
  /** Runs one call; when `what` is set, keeps its wall time and adds its CPU time there. */
  const timed = (what, file, input, e) => {
    const c0 = childCpuMs();
    const t0 = process.hrtime.bigint();
    const r = spawnSync(file, file === process.execPath ? ['-e', '0'] : [], {
      input,
      env: e,
      encoding: 'utf8',
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0)
      throw new Error(`${file} ${e.CNI_COMMAND ?? ''} failed: ${r.stdout}${r.stderr}`);
    if (what) {
      t[what].push(ms);
      cpu[what] = (cpu[what] ?? 0) + childCpuMs() - c0;
    }
    return ms;
  };
  const flannel = join(dir, 'bin', 'flannel');
  const versionEnv = { ...process.env, CNI_COMMAND: 'VERSION' };
  let delegate;
  for (let i = 0; i < rounds + 3; i++) {
    const keep = i >= 3; // the first rounds warm the page cache; not counted
    timed(keep && 'weftAdd', flannel, conf, env('ADD', `w${i}`));
    delegate ??= (() => {
      const record = JSON.parse(readFileSync(join(dir, 'flannel', `w${i}`), 'utf8'));
      delete record['weft.dev/ifName'];
      return JSON.stringify(record);
    })();
    timed(keep && 'weftDel', flannel, conf, env('DEL', `w${i}`));
    timed(keep && 'bridgeAdd', '/usr/lib/cni/bridge', delegate, env('ADD', `b${i}`));
    timed(keep && 'bridgeDel', '/usr/lib/cni/bridge', delegate, env('DEL', `b${i}`));
    timed(keep && 'version', flannel, '{"cniVersion":"1.0.0"}', versionEnv);
    timed(keep && 'node', process.execPath, '', process.env);
  }
  cpu.own = cpu.weftAdd - cpu.bridgeAdd;
  const q = (a, p) =>
    [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))];
  const cell = (v, w) => v.toFixed(1).padStart(w);
  const stats = (key) =>
    key === 'own'
      ? [0.5, 0.9, 0].map((p) => q(t.weftAdd, p) - q(t.bridgeAdd, p))
      : [0.5, 0.9, 0].map((p) => q(t[key], p));
  const row = (name, key) =>
    `| ${name.padEnd(44)} | ${stats(key)
      .map((v) => cell(v, 7))
      .join(' | ')} | ${cell(cpu[key] / rounds, 8)} |`;
  console.log(`weft-cni ADD latency, ${rounds} rounds (ms; Node ${process.version})\n`);
  console.log(`| ${'what'.padEnd(44)} |  median |     p90 |     min | mean CPU |`);
  console.log(
    `|${'-'.repeat(46)}|${'-'.repeat(9)}|${'-'.repeat(9)}|${'-'.repeat(9)}|${'-'.repeat(10)}|`,
  );
  console.log(row('ADD through weft-cni (as flannel)', 'weftAdd'));
  console.log(row('ADD straight to bridge, same configuration', 'bridgeAdd'));
  console.log(row("weft-cni's own part (difference of the two)", 'own'));
  console.log(row('DEL through weft-cni', 'weftDel'));
  console.log(row('DEL straight to bridge', 'bridgeDel'));
  console.log(row('weft-cni VERSION (start-up and answer)', 'version'));
  console.log(row('node -e 0 (Node start-up alone)', 'node'));
}
