import {
  type ChildProcess,
  execFile,
  execFileSync,
  type SpawnOptions,
  spawn,
} from 'node:child_process';
import { accessSync, constants, readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { onCi } from './tools.js';

const execFileAsync = promisify(execFile);

/**
 * Network namespaces for tests. Every namespace a test makes is named
 * `weft-<tag>-<pid>-<n>`, so a sweep can remove what a crashed run left behind (its pid is dead)
 * without touching a run that is still going. Interfaces are created inside namespaces, so their
 * short names (15 bytes at most) never collide between concurrent tests.
 */
const PREFIX = 'weft-';
let counter = 0;
const live = new Set<string>();
const children = new Set<ChildProcess>();

export interface PrivilegeStatus {
  ok: boolean;
  /** Why privileged tests cannot run, when they cannot. */
  reason: string;
}

let cachedStatus: PrivilegeStatus | undefined;

/** Whether this process can make namespaces, veths and TUN devices (root, iproute2, /dev/net/tun). */
export function privilegeStatus(): PrivilegeStatus {
  if (cachedStatus) return cachedStatus;
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('not running as root');
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    missing.push('/dev/net/tun is not accessible');
  }
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    missing.push('iproute2 (ip) is not installed');
  }
  cachedStatus = { ok: missing.length === 0, reason: missing.join('; ') };
  return cachedStatus;
}

/**
 * For `describe.skipIf(!privileged())`: true when privileged tests can run. Off CI, a missing
 * privilege prints why the tests are skipped; on CI (see onCi), where they must run, it throws.
 */
export function privileged(what = 'privileged tests'): boolean {
  const status = privilegeStatus();
  if (status.ok) return true;
  if (onCi()) {
    throw new Error(`${what} must run on CI but cannot: ${status.reason}`);
  }
  console.warn(`[weft] skipping ${what}: ${status.reason} (run as root to include them)`);
  return false;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function listNamespaces(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

function deleteNamespaceSync(name: string): void {
  try {
    // A namespace already gone is not worth a line on stderr: deleting twice is allowed.
    const pids = execFileSync('ip', ['netns', 'pids', name], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .split('\n')
      .filter(Boolean)
      .map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  } catch {}
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {}
  live.delete(name);
}

/**
 * Removes namespaces this process made (all of them, or those with `tag`) and any weft test
 * namespace whose creating process is gone. Call it in `afterAll`.
 */
export function sweepNetns(tag?: string): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  children.clear();
  for (const name of listNamespaces()) {
    if (!name.startsWith(PREFIX)) continue;
    const parts = name.split('-');
    const pid = Number(parts[parts.length - 2]);
    // Only names this module makes (weft-<tag>-<pid>-<n>): e.g. the example's weft-example-a-<pid>
    // has no pid there, and must not be taken for a dead run's and deleted under it.
    if (parts.length !== 4 || !Number.isInteger(pid) || !/^\d+$/.test(parts[3])) continue;
    const mine = pid === process.pid;
    if (mine ? tag === undefined || parts[1] === tag : !pidAlive(pid)) deleteNamespaceSync(name);
  }
}

let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const name of [...live]) deleteNamespaceSync(name);
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const name of [...live]) deleteNamespaceSync(name);
      process.kill(process.pid, signal);
    });
  }
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export class Netns {
  constructor(readonly name: string) {}

  /** Runs a command inside the namespace and resolves with its output; rejects on a non-zero exit. */
  async exec(
    argv: readonly string[],
    options: { timeoutMs?: number; input?: string } = {},
  ): Promise<ExecResult> {
    const child = execFileAsync('ip', ['netns', 'exec', this.name, ...argv], {
      maxBuffer: 64 << 20,
      timeout: options.timeoutMs ?? 60_000,
    });
    if (options.input !== undefined) {
      child.child.stdin?.end(options.input);
    }
    const { stdout, stderr } = await child;
    return { stdout, stderr };
  }

  /** Runs a shell script inside the namespace. */
  sh(script: string, options: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return this.exec(['sh', '-ec', script], options);
  }

  /** Like exec, but synchronous; for setup steps. */
  execSync(argv: readonly string[]): string {
    return execFileSync('ip', ['netns', 'exec', this.name, ...argv], { encoding: 'utf8' });
  }

  /** Starts a long-running process inside the namespace; it is killed by sweepNetns and on exit. */
  spawn(argv: readonly string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, ...argv], { stdio: 'pipe', ...options });
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  }

  /** Deletes the namespace, killing every process still inside it. Safe to call twice. */
  delete(): void {
    deleteNamespaceSync(this.name);
  }
}

