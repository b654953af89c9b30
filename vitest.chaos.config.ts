import { defineConfig } from "vitest/config";

// The chaos suite (npm run test:chaos): a real 3-node cluster (TLS routes
// through proxies the test cuts) killed, paused and partitioned under load.
// Kept out of `npm test` because it runs for minutes; .ci/run runs it as its
// own step. One file at a time: the scenarios time recovery on 2 shared cores.
const report = process.env.UNIBUS_TEST_REPORT;

export default defineConfig({
  test: {
    // UNIBUS_CHAOS_SUITE=failover (npm run test:chaos:failover) runs only the
    // `unibus check --cluster --chaos` failover, e.g. to loop it.
    include: [process.env.UNIBUS_CHAOS_SUITE === "failover" ? "test/chaos/**/*.failover.test.ts" : "test/chaos/**/*.test.ts"],
    pool: "forks",
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
  },
});
