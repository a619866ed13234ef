import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writePcap } from './pcap.js';

const execFileAsync = promisify(execFile);

/** Debian's python with python3-scapy; the python3 first on PATH lacks Debian's packages. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export function hasCommand(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function hasScapy(): boolean {
  try {
    execFileSync(SYSTEM_PYTHON, ['-c', 'import scapy.all'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Under CI (CI set to anything but empty or `false`), what a test needs must be there: no skipping. */
export function onCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== 'false';
}

/**
 * For `describe.skipIf(!haveTools(...))`: true when every tool is there (a command on PATH, a
 * path, or `scapy` for Debian's python3-scapy). Off CI a missing one prints why the tests are
 * skipped; on CI, where scripts/setup.sh installs them all, it throws.
 */
export function haveTools(what: string, ...tools: string[]): boolean {
  const missing = tools.filter((t) => !(t === 'scapy' ? hasScapy() : hasCommand(t)));
  if (missing.length === 0) return true;
  const reason = `${missing.join(', ')} not installed (scripts/setup.sh installs them)`;
  if (onCi()) throw new Error(`${what} must run on CI but cannot: ${reason}`);
  console.warn(`[weft] skipping ${what}: ${reason}`);
  return false;
}

/** A temporary directory removed by the returned function. */
export function tempDir(prefix = 'weft-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Writes frames to a pcap and returns tshark's JSON dissection: one object per frame, the
 * `_source.layers` of `tshark -T json --no-duplicate-keys` (a layer seen twice, like the outer and
 * inner `eth` of a VXLAN frame, becomes an array). `decodeAs` entries become `-d` options, e.g.
 * `udp.port==8472,vxlan`.
 */
export async function tsharkDissect(
  frames: readonly Uint8Array[],
  options: { decodeAs?: string[]; linkType?: number } = {},
): Promise<Record<string, unknown>[]> {
  const dir = tempDir('weft-tshark-');
  try {
    const file = join(dir.path, 'frames.pcap');
    writeFileSync(file, writePcap(frames, options.linkType));
    const args = [
      '-r',
      file,
      '-T',
      'json',
      '--no-duplicate-keys',
      '-o',
      'udp.check_checksum:TRUE',
      '-o',
      'ip.check_checksum:TRUE',
    ];
    for (const d of options.decodeAs ?? []) args.push('-d', d);
    const { stdout } = await execFileAsync('tshark', args, {
      maxBuffer: 64 << 20,
      env: { ...process.env, HOME: dir.path },
    });
    const parsed = JSON.parse(stdout) as { _source: { layers: Record<string, unknown> } }[];
    return parsed.map((p) => p._source.layers);
  } finally {
    dir.remove();
  }
}

/**
 * Runs a Python snippet under Debian's python with scapy on frames written to a pcap. The
 * snippet sees `packets` (scapy's rdpcap result) and must print one JSON document to stdout.
 */
export async function scapyRun(
  frames: readonly Uint8Array[],
  snippet: string,
  linkType?: number,
): Promise<unknown> {
  const dir = tempDir('weft-scapy-');
  try {
    const file = join(dir.path, 'frames.pcap');
    writeFileSync(file, writePcap(frames, linkType));
    const program = [
      'import json, sys, logging',
      'logging.getLogger("scapy.runtime").setLevel(logging.ERROR)',
      'from scapy.all import *',
      'from scapy.layers.vxlan import VXLAN',
      `packets = rdpcap(${JSON.stringify(file)})`,
      snippet,
    ].join('\n');
    const { stdout } = await execFileAsync(SYSTEM_PYTHON, ['-c', program], { maxBuffer: 64 << 20 });
    return JSON.parse(stdout);
  } finally {
    dir.remove();
  }
}
