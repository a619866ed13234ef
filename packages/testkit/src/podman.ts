import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Netns } from './netns.js';

const execFileAsync = promisify(execFile);

/** Debian's busybox-static: one static binary, so a directory holding it is a whole container image. */
export const BUSYBOX = '/bin/busybox';

/**
 * Makes a container root filesystem from busybox-static in `dir`: the binary, a link per applet
 * (sh, ping, wget, httpd, ...), and the mount points a runtime needs. No registry is needed.
 */
export function busyboxRootfs(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  for (const d of ['proc', 'sys', 'dev', 'etc', 'tmp', 'run'])
    mkdirSync(join(dir, d), { recursive: true });
  copyFileSync(BUSYBOX, join(bin, 'busybox'));
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  for (const applet of applets) if (applet !== 'busybox') symlinkSync('busybox', join(bin, applet));
  return dir;
}

/** This process's hard limit for one resource (/proc/self/limits), as a number. */
function hardLimit(name: string): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const hard = Number(line?.slice(name.length).trim().split(/\s+/)[1]);
  return Number.isFinite(hard) ? hard : 4096;
}

export interface PodmanOptions {
  /** A directory of this podman's own: storage, run state, its containers.conf and network configs. */
  dir: string;
  /** Network configuration lists it may use, by file name (e.g. `10-flannel.conflist`). */
  networks: Record<string, string>;
  /** Where it looks for CNI plugins, in order (`cni_plugin_dirs`). */
  cniPluginDirs: string[];
}

/**
 * Rootful podman with its CNI network backend, working as a runtime on one node: it runs in the
 * node's network namespace (nsenter, so it keeps the host's mounts and /run/netns), with storage,
 * run state and configuration of its own (CONTAINERS_CONF). RLIMIT_NOFILE and RLIMIT_NPROC are set
 * at or below this machine's hard limits (default_ulimits): without CAP_SYS_RESOURCE runc cannot
 * raise them to podman's defaults and refuses to start the container.
 */
export class Podman {
  readonly env: NodeJS.ProcessEnv;
  private readonly base: string[];

  constructor(
    readonly node: Netns,
    readonly options: PodmanOptions,
  ) {
    const { dir } = options;
    const netDir = join(dir, 'net.d');
    for (const d of ['root', 'runroot', 'tmp', 'net.d'])
      mkdirSync(join(dir, d), { recursive: true });
    for (const [file, text] of Object.entries(options.networks))
      writeFileSync(join(netDir, file), text);
    const nofile = Math.min(hardLimit('Max open files'), 1048576);
    const nproc = Math.min(hardLimit('Max processes'), 4096);
    writeFileSync(
      join(dir, 'containers.conf'),
      [
        '[containers]',
        `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = ${JSON.stringify(options.cniPluginDirs)}`,
        `network_config_dir = ${JSON.stringify(netDir)}`,
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `tmp_dir = ${JSON.stringify(join(dir, 'tmp'))}`,
        '',
      ].join('\n'),
    );
    this.env = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf') };
    this.base = [
      `--net=/run/netns/${node.name}`,
      'podman',
      '--root',
      join(dir, 'root'),
      '--runroot',
      join(dir, 'runroot'),
    ];
  }

  /** Runs `podman <args>` on the node; resolves with stdout (trimmed), rejects with stderr. */
  async run(args: readonly string[], timeoutMs = 60_000): Promise<string> {
    try {
      const { stdout } = await execFileAsync('nsenter', [...this.base, ...args], {
        env: this.env,
        timeout: timeoutMs,
        maxBuffer: 64 << 20,
      });
      return stdout.trim();
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`podman ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
    }
  }

  /** The container's address on `network` and its network namespace (a name under /run/netns). */
  async address(container: string, network: string): Promise<{ ip: string; netns: string }> {
    const [ip, sandbox] = (
      await this.run([
        'inspect',
        '--format',
        `{{(index .NetworkSettings.Networks "${network}").IPAddress}} {{.NetworkSettings.SandboxKey}}`,
        container,
      ])
    ).split(' ');
    return { ip, netns: sandbox.replace('/run/netns/', '') };
  }

  /** Removes every container of this podman (each one's CNI DEL runs), synchronously. */
  removeAll(): void {
    try {
      execFileSync('nsenter', [...this.base, 'rm', '--all', '--force', '--time', '0'], {
        env: this.env,
        stdio: 'ignore',
        timeout: 60_000,
      });
    } catch {}
  }
}
