import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { hotPaths } from '../src/testing.js';

/*
 * The hot path's contract: no allocation per packet in the steady state. Every path (both
 * backends and the TAP bridge, both directions, offloads on and off, underlay and overlay
 * addresses below and above 128.0.0.0, where a number >= 2^31 is boxed wherever it meets a Map or
 * crosses a call V8 did not inline) is driven for a million packets over stand-in I/O, and V8's
 * young generation must grow by less than one byte per packet. The driver runs each path in a
 * child process on the built package (`pnpm build` first, as `pnpm test` does): inlining, and so
 * boxing, is as a program importing @weft/dataplane sees it, without the test runner's module
 * wrappers. A window of a million packets that allocates is measured once more, with V8's heap
 * sampler on: an allocation per packet shows in both and fails, naming where it happens; a one-off
 * (a deoptimization and its recovery on a busy machine) in one. (The same holds with V8's inlining turned off, `node --no-turbo-inlining
 * test/alloc-child.mjs`: nothing on the hot path relies on it to stay unboxed.)
 */

const PACKETS = 1_000_000;
const CHILD = fileURLToPath(new URL('./alloc-child.mjs', import.meta.url));

interface Result {
  name: string;
  packets: number;
  moved: number;
  drops: number;
  /** The fewer of the windows' bytes (a second window runs only when the first allocated). */
  bytes: number;
  windows: number[];
  /** Where the second window allocated, when there was one. */
  sites?: { bytes: number; stack: string[] }[];
}

const run = promisify(execFile);

/**
 * Each path in a process of its own, as a node agent runs one backend: paths sharing a process
 * make the pump's methods polymorphic, and a deoptimization in the middle of one path's
 * measurement is the test's own doing. Two at a time.
 */
async function measureAll(names: string[]): Promise<Map<string, Result>> {
  const out = new Map<string, Result>();
  const queue = [...names];
  const worker = async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const { stdout } = await run(process.execPath, [CHILD, String(PACKETS), name], {
        cwd: fileURLToPath(new URL('..', import.meta.url)),
        maxBuffer: 1 << 20,
        timeout: 120_000,
      });
      for (const r of JSON.parse(stdout) as Result[]) out.set(r.name, r);
    }
  };
  await Promise.all([worker(), worker()]);
  return out;
}

const results = measureAll(hotPaths().map((p) => p.name));
// Settled here, asserted per path below.
results.catch(() => {});

describe('the hot path allocates nothing per packet (young-generation bytes per packet < 1)', () => {
  for (const { name } of hotPaths()) {
    it(name, { timeout: 120_000 }, async () => {
      const r = (await results).get(name);
      expect(r, `the driver ran ${name}`).toBeDefined();
      if (!r) return;
      expect(r.packets).toBeGreaterThanOrEqual(PACKETS);
      // Every packet went through (a path that drops allocates nothing and proves nothing).
      expect(r.moved).toBe(r.packets);
      expect(r.drops).toBe(0);
      const where = r.sites
        ? ` (windows: ${r.windows.join(', ')} bytes; ${JSON.stringify(r.sites)})`
        : '';
      expect(r.bytes / r.packets, `young-generation bytes per packet${where}`).toBeLessThan(1);
    });
  }
});
