import { defineConfig } from 'vitest/config';

// Browser tests need Debian's chromium (installed by .ci/run); `npm test` does not include them.
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
