import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
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
import { ExitCode, runCli } from "@unibus/cli";
import { recordingIo } from "@unibus/cli/test-io";

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
  // A record as membership writes it: blobs refuses anything else as damaged.
  const principal = identity.signingKey.principal;
  await members.put(`${ROOM}.${principal}`, JSON.stringify({ roomId: ROOM, principal, role: "owner", addedAt: new Date().toISOString(), addedBy: principal }));
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

    const get = recordingIo({ env: { ...env, UNIBUS_BLOB_KEY: result.key }, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, result.blobId, "--out", "out.bin"], get)).toBe(ExitCode.ok);
    expect((await readFile(join(dir, "out.bin"))).equals(data)).toBe(true);
    expect((await stat(join(dir, "out.bin"))).mode & 0o777).toBe(0o600);
  });

  it("connects with a comma-separated UNIBUS_URL when the first node is down (a cluster with one node stopped)", async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const deadPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await writeFile(join(dir, "multi.txt"), "two urls");
    const put = recordingIo({ env: { ...env, UNIBUS_URL: `nats://127.0.0.1:${deadPort},${server.url}` }, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "multi.txt", "--json"], put)).toBe(ExitCode.ok);
    expect(JSON.parse(put.stdout.join("\n"))).toMatchObject({ blobId: expect.stringMatching(/^[0-9a-f]{64}$/) });
  });

  it("put --key-file writes the key to a new 0600 file, not stdout; get --key-file and --key-stdin read it back", async () => {
    await writeFile(join(dir, "kf-in.txt"), "via key file");
    const put = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "kf-in.txt", "--key-file", "kf.key", "--json"], put)).toBe(ExitCode.ok);
    const { blobId } = JSON.parse(put.stdout.join("\n")) as { blobId: string };
    const key = (await readFile(join(dir, "kf.key"), "utf8")).trim();
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await stat(join(dir, "kf.key"))).mode & 0o777).toBe(0o600);
    expect(put.all()).not.toContain(key);

    const byFile = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, blobId, "--key-file", "kf.key", "--out", "kf-out1.txt"], byFile)).toBe(ExitCode.ok);
    expect(await readFile(join(dir, "kf-out1.txt"), "utf8")).toBe("via key file");

    async function* keyLine(): AsyncIterable<string> {
      yield key;
    }
    const byStdin = recordingIo({ env, cwd: dir, lines: keyLine() });
    expect(await runCli(["blob", "get", ROOM, blobId, "--key-stdin", "--out", "kf-out2.txt"], byStdin)).toBe(ExitCode.ok);
    expect(await readFile(join(dir, "kf-out2.txt"), "utf8")).toBe("via key file");
  });

  it("put --key-file refuses an existing file before uploading, and leaves it untouched", async () => {
    await writeFile(join(dir, "taken.key"), "someone else's key");
    await writeFile(join(dir, "taken-in.txt"), "data");
    const put = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "taken-in.txt", "--key-file", "taken.key"], put)).toBe(ExitCode.failure);
    expect(put.stderr.join("\n")).toMatch(/already exists: the key file must be new, nothing was uploaded/);
    expect(await readFile(join(dir, "taken.key"), "utf8")).toBe("someone else's key");
  });

  it("get --out refuses an existing file: it is left byte for byte, and no partial file is left", async () => {
    await writeFile(join(dir, "keep.txt"), "precious");
    await writeFile(join(dir, "keep-in.txt"), "newer");
    const put = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "keep-in.txt", "--json"], put)).toBe(ExitCode.ok);
    const { blobId, key } = JSON.parse(put.stdout.join("\n")) as { blobId: string; key: string };
    const get = recordingIo({ env: { ...env, UNIBUS_BLOB_KEY: key }, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, blobId, "--out", "keep.txt"], get)).toBe(ExitCode.failure);
    expect(get.stderr.join("\n")).toMatch(/keep\.txt already exists: refusing to overwrite it/);
    expect(await readFile(join(dir, "keep.txt"), "utf8")).toBe("precious");
    expect((await readdir(dir)).filter((f) => f.includes("keep.txt") && f.endsWith(".part"))).toEqual([]);
  });

  it("get refuses a malformed key from UNIBUS_BLOB_KEY as a usage error", async () => {
    const get = recordingIo({ env: { ...env, UNIBUS_BLOB_KEY: "short" }, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, "a".repeat(64), "--out", "short.out"], get)).toBe(ExitCode.usage);
    expect(get.stderr.join("\n")).toMatch(/the key must be the 32-byte base64url key/);
  });

  it("get refuses a key file others can read", async () => {
    await writeFile(join(dir, "loose.key"), `${Buffer.alloc(32, 2).toString("base64url")}\n`);
    await chmod(join(dir, "loose.key"), 0o644);
    const get = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, "a".repeat(64), "--key-file", "loose.key", "--out", "loose.out"], get)).toBe(ExitCode.failure);
    expect(get.stderr.join("\n")).toMatch(/readable by others \(mode 644\): chmod 600 it/);
    expect((await readdir(dir)).filter((f) => f.includes("loose.out"))).toEqual([]);
  });

  it("get with the wrong key fails (exit 1) and leaves no output file behind", async () => {
    await writeFile(join(dir, "small.bin"), "hello");
    const put = recordingIo({ env, cwd: dir });
    expect(await runCli(["blob", "put", ROOM, "small.bin", "--json"], put)).toBe(ExitCode.ok);
    const { blobId } = JSON.parse(put.stdout.join("\n")) as { blobId: string };
    const get = recordingIo({ env: { ...env, UNIBUS_BLOB_KEY: Buffer.alloc(32, 1).toString("base64url") }, cwd: dir });
    expect(await runCli(["blob", "get", ROOM, blobId, "--out", "bad.bin"], get)).toBe(ExitCode.failure);
    expect(get.stderr.join("\n")).toMatch(/blob rejected/);
    expect((await readdir(dir)).filter((f) => f.includes("bad.bin"))).toEqual([]);
  });

  it.each([
    [["blob", "put", "Bad Room", "x"], /not a room id/],
    [["blob", "get", ROOM, "nothex"], /not a blob id/],
    [["blob", "get", ROOM, "a".repeat(64), "--key-stdin"], /--out is required/],
    [["blob", "get", ROOM, "a".repeat(64), "--out", "o"], /the blob key is required: pass it with --key-file/],
    [["blob", "get", ROOM, "a".repeat(64), "--key", Buffer.alloc(32, 3).toString("base64url"), "--out", "o"], /--key on the command line is refused.*--key-file.*--key-stdin.*UNIBUS_BLOB_KEY/],
    [["blob", "get", ROOM, "a".repeat(64), "--key-file", "x", "--key-stdin", "--out", "o"], /either --key-file or --key-stdin/],
    [["blob", "get", ROOM, "a".repeat(64), "--key-stdin", "--out", "o"], /--key-stdin: no standard input/],
  ])("unibus %j is a usage error (exit 2)", async (argv, message) => {
    const rec = recordingIo({ env, cwd: dir });
    expect(await runCli(argv, rec)).toBe(ExitCode.usage);
    expect(rec.stderr.join("\n")).toMatch(message);
  });
});
