import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { resolveConnectionSettings, serverUrls } from "./connection.js";
import { runCli } from "./router.js";
import { recordingIo } from "./test-io.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "unibus-cli-conn-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeHomeEnv(root: string): Promise<void> {
  await mkdir(root, { recursive: true });
  await writeFile(join(root, "env"), "UNIBUS_URL=nats://127.0.0.1:4333\nUNIBUS_IDENTITY=/home/admin.id\n");
}

describe("serverUrls", () => {
  it("splits a comma-separated cluster list, trimming blanks", () => {
    expect(serverUrls("nats://a:4222")).toEqual(["nats://a:4222"]);
    expect(serverUrls(" nats://a:4222, nats://b:4223 ,,nats://c:4224 ")).toEqual(["nats://a:4222", "nats://b:4223", "nats://c:4224"]);
  });

  it("refuses a setting that names no server", () => {
    expect(() => serverUrls(" , ")).toThrow(/no server URL/);
  });
});

describe("which bus a command talks to", () => {
  it("flags win over the environment, which wins over the home env file", async () => {
    await writeHomeEnv(join(dir, ".unibus"));
    const io = recordingIo({ cwd: dir, env: { UNIBUS_URL: "nats://env:1", UNIBUS_IDENTITY: "env.id" } });
    expect(await resolveConnectionSettings({ server: "nats://flag:2" }, io)).toMatchObject({ server: "nats://flag:2", identityPath: join(dir, "env.id") });
    expect(await resolveConnectionSettings({}, io)).toMatchObject({ server: "nats://env:1" });
  });

  it("with nothing set, reads <UNIBUS_HOME or ./.unibus>/env written by unibus up", async () => {
    await writeHomeEnv(join(dir, ".unibus"));
    expect(await resolveConnectionSettings({}, recordingIo({ cwd: dir }))).toMatchObject({ server: "nats://127.0.0.1:4333", identityPath: "/home/admin.id" });
    await writeHomeEnv(join(dir, "elsewhere"));
    expect(await resolveConnectionSettings({}, recordingIo({ cwd: dir, env: { UNIBUS_HOME: "elsewhere" } }))).toMatchObject({ server: "nats://127.0.0.1:4333" });
  });

  it("with no bus configured anywhere, says how to start one (exit 1)", async () => {
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["micro", "ls"], io)).toBe(1);
    expect(io.stderr.join("\n")).toContain("npx unibus up");
  });

  it("an unreachable server is a one-line failure with exit 1, no stack trace", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const a = s.address();
        s.close(() => resolve(typeof a === "object" && a ? a.port : 1));
      });
    });
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["micro", "ping", "--server", `nats://127.0.0.1:${port}`], io)).toBe(1);
    expect(io.stderr.join("\n")).toMatch(/cannot reach the bus at nats:\/\/127\.0\.0\.1:\d+/);
    expect(io.all()).not.toMatch(/\n\s+at /);
  });

  it("a missing identity file is reported before connecting", async () => {
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["micro", "ls", "--server", "nats://127.0.0.1:1", "--identity", "gone.id"], io)).toBe(1);
    expect(io.stderr.join("\n")).toContain("identity file not found");
  });
});
