import { defineConfig } from 'vitest/config';

// Tests run against each package's TypeScript source, not its build output: every workspace
// package's exports map has a `weft-src` condition. Node tests resolve on the server (SSR) side,
// whose conditions replace Vite's defaults unless they are kept.
const conditions = ['weft-src', 'module', 'node', 'development|production'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    include: [
      'packages/*/test/**/*.test.ts',
      'bench/test/**/*.test.ts',
      'examples/test/**/*.test.ts',
      'test/**/*.test.ts',
    ],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
