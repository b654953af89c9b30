import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { createBlobsService } from "@unibus/blobs";
import type { RunningService } from "@unibus/kit";
import { createIdentity, writeIdentityFile } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { ExitCode } from "../errors.js";
import { runCli } from "../router.js";
import { recordingIo } from "../test-io.js";

const ROOM = "clirooms01";
let server: TestServer;
let running: RunningService;
let dir: string;
let env: Record<string, string>;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  const nc = await server.connect();
  dir = await mkdtemp(join(tmpdir(), "unibus-blob-cli-"));
  const identity = createIdentity();
  await writeIdentityFile(join(dir, "id.json"), identity);
  const members = await new Kvm(jetstream(nc)).create("members");
  await members.put(`${ROOM}.${identity.signingKey.principal}`, "{}");
  running = await createBlobsService(nc, { logger: pino({ level: "silent" }), maxBlobBytes: 256 * 1024 });
  env = { UNIBUS_URL: server.url, UNIBUS_IDENTITY: join(dir, "id.json") };
});

afterAll(async () => {
  await running?.stop();
  await server?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe("unibus blob", () => {
  it("put prints the blob id and key on stdout (--json), and get with that key writes the same bytes", async () => {
    const data = Buffer.alloc(150 * 1024, "cli-blob-");
    await writeFile(join(dir, "in.bin"), data);
    const put = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "in.bin", "--json"], put)).toBe(ExitCode.ok);
    const result = JSON.parse(put.stdout.join("\n")) as { blobId: string; key: string };
    expect(result.blobId).toMatch(/^[0-9a-f]{64}$/);
    // The key is secret: stdout only, never stderr.
    expect(put.stderr.join("\n")).not.toContain(result.key);

    const get = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, result.blobId, "--key", result.key, "--out", "out.bin"], get)).toBe(ExitCode.ok);
    expect((await readFile(join(dir, "out.bin"))).equals(data)).toBe(true);
  });

  it("get with the wrong key fails (exit 1) and leaves no output file behind", async () => {
    await writeFile(join(dir, "small.bin"), "hello");
    const put = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "small.bin", "--json"], put)).toBe(ExitCode.ok);
    const { blobId } = JSON.parse(put.stdout.join("\n")) as { blobId: string };
    const get = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, blobId, "--key", Buffer.alloc(32, 1).toString("base64url"), "--out", "bad.bin"], get)).toBe(ExitCode.failure);
    expect(get.stderr.join("\n")).toMatch(/blob rejected/);
    expect((await readdir(dir)).filter((f) => f.includes("bad.bin"))).toEqual([]);
  });

  it.each([
    [["blob", "put", "Bad Room", "x"], /not a room id/],
    [["blob", "get", ROOM, "nothex"], /not a blob id/],
    [["blob", "get", ROOM, "a".repeat(64), "--key", "k"], /--out is required/],
    [["blob", "get", ROOM, "a".repeat(64), "--key", "short", "--out", "o"], /--key must be/],
  ])("unibus %j is a usage error (exit 2)", async (argv, message) => {
    const rec = recordingIo({ env, cwd: dir });
    expect(await runCli(argv, rec)).toBe(ExitCode.usage);
    expect(rec.stderr.join("\n")).toMatch(message);
  });
});
