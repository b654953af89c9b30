import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createIdentity, writeIdentityFile } from "@unibus/crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdentityLoadError, parseIdentityText } from "./identity.js";

describe("parseIdentityText (the panel's file picker)", () => {
  let dir: string;
  let text: string;
  const identity = createIdentity({ label: "admin" });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "panel-id-"));
    await writeIdentityFile(join(dir, "admin.id"), identity);
    text = await readFile(join(dir, "admin.id"), "utf8");
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("reads the file unibus writes, as the same principal", () => {
    const key = parseIdentityText(text);
    expect(key.principal).toBe(identity.signingKey.principal);
    expect(key.sign(new Uint8Array([1]))).toEqual(identity.signingKey.sign(new Uint8Array([1])));
  });

  it("refuses a file whose principal or public key does not match its seed", () => {
    const other = createIdentity().signingKey.principal;
    const file = JSON.parse(text) as Record<string, string>;
    expect(() => parseIdentityText(JSON.stringify({ ...file, principal: other }))).toThrow(/does not match/);
    expect(() => parseIdentityText(JSON.stringify({ ...file, signingPublicKey: "00".repeat(32) }))).toThrow(/does not match/);
  });

  it("refuses what is not an identity file with a readable reason", () => {
    const file = JSON.parse(text) as Record<string, unknown>;
    const cases: [string, RegExp][] = [
      ["not json", /not JSON/],
      ["[]", /not a unibus identity/],
      [JSON.stringify({ ...file, kind: "other" }), /not a unibus identity/],
      [JSON.stringify({ ...file, version: 2 }), /version 2/],
      [JSON.stringify({ ...file, signingSeed: "zz" }), /corrupt/],
      ["x".repeat(70_000), /too large/],
    ];
    for (const [input, reason] of cases) {
      expect(() => parseIdentityText(input)).toThrow(IdentityLoadError);
      expect(() => parseIdentityText(input)).toThrow(reason);
    }
  });
});
