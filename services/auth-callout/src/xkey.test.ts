import { describe, expect, it } from "vitest";
import { createCurve, fromCurveSeed } from "@nats-io/nkeys";
import { InvalidRequestError } from "./errors.js";
import type { SecretBox } from "./xkey.js";
import { CalloutXkey, jsSecretBox, nativeSecretBox } from "./xkey.js";

const text = (b: Uint8Array): string => Buffer.from(b).toString("utf8");
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

// Every case runs over each box implementation present, against nkeys' own.
const boxes: SecretBox[] = [jsSecretBox, ...(nativeSecretBox !== undefined ? [nativeSecretBox] : [])];

describe("the native box", () => {
  it("loads where the repo's prebuilds cover the platform (linux x64 here)", () => {
    // Where it should load and does not, logins silently fall back to the ~10x slower JS box.
    if (process.platform === "linux" && process.arch === "x64") expect(nativeSecretBox?.name).toBe("native");
    expect(CalloutXkey.generate().boxImplementation).toBe(nativeSecretBox?.name ?? "js");
  });

  it("seals byte for byte what the JS box seals, and each opens the other's", () => {
    if (nativeSecretBox === undefined) return;
    const key = new Uint8Array(32).map((_, i) => i);
    const nonce = new Uint8Array(24).map((_, i) => 100 + i);
    const msg = bytes("x".repeat(1000));
    const a = jsSecretBox.seal(key, nonce, msg);
    const b = nativeSecretBox.seal(key, nonce, msg);
    expect(Buffer.from(b).equals(Buffer.from(a))).toBe(true);
    expect(text(nativeSecretBox.open(key, nonce, a) as Uint8Array)).toBe(text(msg));
    expect(text(jsSecretBox.open(key, nonce, b) as Uint8Array)).toBe(text(msg));
    expect(nativeSecretBox.open(key, nonce, b.subarray(0, 10))).toBeUndefined();
  });
});

describe.each(boxes.map((box) => [box.name, box] as const))("CalloutXkey (%s box)", (_name, box) => {
  it("opens what @nats-io/nkeys seals to it", () => {
    const ours = CalloutXkey.generate(box);
    const server = createCurve();
    const sealed = server.seal(bytes("eyJ0 request"), ours.publicKey);
    expect(text(ours.open(sealed, server.getPublicKey()))).toBe("eyJ0 request");
  });

  it("seals what @nats-io/nkeys opens", () => {
    const ours = CalloutXkey.generate(box);
    const server = createCurve();
    const sealed = ours.seal(bytes("response"), server.getPublicKey());
    const opened = server.open(sealed, ours.publicKey);
    expect(opened).not.toBeNull();
    expect(text(opened as Uint8Array)).toBe("response");
  });

  it("round-trips its seed through the nkeys curve seed format", () => {
    const ours = CalloutXkey.generate(box);
    const theirs = fromCurveSeed(bytes(ours.seed()));
    expect(theirs.getPublicKey()).toBe(ours.publicKey);
    expect(CalloutXkey.fromSeed(new TextDecoder().decode(createCurve().getSeed()), box).publicKey).toMatch(/^X/);
  });

  it("refuses a message sealed by a different sender", () => {
    const ours = CalloutXkey.generate(box);
    const sealed = createCurve().seal(bytes("x"), ours.publicKey);
    expect(() => ours.open(sealed, createCurve().getPublicKey())).toThrow(InvalidRequestError);
  });

  it("refuses a tampered ciphertext and a wrong version tag", () => {
    const ours = CalloutXkey.generate(box);
    const server = createCurve();
    const sealed = server.seal(bytes("hello world"), ours.publicKey);
    const flipped = Uint8Array.from(sealed);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    expect(() => ours.open(flipped, server.getPublicKey())).toThrow(InvalidRequestError);
    const badTag = Uint8Array.from(sealed);
    badTag[0] = 0;
    expect(() => ours.open(badTag, server.getPublicKey())).toThrow(/xkv1/);
  });

  it("refuses a non-curve seed", () => {
    expect(() => CalloutXkey.fromSeed("SUAM5ZJSBJ2TW6X6HDSE5KNN5Y4KN5H7XP2Y3TLRVPGZUQMXBK3GIL5WYQ")).toThrow();
  });
});
