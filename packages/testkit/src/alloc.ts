import { GCProfiler, getHeapSpaceStatistics } from 'node:v8';

/** V8's young generation: where short-lived objects (a boxed number, a view) are allocated. */
const YOUNG = ['new_space', 'new_large_object_space'];

function youngUsed(spaces: { space_name: string; space_used_size: number }[]): number {
  let bytes = 0;
  for (const s of spaces) if (YOUNG.includes(s.space_name)) bytes += s.space_used_size;
  return bytes;
}

interface ProfiledSpace {
  spaceName: string;
  spaceUsedSize: number;
}

function youngUsedProfiled(spaces: ProfiledSpace[]): number {
  let bytes = 0;
  for (const s of spaces) if (YOUNG.includes(s.spaceName)) bytes += s.spaceUsedSize;
  return bytes;
}

/**
 * Bytes allocated in the young generation while `run` runs: the growth of new space, plus what
 * every garbage collection during the run took out of it (v8.GCProfiler reports each one's
 * before and after), so a scavenge in the middle does not hide what was allocated before it.
 */
export function youngGenerationBytes(run: () => void): number {
  const profiler = new GCProfiler();
  profiler.start();
  const start = youngUsed(getHeapSpaceStatistics());
  run();
  const end = youngUsed(getHeapSpaceStatistics());
  const report = profiler.stop() as {
    statistics: {
      beforeGC: { heapSpaceStatistics: ProfiledSpace[] };
      afterGC: { heapSpaceStatistics: ProfiledSpace[] };
    }[];
  };
  let collected = 0;
  for (const gc of report.statistics)
    collected +=
      youngUsedProfiled(gc.beforeGC.heapSpaceStatistics) -
      youngUsedProfiled(gc.afterGC.heapSpaceStatistics);
  return end - start + collected;
}
