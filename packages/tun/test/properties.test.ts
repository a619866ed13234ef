import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createNetns, privileged, sweepNetns } from '@weft/testkit';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * Property tests over argument shapes for every native-backed function (test/fixtures/
 * properties.mjs): the addon's free functions and Handle constructor, sequences of Handle
 * methods on TUN, UDP and netlink handles, and the public API's open functions and methods.
 * Each group runs in a child process inside a namespace of its own, so a crash fails one test
 * and whatever a random call configures or sends stays in that namespace. A failure prints the
 * seed; WEFT_PROPERTY_SEED=<seed> replays it.
 */
const script = fileURLToPath(new URL('./fixtures/properties.mjs', import.meta.url));
const TAG = 'tunprop';
const seed = Number(process.env.WEFT_PROPERTY_SEED ?? Math.floor(Math.random() * 2 ** 31));

interface Outcome {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runGroup(netns: string, group: string, runs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(
      'ip',
      ['netns', 'exec', netns, process.execPath, script, group, String(seed), String(runs)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
    child.once('exit', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

describe.skipIf(!privileged('native property tests (each in its own namespace)'))(
  `native-backed functions take any arguments without crashing (seed ${seed})`,
  () => {
    afterAll(() => sweepNetns(TAG));

    for (const [group, runs] of [
      ['binding', 400],
      ['handles', 150],
      ['descriptors', 200],
      ['public', 100],
    ] as const) {
      it(group, { timeout: 120_000 }, async () => {
        const ns = createNetns(TAG);
        try {
          const out = await runGroup(ns.name, group, runs);
          expect({ signal: out.signal, stderr: out.stderr, status: out.status }).toEqual({
            signal: null,
            stderr: '',
            status: 0,
          });
          expect(JSON.parse(out.stdout)).toEqual({ group, seed, numRuns: runs, ok: true });
        } finally {
          ns.delete();
        }
      });
    }
  },
);
