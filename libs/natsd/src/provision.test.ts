import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NatsServerNotFoundError } from "./errors.js";
import { debianMirrorFromSources, findNatsServer, findRepoRoot } from "./provision.js";

let scratch: string;

async function fakeServer(dir: string, version: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const bin = join(dir, "nats-server");
  await writeFile(bin, `#!/bin/sh\necho "nats-server: v${version}"\n`);
  await chmod(bin, 0o755);
  return bin;
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "natsd-provision-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("findNatsServer", () => {
  it("uses $NATS_SERVER_BIN first", async () => {
    const bin = await fakeServer(join(scratch, "env"), "2.10.27");
    const found = await findNatsServer({ env: { NATS_SERVER_BIN: bin, PATH: "" }, toolsDir: join(scratch, "none") });
    expect(found).toEqual({ bin, version: "2.10.27", source: "env" });
  });

  it("refuses a $NATS_SERVER_BIN that is too old instead of silently running another binary", async () => {
    const bin = await fakeServer(join(scratch, "env-old"), "2.9.10");
    await expect(findNatsServer({ env: { NATS_SERVER_BIN: bin }, toolsDir: join(scratch, "none") })).rejects.toThrow(
      /NATS_SERVER_BIN: nats-server 2\.9\.10 .* is too old/,
    );
  });

  it("skips a too-old nats-server on PATH and takes a newer one later on PATH", async () => {
    const old = join(scratch, "path-old");
    const fresh = join(scratch, "path-new");
    await fakeServer(old, "2.9.10");
    const bin = await fakeServer(fresh, "2.11.1");
    const found = await findNatsServer({ env: { PATH: `${old}:${fresh}` }, toolsDir: join(scratch, "none") });
    expect(found).toEqual({ bin, version: "2.11.1", source: "path" });
  });

  it("uses the binary cached in the tools dir when PATH has none", async () => {
    const toolsDir = join(scratch, "tools");
    const bin = await fakeServer(join(toolsDir, "bin"), "2.10.27");
    const found = await findNatsServer({ env: { PATH: join(scratch, "empty") }, toolsDir });
    expect(found).toEqual({ bin, version: "2.10.27", source: "tools" });
  });

  it("when every step fails, says what to do and what each step found", async () => {
    const old = join(scratch, "only-old");
    await fakeServer(old, "2.9.10");
    // PATH without apt-get: the Debian download step cannot run.
    const err = await findNatsServer({ env: { PATH: old }, toolsDir: join(scratch, "tools-empty") }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NatsServerNotFoundError);
    const message = (err as Error).message;
    expect(message).toContain("install nats-server >= 2.10");
    expect(message).toContain("NATS_SERVER_BIN");
    expect(message).toMatch(/PATH: nats-server 2\.9\.10 .* is too old/);
    expect(message).toMatch(/tools dir: no cached binary/);
    expect(message).toMatch(/download: apt-get\/dpkg-deb not found/);
  });

  // Needs Debian's package archive (reachable on every machine of this kind)
  // and takes a few seconds. Proves the fresh-machine path: no env, nothing on
  // PATH, empty tools dir.
  it(
    "downloads Debian trixie's nats-server into an empty tools dir",
    async () => {
      const toolsDir = join(scratch, "fresh-tools");
      const systemPath = (process.env.PATH ?? "").split(":").filter((d) => !d.includes(".tools")).join(":");
      const found = await findNatsServer({ env: { PATH: systemPath }, toolsDir });
      expect(found.source).toBe("download");
      expect(found.bin).toBe(join(toolsDir, "bin", "nats-server"));
      expect(found.version).toMatch(/^2\.(1\d|[2-9]\d)\./);
    },
    300_000,
  );

  it("returns the same promise to repeated callers in one process", async () => {
    const bin = await fakeServer(join(scratch, "memo"), "2.10.27");
    const opts = { env: { NATS_SERVER_BIN: bin }, toolsDir: join(scratch, "none") };
    expect(findNatsServer(opts)).toBe(findNatsServer(opts));
  });
});

describe("debianMirrorFromSources", () => {
  it("takes the main mirror and keyring from a deb822 sources file, not the security one", () => {
    const text = [
      "Types: deb",
      "URIs: http://mirror.example/debian",
      "Suites: bookworm bookworm-updates",
      "Components: main",
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
      "",
      "Types: deb",
      "URIs: http://mirror.example/debian-security",
      "Suites: bookworm-security",
    ].join("\n");
    expect(debianMirrorFromSources(text)).toEqual({
      mirror: "http://mirror.example/debian",
      keyring: "/usr/share/keyrings/debian-archive-keyring.gpg",
    });
  });
});

describe("findRepoRoot", () => {
  it("finds the workspace root above this package", () => {
    const root = findRepoRoot();
    expect(root).toBeDefined();
    expect(import.meta.dirname.startsWith(root ?? "?")).toBe(true);
  });
});
