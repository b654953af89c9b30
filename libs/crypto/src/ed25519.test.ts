import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";
import { createCurve, createUser, fromSeed } from "@nats-io/nkeys";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { SigningKey, verifySignature } from "./ed25519.js";
import { randomBytes, utf8 } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";

ed.hashes.sha512 = sha512;

describe("SigningKey", () => {
  it("signs byte-identically to @noble/ed25519 for random seeds and messages", () => {
    for (let i = 0; i < 50; i++) {
      const seed = randomBytes(32);
      const msg = randomBytes(i * 37);
      const key = SigningKey.fromSeed(seed);
      expect(key.publicKey).toEqual(ed.getPublicKey(seed));
      const sig = key.sign(msg);
      expect(sig).toEqual(ed.sign(msg, seed));
      expect(ed.verify(sig, msg, key.publicKey)).toBe(true);
    }
  });

  it("round-trips an nkey seed created by @nats-io/nkeys and keeps its kind", () => {
    const kp = createUser();
    const seed = new TextDecoder().decode(kp.getSeed());
    const key = SigningKey.fromNkeySeed(seed);
    expect(key.principal).toBe(kp.getPublicKey());
    expect(key.nkeySeed()).toBe(seed);
    const data = utf8("nonce");
    expect(key.sign(data)).toEqual(kp.sign(data));
  });

  it("a generated key is a user key whose seed string @nats-io/nkeys accepts", () => {
    const key = SigningKey.generate();
    expect(key.principal).toMatch(/^U[A-Z2-7]{55}$/);
    expect(key.nkeySeed()).toMatch(/^SU/);
    expect(fromSeed(new TextEncoder().encode(key.nkeySeed())).getPublicKey()).toBe(key.principal);
    expect(key.nkeyPublic("A")).toMatch(/^A/);
    expect(key.nkeyPublic()).toBe(key.principal);
  });

  it("rejects wrong-length seeds, corrupt nkey seeds and curve (SX…) seeds", () => {
    expect(() => SigningKey.fromSeed(new Uint8Array(31))).toThrow(InvalidKeyError);
    const seed = SigningKey.generate().nkeySeed();
    const flipped = seed.slice(0, 10) + (seed[10] === "A" ? "B" : "A") + seed.slice(11);
    expect(() => SigningKey.fromNkeySeed(flipped)).toThrow(InvalidKeyError);
    expect(() => SigningKey.fromNkeySeed("not a seed")).toThrow(InvalidKeyError);
    const curveSeed = new TextDecoder().decode(createCurve().getSeed());
    expect(curveSeed).toMatch(/^SX/);
    expect(() => SigningKey.fromNkeySeed(curveSeed)).toThrow(/not an Ed25519 key/);
  });

  it("seedBytes returns a copy, and logging or serialising the key shows only the principal", () => {
    const seed = randomBytes(32);
    const key = SigningKey.fromSeed(seed);
    const copy = key.seedBytes();
    expect(copy).toEqual(seed);
    copy.fill(0);
    expect(key.seedBytes()).toEqual(seed);
    const printed = `${JSON.stringify({ key })} ${inspect(key)}`;
    expect(printed).toContain(key.principal);
    expect(printed).not.toContain(key.nkeySeed());
    expect(printed).not.toContain(Buffer.from(seed).toString("hex"));
  });
});

describe("verifySignature", () => {
  const key = SigningKey.generate();
  const msg = utf8("hello");
  const sig = key.sign(msg);

  it("accepts a valid signature, including one made by @noble/ed25519", () => {
    expect(verifySignature(key.publicKey, msg, sig)).toBe(true);
    const seed = randomBytes(32);
    expect(verifySignature(ed.getPublicKey(seed), msg, ed.sign(msg, seed))).toBe(true);
  });

  it("returns false, never throws, on a wrong key, message, signature or malformed input", () => {
    expect(verifySignature(SigningKey.generate().publicKey, msg, sig)).toBe(false);
    expect(verifySignature(key.publicKey, utf8("hellp"), sig)).toBe(false);
    const bad = sig.slice();
    bad[5] = (bad[5] ?? 0) ^ 1;
    expect(verifySignature(key.publicKey, msg, bad)).toBe(false);
    expect(verifySignature(key.publicKey.subarray(1), msg, sig)).toBe(false);
    expect(verifySignature(key.publicKey, msg, sig.subarray(1))).toBe(false);
    expect(verifySignature(new Uint8Array(32).fill(0xff), msg, sig)).toBe(false);
    expect(verifySignature("x" as unknown as Uint8Array, msg, sig)).toBe(false);
    expect(verifySignature(key.publicKey, null as unknown as Uint8Array, sig)).toBe(false);
  });

  it("keeps working after more distinct keys than its cache holds", () => {
    const keys = Array.from({ length: 5000 }, () => randomBytes(32));
    for (const k of keys) verifySignature(k, msg, sig);
    expect(verifySignature(key.publicKey, msg, sig)).toBe(true);
  });
});
