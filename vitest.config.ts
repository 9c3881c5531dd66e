import { configDefaults, defineConfig } from 'vitest/config';

// Browser tests need Debian's chromium and run with `npm run test:browser` (vitest.browser.config.ts).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [...configDefaults.exclude, 'test/browser/**'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
