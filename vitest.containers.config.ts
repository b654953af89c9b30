import { defineConfig } from "vitest/config";

// The container suite (npm run test:containers): the compose stacks (single
// node and the 3-node cluster) in real
// Docker, driven by testcontainers. Needs a Docker engine and the local images
// (deploy/scripts/docker-engine.sh, deploy/scripts/build-images.sh; .ci/containers
// runs both). Ryuk cannot be pulled here, so the suite stops its own containers.
const report = process.env.UNIBUS_TEST_REPORT;
process.env.TESTCONTAINERS_RYUK_DISABLED ??= "true";

export default defineConfig({
  test: {
    include: ["test/containers/**/*.test.ts"],
    exclude: ["**/node_modules/**"],
    pool: "forks",
    // One stack at a time: the suites share the engine and 2 cores.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
  },
});
