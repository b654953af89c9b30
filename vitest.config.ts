import { defineConfig } from "vitest/config";

// One run covers unit tests (beside the code) and integration tests (real
// nats-server processes started by @unibus/testing). The container suite has
// its own config (vitest.containers.config.ts) because it needs Docker, and so
// do the tests that download from Debian (vitest.download.config.ts) and the
// minutes-long chaos suite (vitest.chaos.config.ts).
const report = process.env.UNIBUS_TEST_REPORT;

export default defineConfig({
  test: {
    include: ["{contracts,libs,services,test,bench}/**/*.test.ts"],
    exclude: ["**/node_modules/**", "test/containers/**", "test/chaos/**", "**/*.download.test.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
  },
});
