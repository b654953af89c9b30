import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ESLint, Linter } from "eslint";
import { describe, expect, it } from "vitest";

// The layer rules are only worth something if lint really fails on a bad
// import: each case lints a fixture string as if it were a file of that
// package, under the repository's own eslint.config.js.
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const LAYER_RULES = ["import-x/no-restricted-paths", "import-x/no-relative-packages"] as const;
const eslint = new ESLint({ cwd: ROOT });

/** Rule ids of the layer errors `code` gets as the file `path` (relative to the repository root). */
async function layerErrors(path: string, code: string): Promise<string[]> {
  const filename = join(ROOT, path);
  const config = (await eslint.calculateConfigForFile(filename)) as Linter.Config;
  const rules = Object.fromEntries(LAYER_RULES.map((id) => [id, config.rules?.[id]]));
  for (const id of LAYER_RULES) expect(rules[id], `${id} for ${path}`).toBeDefined();
  // The layer rules need no type information: lint with the repository's
  // plugin, resolver and rule options, without the (slow) project service.
  const linter = new Linter({ cwd: ROOT, configType: "flat" });
  const messages = linter.verify(
    code,
    [{ files: ["**/*.ts"], languageOptions: { parser: config.languageOptions?.parser }, plugins: config.plugins, settings: config.settings, rules }],
    { filename },
  );
  expect(messages.filter((m) => m.fatal === true)).toEqual([]);
  return messages.filter((m) => m.severity === 2).map((m) => m.ruleId ?? "");
}

describe("lint enforces the layers", () => {
  it("a lib importing a service fails, by package name or by path", async () => {
    expect(await layerErrors("libs/cli/src/fixture.ts", `import { MembershipBucket } from "@unibus/membership";\nexport const b = MembershipBucket;\n`)).toEqual(["import-x/no-restricted-paths"]);
    expect(await layerErrors("libs/kit/src/fixture.ts", `import { KeysBucket } from "../../../services/keys/src/store/records.js";\nexport const b = KeysBucket;\n`)).toEqual(
      expect.arrayContaining(["import-x/no-restricted-paths", "import-x/no-relative-packages"]),
    );
  });

  it("a lib importing the test bus fails", async () => {
    expect(await layerErrors("libs/sdk/src/fixture.test.ts", `import { startTestBus } from "@unibus/testbus";\nexport const s = startTestBus;\n`)).toEqual(["import-x/no-restricted-paths"]);
  });

  it("a service importing another service fails, in its tests too", async () => {
    expect(await layerErrors("services/keys/src/fixture.ts", `import { createMembershipService } from "@unibus/membership";\nexport const c = createMembershipService;\n`)).toEqual([
      "import-x/no-restricted-paths",
    ]);
    expect(await layerErrors("services/membership/tests/fixture.test.ts", `import { startTestBus } from "@unibus/testbus";\nexport const s = startTestBus;\n`)).toEqual([
      "import-x/no-restricted-paths",
    ]);
  });

  it("contracts import nothing of the bus", async () => {
    expect(await layerErrors("contracts/src/fixture.ts", `import { retry } from "@unibus/kit";\nexport const r = retry;\n`)).toEqual(["import-x/no-restricted-paths"]);
  });

  it("a test reaching into another package's files fails; its entry points pass", async () => {
    expect(await layerErrors("test/e2e/fixture.test.ts", `import { recordingIo } from "../../libs/cli/src/test-io.js";\nexport const r = recordingIo;\n`)).toEqual(["import-x/no-relative-packages"]);
    expect(await layerErrors("test/e2e/fixture.test.ts", `import { recordingIo } from "@unibus/cli/test-io";\nimport { createKeysService } from "@unibus/keys";\nexport const r = [recordingIo, createKeysService];\n`)).toEqual([]);
  });

  it("a service using contracts, libs and its own files passes", async () => {
    const code = `import { StoredBucket } from "@unibus/contracts";\nimport { retry } from "@unibus/kit";\nimport { KeysBucket } from "./records.js";\nexport const x = [StoredBucket, retry, KeysBucket];\n`;
    expect(await layerErrors("services/keys/src/fixture.ts", code)).toEqual([]);
  });
});
