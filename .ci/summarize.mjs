// Sums vitest JSON reports into the one line CI reads: "N passed, N failed".
// A suite that should have run but left no report counts as one failure, so a
// crashed runner can never look green.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
let passed = 0;
let failed = 0;
const files = readdirSync(dir).filter((f) => f.endsWith(".json"));
if (files.length === 0) failed += 1;
for (const file of files) {
  try {
    const report = JSON.parse(readFileSync(join(dir, file), "utf8"));
    passed += report.numPassedTests ?? 0;
    failed += (report.numFailedTests ?? 0) + (report.numRuntimeErrorTests ?? 0);
    const pending = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
    if (pending > 0) {
      console.log(`${file}: ${pending} skipped or todo tests count as failures`);
      failed += pending;
    }
    if (report.success === false && (report.numFailedTests ?? 0) === 0) {
      console.log(`${file}: the runner reported failure outside any test (e.g. a suite failed to load)`);
      failed += 1;
    }
    console.log(`${file}: ${report.numPassedTests} passed, ${report.numFailedTests} failed`);
  } catch (err) {
    console.log(`${file}: unreadable report (${err.message})`);
    failed += 1;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
