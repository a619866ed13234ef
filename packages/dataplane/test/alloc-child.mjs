// Drives every hot path (or the one named) for `packets` packets and prints, per path, the
// young-generation bytes it allocated and what its counters show. Run by zero-alloc.test.ts on
// the built package, as a program that imports it would run it (plain ESM, no test-runner module
// wrappers).
import { Session } from 'node:inspector/promises';
import { hotPaths } from '@weft/dataplane/testing';
import { youngGenerationBytes } from '@weft/testkit';

const packets = Number(process.argv[2] ?? 1_000_000);
const only = process.argv[3];

/** Where the young generation was allocated during `run`: the heaviest stacks, from V8's sampler. */
async function allocationSites(run) {
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 64,
    includeObjectsCollectedByMinorGC: true,
    includeObjectsCollectedByMajorGC: true,
  });
  run();
  const { profile } = await session.post('HeapProfiler.stopSampling');
  session.disconnect();
  const sites = [];
  const walk = (node, stack) => {
    const f = node.callFrame;
    const here = [
      ...stack,
      `${f.functionName || '(anonymous)'} ${f.url.split('/').pop()}:${f.lineNumber + 1}`,
    ];
    if (node.selfSize > 0) sites.push({ bytes: node.selfSize, stack: here.slice(-6).reverse() });
    for (const c of node.children) walk(c, here);
  };
  walk(profile.head, []);
  return sites.sort((a, b) => b.bytes - a.bytes).slice(0, 5);
}

const results = [];
for (const { name, make } of hotPaths()) {
  if (only !== undefined && name !== only) continue;
  const path = make();
  try {
    const steps = Math.ceil(packets / path.perStep);
    // Warm up until the loop is optimized (the contract is the steady state): at least 500 batches,
    // then until three rounds in a row allocate next to nothing, as unoptimized code boxes every
    // number it computes. On a busy machine the optimizing compiler, on its own thread, may take
    // a while.
    const round = Math.max(50, Math.ceil(64_000 / path.perStep));
    let clean = 0;
    let warm = 0;
    for (let r = 1; r <= 100 && (warm < 500 || clean < 3); r++) {
      const bytes = youngGenerationBytes(() => {
        for (let s = 0; s < round; s++) path.step();
      });
      warm += round;
      clean = bytes < round * path.perStep * 0.05 ? clean + 1 : 0;
    }
    const before = path.backend.counters();
    const drive = () => {
      for (let s = 0; s < steps; s++) path.step();
    };
    // A window, and if it allocated, a second with V8's sampler on to say where: a per-packet
    // allocation shows in both; a one-off (a deoptimization and its recovery on a busy machine)
    // in one.
    const windows = [youngGenerationBytes(drive)];
    let sites;
    if (windows[0] >= steps * path.perStep) {
      let second = 0;
      sites = await allocationSites(() => {
        second = youngGenerationBytes(drive);
      });
      windows.push(second);
    }
    const after = path.backend.counters();
    const drops = Object.values(after.drops).reduce((a, b) => a + b, 0);
    results.push({
      name,
      packets: steps * path.perStep,
      moved: (after[path.counter] - before[path.counter]) / windows.length,
      drops,
      bytes: Math.min(...windows),
      windows,
      sites,
    });
  } finally {
    path.backend.close();
  }
}
process.stdout.write(`${JSON.stringify(results)}\n`);
