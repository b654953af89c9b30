import { defineConfig } from "vitest/config";

// The admin panel in a real browser (`npm run test:browser`): Debian's
// headless Chromium driven by playwright-core against a real `unibus up`.
// Kept out of `npm test` because it needs the chromium package and a built
// panel (`npm run panel:build`); .ci/run installs and builds both first.
const report = process.env.UNIBUS_TEST_REPORT;

export default defineConfig({
  test: {
    include: ["test/browser/**/*.test.ts"],
    exclude: ["**/node_modules/**"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
  },
});
