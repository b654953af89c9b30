import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { embeddedBundle } from "./bundle.js";
import { EMBEDDED_SERVICES_ENV, REPO_ROOT, embeddedEntryPoint } from "./services.js";

const run = promisify(execFile);
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "unibus-bundle-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the bundle with plain node (no loader); resolves with its exit code and stderr. */
async function runBundle(path: string, services: string): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [path], { env: { PATH: process.env["PATH"], [EMBEDDED_SERVICES_ENV]: services }, timeout: 30_000 });
    return { code: 0, stderr: "" };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

describe("the embedded services bundle", () => {
  it("is built once, reused while its sources are unchanged, and rebuilt when one changes", { timeout: 60_000 }, async () => {
    // A scratch entry, so the test never touches a file of the repository.
    const entry = join(dir, "entry.ts");
    await writeFile(entry, `import { ServiceName } from ${JSON.stringify(join(REPO_ROOT, "contracts", "src", "index.ts"))};\nconsole.log(ServiceName.healthz);\n`);
    const out = join(dir, "out");
    await mkdir(out);
    const first = await embeddedBundle(entry, out, REPO_ROOT);
    expect(first.built).toBe(true);
    const second = await embeddedBundle(entry, out, REPO_ROOT);
    expect(second).toMatchObject({ path: first.path, built: false });
    // An input newer than the bundle forces a rebuild.
    const later = new Date(Date.now() + 2_000);
    await utimes(entry, later, later);
    expect((await embeddedBundle(entry, out, REPO_ROOT)).built).toBe(true);
    const { stdout } = await run(process.execPath, [first.path]);
    expect(stdout.trim()).toBe("healthz");
  });

  it("runs under plain node and refuses a service list it cannot read, naming the variable (exit 2)", { timeout: 60_000 }, async () => {
    const { path } = await embeddedBundle(embeddedEntryPoint(), dir, REPO_ROOT);
    for (const bad of ["not json", "[]", JSON.stringify({ nope: {} }), JSON.stringify({ healthz: { UNIBUS_URL: 1 } })]) {
      const r = await runBundle(path, bad);
      expect([r.code, r.stderr]).toEqual([2, expect.stringContaining(EMBEDDED_SERVICES_ENV)]);
    }
  });
});
