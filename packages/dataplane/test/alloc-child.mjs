// Drives every hot path for `packets` packets and prints, per path, the young-generation bytes
// it allocated and what its counters show. Run by zero-alloc.test.ts on the built package, as a
// program that imports it would run it (plain ESM, no test-runner module wrappers).
import { hotPaths } from '@weft/dataplane/testing';
import { youngGenerationBytes } from '@weft/testkit';

const packets = Number(process.argv[2] ?? 1_000_000);
const only = process.argv[3];
const results = [];
for (const { name, make } of hotPaths()) {
  if (only !== undefined && name !== only) continue;
  const path = make();
  try {
    const steps = Math.ceil(packets / path.perStep);
    // Warm up until the loop is optimized (the contract is the steady state): rounds until one
    // allocates next to nothing, as unoptimized code boxes every number it computes. On a busy
    // machine the optimizing compiler, on its own thread, may take a while.
    const round = Math.ceil(64_000 / path.perStep);
    for (let r = 1; r <= 60; r++) {
      const bytes = youngGenerationBytes(() => {
        for (let s = 0; s < round; s++) path.step();
      });
      if (r >= 2 && bytes < round * path.perStep * 0.05) break;
    }
    const before = path.backend.counters();
    const bytes = youngGenerationBytes(() => {
      for (let s = 0; s < steps; s++) path.step();
    });
    const after = path.backend.counters();
    const drops = Object.values(after.drops).reduce((a, b) => a + b, 0);
    results.push({
      name,
      packets: steps * path.perStep,
      moved: after[path.counter] - before[path.counter],
      drops,
      bytes,
    });
  } finally {
    path.backend.close();
  }
}
process.stdout.write(`${JSON.stringify(results)}\n`);
