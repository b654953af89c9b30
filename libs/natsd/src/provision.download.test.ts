// Downloads from Debian's package archive (reachable on every machine of this
// kind): run only through vitest.download.config.ts (`npm run
// test:download`), which .ci/run runs once, so plain `npm test` never touches
// the network.
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PINNED_NATS_SERVER, findNatsServer } from "./provision.js";

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "natsd-download-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("findNatsServer on a fresh machine (downloads)", () => {
  it("downloads Debian forky's pinned nats-server into an empty tools dir and checks its checksum", async () => {
    // No env, nothing on PATH but the system tools, empty tools dir: the fresh-clone path.
    const toolsDir = join(scratch, "fresh-tools");
    const systemPath = (process.env.PATH ?? "").split(":").filter((d) => !d.includes(".tools")).join(":");
    const logs: string[] = [];
    const found = await findNatsServer({ env: { PATH: systemPath }, toolsDir, log: (m) => logs.push(m) });
    expect(found).toEqual({ bin: join(toolsDir, "bin", "nats-server"), version: "2.15.1", source: "download" });
    expect(logs.join("\n")).not.toMatch(/WARNING/);
    const sha = createHash("sha256").update(await readFile(found.bin)).digest("hex");
    expect(sha).toBe(PINNED_NATS_SERVER.binSha256.amd64);
  }, 300_000);
});