/** Makes a namespace with its loopback up. `tag` (letters and digits) says which test made it. */
export function createNetns(tag: string): Netns {
  if (!/^[a-z0-9]{1,12}$/.test(tag))
    throw new Error(`netns tag must be 1-12 lowercase letters or digits: ${tag}`);
  hookExit();
  const name = `${PREFIX}${tag}-${process.pid}-${counter++}`;
  execFileSync('ip', ['netns', 'add', name]);
  live.add(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return new Netns(name);
}

export interface VethOptions {
  /** Interface name in each namespace (default `veth0`). */
  nameA?: string;
  nameB?: string;
  /** Address with prefix length, e.g. `198.18.0.1/24`. */
  addressA?: string;
  addressB?: string;
  mtu?: number;
}

/** Joins two namespaces with a veth pair, addresses them and brings both ends up. */
export function linkVeth(a: Netns, b: Netns, options: VethOptions = {}): void {
  const nameA = options.nameA ?? 'veth0';
  const nameB = options.nameB ?? 'veth0';
  execFileSync('ip', [
    'link',
    'add',
    'name',
    nameA,
    'netns',
    a.name,
    'type',
    'veth',
    'peer',
    'name',
    nameB,
    'netns',
    b.name,
  ]);
  for (const [ns, name, address] of [
    [a, nameA, options.addressA],
    [b, nameB, options.addressB],
  ] as const) {
    if (options.mtu)
      execFileSync('ip', ['-n', ns.name, 'link', 'set', name, 'mtu', String(options.mtu)]);
    if (address) execFileSync('ip', ['-n', ns.name, 'addr', 'add', address, 'dev', name]);
    execFileSync('ip', ['-n', ns.name, 'link', 'set', name, 'up']);
  }
}

/** The usual test underlay: two nodes on 198.18.0.0/24 (RFC 2544 benchmarking space) over a veth. */
export interface TwoNodes {
  a: Netns;
  b: Netns;
  /** Underlay addresses of a and b. */
  ipA: string;
  ipB: string;
  /** Deletes both namespaces. */
  delete(): void;
}

export function createTwoNodes(tag: string, options: { mtu?: number } = {}): TwoNodes {
  const a = createNetns(tag);
  let b: Netns | undefined;
  try {
    b = createNetns(tag);
    linkVeth(a, b, { addressA: '198.18.0.1/24', addressB: '198.18.0.2/24', mtu: options.mtu });
  } catch (err) {
    a.delete();
    b?.delete();
    throw err;
  }
  const nodeB = b;
  return {
    a,
    b: nodeB,
    ipA: '198.18.0.1',
    ipB: '198.18.0.2',
    delete() {
      a.delete();
      nodeB.delete();
    },
  };
}

/** Waits until `check` resolves true, polling every `intervalMs`, or throws after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  { timeoutMs = 10_000, intervalMs = 50 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** More than two nodes on one underlay: each node's veth0 a port of a bridge in a switch namespace. */
export interface SwitchedNodes {
  nodes: Netns[];
  /** Underlay addresses, 198.18.0.1 onwards, in the order of `nodes`. */
  ips: string[];
  /** Deletes every node and the switch. */
  delete(): void;
}

export function createSwitchedNodes(
  tag: string,
  count: number,
  options: { mtu?: number } = {},
): SwitchedNodes {
  const made: Netns[] = [];
  try {
    const sw = createNetns(tag);
    made.push(sw);
    execFileSync('ip', ['-n', sw.name, 'link', 'add', 'br0', 'type', 'bridge']);
    execFileSync('ip', ['-n', sw.name, 'link', 'set', 'br0', 'up']);
    const nodes: Netns[] = [];
    const ips: string[] = [];
    for (let i = 0; i < count; i++) {
      const ns = createNetns(tag);
      made.push(ns);
      nodes.push(ns);
      ips.push(`198.18.0.${i + 1}`);
      linkVeth(ns, sw, {
        nameA: 'veth0',
        nameB: `p${i}`,
        addressA: `198.18.0.${i + 1}/24`,
        mtu: options.mtu,
      });
      execFileSync('ip', ['-n', sw.name, 'link', 'set', `p${i}`, 'master', 'br0']);
    }
    return {
      nodes,
      ips,
      delete() {
        for (const ns of made) ns.delete();
      },
    };
  } catch (err) {
    for (const ns of made) ns.delete();
    throw err;
  }
}
