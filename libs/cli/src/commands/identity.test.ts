import { mkdtemp, readFile, rm, stat, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromSeed } from "@nats-io/nkeys";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../router.js";
import { recordingIo } from "../test-io.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "unibus-cli-id-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Every secret field of an identity file, to check output never contains one. */
async function secretsOf(path: string): Promise<string[]> {
  const file = JSON.parse(await readFile(path, "utf8")) as Record<string, string>;
  const secrets = [file.signingSeed, file.agreementSecretKey].filter((s): s is string => typeof s === "string");
  expect(secrets).toHaveLength(2);
  return secrets;
}

describe("unibus identity create", () => {
  it("writes a 0600 identity file and prints its principal, and no secret", async () => {
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "create", "--out", "me.id", "--label", "alice laptop"], io)).toBe(0);
    const path = join(dir, "me.id");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const file = JSON.parse(await readFile(path, "utf8")) as { principal: string; label: string };
    expect(io.stdout.join("\n")).toContain(file.principal);
    expect(file.principal).toMatch(/^U[A-Z2-7]{55}$/);
    expect(file.label).toBe("alice laptop");
    for (const secret of await secretsOf(path)) expect(io.all()).not.toContain(secret);
  });

  it("defaults to $UNIBUS_IDENTITY, else ./unibus.id", async () => {
    expect(await runCli(["identity", "create"], recordingIo({ cwd: dir }))).toBe(0);
    await stat(join(dir, "unibus.id"));
    expect(await runCli(["identity", "create"], recordingIo({ cwd: dir, env: { UNIBUS_IDENTITY: "sub/x.id" } }))).toBe(0);
    await stat(join(dir, "sub", "x.id"));
  });

  it("refuses to overwrite an existing file without --force and leaves it unchanged", async () => {
    expect(await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }))).toBe(0);
    const before = await readFile(join(dir, "me.id"), "utf8");
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "create", "--out", "me.id"], io)).toBe(1);
    expect(io.stderr.join("\n")).toMatch(/refusing to overwrite[\s\S]*--force/);
    expect(io.all()).not.toMatch(/\n\s+at /); // no stack trace
    expect(await readFile(join(dir, "me.id"), "utf8")).toBe(before);
  });

  it("replaces the file with --force", async () => {
    expect(await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }))).toBe(0);
    const before = await readFile(join(dir, "me.id"), "utf8");
    expect(await runCli(["identity", "create", "--out", "me.id", "--force"], recordingIo({ cwd: dir }))).toBe(0);
    expect(await readFile(join(dir, "me.id"), "utf8")).not.toBe(before);
  });
});

describe("unibus identity show", () => {
  it("prints the public keys, label and path, and never a secret", async () => {
    await runCli(["identity", "create", "--out", "me.id", "--label", "bob"], recordingIo({ cwd: dir }));
    const path = join(dir, "me.id");
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "show", "me.id"], io)).toBe(0);
    const file = JSON.parse(await readFile(path, "utf8")) as { principal: string; signingPublicKey: string };
    const text = io.stdout.join("\n");
    expect(text).toContain(file.principal);
    expect(text).toContain(file.signingPublicKey);
    expect(text).toContain("bob");
    for (const secret of await secretsOf(path)) expect(io.all()).not.toContain(secret);
  });

  it("--json prints the public identity as JSON with no secret fields", async () => {
    await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }));
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "show", "--json", "me.id"], io)).toBe(0);
    const shown = JSON.parse(io.stdout.join("\n")) as Record<string, unknown>;
    expect(Object.keys(shown).sort()).toEqual(["agreementPublicKey", "createdAt", "file", "principal", "signingPublicKey"]);
    for (const secret of await secretsOf(join(dir, "me.id"))) expect(io.all()).not.toContain(secret);
  });

  it("a missing file fails with exit 1, a hint and no stack trace", async () => {
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "show", "nope.id"], io)).toBe(1);
    expect(io.stderr.join("\n")).toMatch(/identity file not found: .*nope\.id[\s\S]*identity create/);
    expect(io.all()).not.toMatch(/\n\s+at /);
  });

  it("a file readable by others is refused with a chmod hint", async () => {
    await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }));
    await chmod(join(dir, "me.id"), 0o644);
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "show", "me.id"], io)).toBe(1);
    expect(io.stderr.join("\n")).toContain("chmod 600");
  });

  it("a corrupt file fails with exit 1", async () => {
    await writeFile(join(dir, "bad.id"), "{not json", { mode: 0o600 });
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "show", "bad.id"], io)).toBe(1);
    expect(io.stderr.join("\n")).toContain("corrupt");
  });
});

describe("unibus identity export-nkey", () => {
  it("writes the signing seed as a 0600 nkey user seed file that @nats-io/nkeys reads as this principal, and never prints it", async () => {
    await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }));
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "export-nkey", "--out", "me.nk", "me.id"], io)).toBe(0);
    const path = join(dir, "me.nk");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const seed = (await readFile(path, "utf8")).trim();
    expect(seed).toMatch(/^SU[A-Z2-7]{56}$/);
    const file = JSON.parse(await readFile(join(dir, "me.id"), "utf8")) as { principal: string };
    const kp = fromSeed(new TextEncoder().encode(seed));
    expect(kp.getPublicKey()).toBe(file.principal);
    expect(io.all()).not.toContain(seed);
    for (const secret of await secretsOf(join(dir, "me.id"))) expect(io.all()).not.toContain(secret);
    expect(io.stdout.join("\n")).toContain(`--inbox-prefix _INBOX.${file.principal}`);
  });

  it("refuses to overwrite an existing file and leaves it unchanged", async () => {
    await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }));
    await writeFile(join(dir, "taken"), "keep me", { mode: 0o600 });
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "export-nkey", "--out", "taken", "me.id"], io)).toBe(1);
    expect(io.stderr.join("\n")).toContain("refusing to overwrite");
    expect(await readFile(join(dir, "taken"), "utf8")).toBe("keep me");
  });

  it("needs --out (exit 2) and writes nothing", async () => {
    await runCli(["identity", "create", "--out", "me.id"], recordingIo({ cwd: dir }));
    const io = recordingIo({ cwd: dir, env: { UNIBUS_IDENTITY: "me.id" } });
    expect(await runCli(["identity", "export-nkey"], io)).toBe(2);
    expect(io.stderr.join("\n")).toContain("--out");
  });

  it("a missing identity file fails with exit 1 and creates no seed file", async () => {
    const io = recordingIo({ cwd: dir });
    expect(await runCli(["identity", "export-nkey", "--out", "x.nk", "nope.id"], io)).toBe(1);
    await expect(stat(join(dir, "x.nk"))).rejects.toThrow(/ENOENT/);
  });
});
