import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { defineConfig } from "vitest/config";

// One run covers unit tests (beside the code) and integration tests (real
// nats-server processes started by @unibus/testing). The container suite has
// its own config (vitest.containers.config.ts) because it needs Docker, and so
// do the tests that download from Debian (vitest.download.config.ts) and the
// minutes-long chaos suite (vitest.chaos.config.ts) and the admin panel's
// tests in headless Chromium (vitest.browser.config.ts).
const report = process.env.UNIBUS_TEST_REPORT;

const ROOTS = ["contracts", "libs", "services", "test", "bench"];
const EXCLUDED = /(^|\/)node_modules\/|^test\/(containers|chaos|browser)\/|\.download\.test\.ts$/;
/**
 * What makes a test an integration test: it starts a nats-server (or a whole
 * bus) or another process. Everything else is a unit test, fast and
 * self-contained: `npm run test:unit` runs only those.
 */
const NEEDS_PROCESSES = /@unibus\/(testing|testbus|natsd)|startMaintenanceServer|node:child_process|bus-with-services|startTestServer|startTestBus|startTestCluster|startNatsServer|findNatsServer|spawn|new Supervisor\(/;

function testFiles(): string[] {
  return ROOTS.flatMap((root) =>
    readdirSync(root, { recursive: true, encoding: "utf8" })
      .map((f) => join(root, f))
      .filter((f) => f.endsWith(".test.ts") && !EXCLUDED.test(f)),
  );
}
const unit = testFiles().filter((f) => !NEEDS_PROCESSES.test(readFileSync(f, "utf8")));

export default defineConfig({
  test: {
    exclude: ["**/node_modules/**", "test/containers/**", "test/chaos/**", "test/browser/**", "**/*.download.test.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
    projects: [
      { extends: true, test: { name: "unit", include: unit } },
      { extends: true, test: { name: "integration", include: ["{contracts,libs,services,test,bench}/**/*.test.ts"], exclude: [...unit, "**/node_modules/**", "test/containers/**", "test/chaos/**", "test/browser/**", "**/*.download.test.ts"] } },
    ],
  },
});
