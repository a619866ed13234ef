import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests run against each package's TypeScript source, not its build output.
    conditions: ['weft-src'],
  },
  test: {
    include: [
      'packages/*/test/**/*.test.ts',
      'bench/test/**/*.test.ts',
      'examples/test/**/*.test.ts',
    ],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    globalSetup: [],
  },
});
