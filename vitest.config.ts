import { defineConfig } from 'vitest/config';

// Tests run against each package's TypeScript source, not its build output: every workspace
// package's exports map has a `weft-src` condition. Node tests resolve on the SSR side.
const conditions = ['weft-src', 'node', 'import', 'default'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: [
      'packages/*/test/**/*.test.ts',
      'bench/test/**/*.test.ts',
      'examples/test/**/*.test.ts',
    ],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
