import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toHex } from "./encoding.js";
import type { IdentityFileErrorCode } from "./identity.js";
import { createIdentity, IdentityFileError, loadIdentityFile, publicIdentity, writeIdentityFile } from "./identity.js";
import { openSealed, sealTo } from "./sealed-box.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "unibus-identity-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function snapshot(path: string): Promise<{ bytes: string; mtimeMs: number; mode: number }> {
  const st = await stat(path);
  return { bytes: (await readFile(path)).toString("hex"), mtimeMs: st.mtimeMs, mode: st.mode };
}

async function expectCode(path: string, code: IdentityFileErrorCode): Promise<void> {
  const err: unknown = await loadIdentityFile(path).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(IdentityFileError);
  expect((err as IdentityFileError).code).toBe(code);
  expect((err as IdentityFileError).path).toBe(path);
}

describe("identity", () => {
  it("has independent Ed25519 and X25519 keys, and the principal is the signing key's U… nkey", () => {
    const id = createIdentity({ label: "alice laptop" });
    expect(id.principal).toBe(id.signingKey.principal);
    expect(id.principal).toMatch(/^U/);
    expect(id.agreementPublicKey).not.toEqual(id.signingKey.publicKey);
    expect(openSealed(id.agreementSecretKey, sealTo(id.agreementPublicKey, Uint8Array.of(7)))).toEqual(Uint8Array.of(7));
  });

  it("printing or serialising an identity never shows a secret", () => {
    const id = createIdentity();
    const printed = `${JSON.stringify(id)} ${JSON.stringify({ id })} ${inspect(id, { depth: 5 })}`;
    expect(printed).toContain(id.principal);
    expect(printed).not.toContain(toHex(id.agreementSecretKey));
    expect(printed).not.toContain(toHex(id.signingKey.seedBytes()));
    expect(printed).not.toContain(id.signingKey.nkeySeed());
    expect(publicIdentity(id)).toEqual({
      principal: id.principal,
      signingPublicKey: toHex(id.signingKey.publicKey),
      agreementPublicKey: toHex(id.agreementPublicKey),
      createdAt: id.createdAt,
    });
  });
});

describe("identity file", () => {
  it("is written with mode 0600 (in a new 0700 directory) and loads back the same identity", async () => {
    const path = join(dir, "nested", "identity.json");
    const id = createIdentity({ label: "ops" });
    await writeIdentityFile(path, id);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, "nested"))).mode & 0o777).toBe(0o700);
    const loaded = await loadIdentityFile(path);
    expect(publicIdentity(loaded)).toEqual(publicIdentity(id));
    expect(loaded.agreementSecretKey).toEqual(id.agreementSecretKey);
    expect(loaded.signingKey.seedBytes()).toEqual(id.signingKey.seedBytes());
    expect(await readdir(join(dir, "nested"))).toEqual(["identity.json"]);
  });

  it("refuses to overwrite an existing file (code exists) and leaves it untouched, unless overwrite is set", async () => {
    const path = join(dir, "identity.json");
    const first = createIdentity();
    await writeIdentityFile(path, first);
    const before = await snapshot(path);
    const err: unknown = await writeIdentityFile(path, createIdentity()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityFileError);
    expect((err as IdentityFileError).code).toBe("exists");
    expect(await snapshot(path)).toEqual(before);
    expect(await readdir(dir)).toEqual(["identity.json"]);

    const second = createIdentity();
    await writeIdentityFile(path, second, { overwrite: true });
    expect((await loadIdentityFile(path)).principal).toBe(second.principal);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["identity.json"]);
  });

  it("loading a missing file fails with code missing and creates nothing", async () => {
    const path = join(dir, "absent.json");
    await expectCode(path, "missing");
    expect(await readdir(dir)).toEqual([]);
  });

  it("loading a group/other-readable (0644) file fails with insecure-mode and leaves it untouched", async () => {
    const path = join(dir, "identity.json");
    await writeIdentityFile(path, createIdentity());
    await chmod(path, 0o644);
    const before = await snapshot(path);
    await expectCode(path, "insecure-mode");
    expect(await snapshot(path)).toEqual(before);
  });

  const corruptions: [string, (json: Record<string, unknown>, text: string) => string][] = [
    ["not JSON", (_j, text) => text.slice(0, 40)],
    ["empty", () => ""],
    ["a JSON array", () => "[]"],
    ["wrong kind", (j) => JSON.stringify({ ...j, kind: "something-else" })],
    ["no version", (j) => JSON.stringify({ ...j, version: undefined })],
    ["a missing secret", (j) => JSON.stringify({ ...j, agreementSecretKey: undefined })],
    ["a seed that is not hex", (j) => JSON.stringify({ ...j, signingSeed: "zz".repeat(32) })],
    ["a principal that does not match the seed", (j) => JSON.stringify({ ...j, principal: createIdentity().principal })],
    ["an agreement public key that does not match the secret", (j) => JSON.stringify({ ...j, agreementPublicKey: "00".repeat(32) })],
  ];
  for (const [what, mutate] of corruptions) {
    it(`loading a file with ${what} fails with corrupt and leaves it untouched`, async () => {
      const path = join(dir, "identity.json");
      await writeIdentityFile(path, createIdentity());
      const text = await readFile(path, "utf8");
      await writeFile(path, mutate(JSON.parse(text) as Record<string, unknown>, text), { mode: 0o600 });
      const before = await snapshot(path);
      await expectCode(path, "corrupt");
      expect(await snapshot(path)).toEqual(before);
    });
  }

  it("loading a file of an unknown version fails with unsupported-version and leaves it untouched", async () => {
    const path = join(dir, "identity.json");
    await writeIdentityFile(path, createIdentity());
    const json = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    await writeFile(path, JSON.stringify({ ...json, version: 2 }), { mode: 0o600 });
    const before = await snapshot(path);
    await expectCode(path, "unsupported-version");
    expect(await snapshot(path)).toEqual(before);
  });
});
