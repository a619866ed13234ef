import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { CniCode, CniError } from './errors.js';

/**
 * Finds a plugin executable in CNI_PATH's directories, as libcni does (the first regular file of
 * that name). A missing one is the well-known "failed to find plugin" error, naming the plugin and
 * every directory looked in (code 7: the configuration names a plugin this node cannot run).
 */
export function findPlugin(name: string, dirs: readonly string[]): string {
  if (name === '' || name.includes('/')) {
    throw new CniError(CniCode.invalidConfig, `invalid plugin name: ${JSON.stringify(name)}`);
  }
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      if (statSync(path).isFile()) return path;
    } catch {}
  }
  const needs =
    name === 'bridge' || name === 'host-local'
      ? `flannel delegates to the reference CNI plugins "bridge" and "host-local": install them (Debian: apt-get install containernetworking-plugins, which puts them in /usr/lib/cni) into a directory of CNI_PATH, or add their directory to the runtime's CNI plugin path`
      : `install "${name}" into a directory of CNI_PATH, or change the configuration that names it`;
  throw new CniError(
    CniCode.invalidConfig,
    `failed to find plugin ${JSON.stringify(name)} in path [${dirs.join(' ')}]`,
    needs,
  );
}

/** What a delegated plugin printed when it succeeded (empty for DEL, CHECK, STATUS and GC). */
export interface ExecOutput {
  result?: Record<string, unknown>;
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Runs a delegated plugin (SPEC.md section 4): the caller's environment with CNI_COMMAND set,
 * the configuration on stdin, its stderr passed through to ours. A failure becomes a CniError
 * carrying the delegate's own code, msg and details, unchanged.
 */
export function execPlugin(
  path: string,
  command: string,
  conf: Record<string, unknown>,
  env: Readonly<Record<string, string | undefined>>,
): ExecOutput {
  const input = JSON.stringify(conf);
  // libcni retries "text file busy": the plugin binary is being replaced right now.
  for (let attempt = 0; ; attempt++) {
    const run = spawnSync(path, [], {
      input,
      env: { ...env, CNI_COMMAND: command },
      stdio: ['pipe', 'pipe', 'inherit'],
      maxBuffer: 16 << 20,
    });
    const spawnError = run.error as NodeJS.ErrnoException | undefined;
    if (spawnError?.code === 'ETXTBSY' && attempt < 5) {
      sleepSync(1000);
      continue;
    }
    if (spawnError) {
      throw new CniError(
        CniCode.internal,
        `failed to run plugin ${path}`,
        `${spawnError.message}; check that it is an executable for this machine`,
        { cause: spawnError },
      );
    }
    const stdout = run.stdout.toString('utf8').trim();
    if (run.status !== 0) throw delegateError(path, stdout, run.status, run.signal);
    if (stdout === '') return {};
    let result: unknown;
    try {
      result = JSON.parse(stdout);
    } catch (err) {
      throw new CniError(
        CniCode.decodingFailure,
        `plugin ${path} succeeded but its result is not JSON`,
        `${(err as Error).message}: ${stdout.slice(0, 200)}`,
      );
    }
    if (typeof result !== 'object' || result === null || Array.isArray(result)) {
      throw new CniError(
        CniCode.decodingFailure,
        `plugin ${path} succeeded but its result is not a JSON object`,
        stdout.slice(0, 200),
      );
    }
    return { result: result as Record<string, unknown> };
  }
}

function delegateError(
  path: string,
  stdout: string,
  status: number | null,
  signal: NodeJS.Signals | null,
): CniError {
  const how = signal ? `killed by ${signal}` : `exit status ${status}`;
  if (stdout === '') {
    return new CniError(CniCode.internal, `netplugin ${path} failed with no error message: ${how}`);
  }
  try {
    const e = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (typeof e.code === 'number' && typeof e.msg === 'string') {
      return new CniError(e.code, e.msg, typeof e.details === 'string' ? e.details : '');
    }
  } catch {}
  return new CniError(
    CniCode.internal,
    `netplugin ${path} failed but error parsing its diagnostic message ${JSON.stringify(stdout.slice(0, 200))}`,
    how,
  );
}
