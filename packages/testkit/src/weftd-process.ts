import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';

/** The weftd of this workspace (built by `pnpm build`); WEFT_WEFTD_CLI runs another build (an older one, to show a test fails there). */
export const WEFTD_CLI =
  process.env.WEFT_WEFTD_CLI ?? fileURLToPath(new URL('../../agent/dist/main.js', import.meta.url));

/** A weftd running inside a node namespace; its JSON log lines are kept. */
export interface RunningWeftd {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  stderr(): string;
  /** Resolves with the first log line whose msg matches. */
  waitForLog(msg: string | RegExp, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM, and wait for the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<number | null>;
}

export function startWeftd(
  ns: Netns,
  args: string[],
  options: { env?: Record<string, string> } = {},
): RunningWeftd {
  const child = ns.spawn(
    [process.execPath, WEFTD_CLI, ...args],
    options.env ? { env: { ...process.env, ...options.env } } : {},
  );
  const logs: Record<string, unknown>[] = [];
  let err = '';
  let partial = '';
  const waiters: {
    test: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line);
      } catch {
        continue;
      }
      logs.push(entry);
      for (const w of [...waiters]) {
        if (w.test(entry)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(entry);
        }
      }
    }
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  return {
    child,
    logs,
    stderr: () => err,
    exited,
    waitForLog(msg, timeoutMs = 30_000) {
      const test = (l: Record<string, unknown>) =>
        typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg));
      const found = logs.find(test);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () =>
            reject(
              new Error(
                `weftd in ${ns.name} logged no "${msg}" within ${timeoutMs} ms; stderr: ${err}; last logs: ${JSON.stringify(logs.slice(-5))}`,
              ),
            ),
          timeoutMs,
        );
        waiters.push({
          test,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
        void exited.then((code) => {
          clearTimeout(t);
          reject(new Error(`weftd in ${ns.name} exited (${code}) before "${msg}": ${err}`));
        });
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return exited;
    },
  };
}
