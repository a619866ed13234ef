import { execFileSync } from 'node:child_process';
import { cpus, release } from 'node:os';

/** What a benchmark result was measured on, recorded with every result file. */
export interface MachineInfo {
  kernel: string;
  cpuCount: number;
  cpuModel: string;
  node: string;
  weftCommit: string;
  date: string;
}

export function machineInfo(): MachineInfo {
  let weftCommit = 'unknown';
  try {
    weftCommit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      encoding: 'utf8',
    }).trim();
    if (dirty) weftCommit += '-dirty';
  } catch {}
  return {
    kernel: release(),
    cpuCount: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    weftCommit,
    date: new Date().toISOString(),
  };
}
