import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NatsServerNotFoundError } from "./errors.js";
import { PINNED_NATS_SERVER, chooseDebianVersion, debianMirrorFromSources, findNatsServer, findRepoRoot, parseMadison } from "./provision.js";

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
    const bin = await fakeServer(join(scratch, "env"), "2.15.1");
    const found = await findNatsServer({ env: { NATS_SERVER_BIN: bin, PATH: "" }, toolsDir: join(scratch, "none") });
    expect(found).toEqual({ bin, version: "2.15.1", source: "env" });
  });

  it("refuses a $NATS_SERVER_BIN that is too old instead of silently running another binary", async () => {
    // 2.10.27 is Debian trixie's: it has the JetStream data-loss defects 2.15 fixed.
    const bin = await fakeServer(join(scratch, "env-old"), "2.10.27");
    await expect(findNatsServer({ env: { NATS_SERVER_BIN: bin }, toolsDir: join(scratch, "none") })).rejects.toThrow(
      /NATS_SERVER_BIN: nats-server 2\.10\.27 .* is too old \(need >= 2\.15\.0\)/,
    );
  });

  it("skips a too-old nats-server on PATH and takes a newer one later on PATH", async () => {
    const old = join(scratch, "path-old");
    const fresh = join(scratch, "path-new");
    await fakeServer(old, "2.14.9");
    const bin = await fakeServer(fresh, "2.15.0");
    const found = await findNatsServer({ env: { PATH: `${old}:${fresh}` }, toolsDir: join(scratch, "none") });
    expect(found).toEqual({ bin, version: "2.15.0", source: "path" });
  });

  it("does not use a cached binary older than the minimum (e.g. an earlier trixie download)", async () => {
    const toolsDir = join(scratch, "tools-old");
    await fakeServer(join(toolsDir, "bin"), "2.10.27");
    const err = await findNatsServer({ env: { PATH: join(scratch, "empty") }, toolsDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NatsServerNotFoundError);
    expect((err as Error).message).toMatch(/tools dir: nats-server 2\.10\.27 .* is too old/);
  });

  it("uses the binary cached in the tools dir when PATH has none", async () => {
    const toolsDir = join(scratch, "tools");
    const bin = await fakeServer(join(toolsDir, "bin"), "2.15.1");
    const found = await findNatsServer({ env: { PATH: join(scratch, "empty") }, toolsDir });
    expect(found).toEqual({ bin, version: "2.15.1", source: "tools" });
  });

  it("when every step fails, says what to do and what each step found", async () => {
    const old = join(scratch, "only-old");
    await fakeServer(old, "2.10.27");
    // PATH without apt-get: the Debian download step cannot run.
    const err = await findNatsServer({ env: { PATH: old }, toolsDir: join(scratch, "tools-empty") }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NatsServerNotFoundError);
    const message = (err as Error).message;
    expect(message).toContain("install nats-server >= 2.15.0");
    expect(message).toContain("NATS_SERVER_BIN");
    expect(message).toMatch(/PATH: nats-server 2\.10\.27 .* is too old/);
    expect(message).toMatch(/tools dir: no cached binary/);
    expect(message).toMatch(/download: apt-get\/apt-cache\/dpkg-deb not found/);
  });

  it("returns the same promise to repeated callers in one process", async () => {
    const bin = await fakeServer(join(scratch, "memo"), "2.15.1");
    const opts = { env: { NATS_SERVER_BIN: bin }, toolsDir: join(scratch, "none") };
    expect(findNatsServer(opts)).toBe(findNatsServer(opts));
  });
});

describe("parseMadison", () => {
  it("lists the package versions of `apt-cache madison nats-server`, ignoring source lines and noise", () => {
    const text = [
      "nats-server |   2.15.2-1 | http://mirror.example/debian forky/main amd64 Packages",
      "nats-server |   2.15.1-1 | http://mirror.example/debian forky/main amd64 Packages",
      "nats-server |   2.15.1-1 | http://mirror.example/debian forky/main Sources",
      "W: something apt warns about",
    ].join("\n");
    expect(parseMadison(text)).toEqual(["2.15.2-1", "2.15.1-1"]);
  });
});

describe("chooseDebianVersion", () => {
  it("takes the pinned version when the archive still has it, even next to a newer one", () => {
    expect(PINNED_NATS_SERVER.debVersion).toBe("2.15.1-1");
    expect(chooseDebianVersion(["2.15.3-1", "2.15.1-1"])).toEqual({ debVersion: "2.15.1-1", pinned: true });
  });

  it("falls back to the newest version >= the minimum, marked unpinned, when the pinned one is gone", () => {
    expect(chooseDebianVersion(["2.15.2-1", "2.16.0-1", "2.15.10-2"])).toEqual({ debVersion: "2.16.0-1", pinned: false });
  });

  it("fails naming what to do when the archive has nothing >= the minimum", () => {
    const r = chooseDebianVersion(["2.10.27-1"]);
    expect(r).toEqual({ problem: expect.stringContaining("has only 2.10.27-1") });
    expect("problem" in r && r.problem).toMatch(/set NATS_SERVER_BIN to a nats-server >= 2\.15\.0, or put one on PATH/);
    expect(chooseDebianVersion([])).toEqual({ problem: expect.stringContaining("has no nats-server package") });
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
