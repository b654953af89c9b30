import { defineConfig } from "vitest/config";

// Tests that download from Debian's package archive (`npm run
// test:download`). Kept out of `npm test` so the everyday run never needs the
// network; .ci/run runs them once with UNIBUS_DOWNLOAD_TESTS=1. Without that
// variable this config refuses to run rather than silently skip.
if (process.env.UNIBUS_DOWNLOAD_TESTS !== "1") {
  throw new Error("the download tests fetch nats-server from Debian: set UNIBUS_DOWNLOAD_TESTS=1 to run them (npm run test:download does)");
}
const report = process.env.UNIBUS_TEST_REPORT;

export default defineConfig({
  test: {
    include: ["libs/**/*.download.test.ts"],
    exclude: ["**/node_modules/**"],
    pool: "forks",
    testTimeout: 300_000,
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
  },
});
