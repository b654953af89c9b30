import { describe, expect, it } from "vitest";
import { createCurve, fromCurveSeed } from "@nats-io/nkeys";
import { InvalidRequestError } from "./errors.js";
import { CalloutXkey } from "./xkey.js";

const text = (b: Uint8Array): string => Buffer.from(b).toString("utf8");
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("CalloutXkey", () => {
  it("opens what @nats-io/nkeys seals to it", () => {
    const ours = CalloutXkey.generate();
    const server = createCurve();
    const sealed = server.seal(bytes("eyJ0 request"), ours.publicKey);
    expect(text(ours.open(sealed, server.getPublicKey()))).toBe("eyJ0 request");
  });

  it("seals what @nats-io/nkeys opens", () => {
    const ours = CalloutXkey.generate();
    const server = createCurve();
    const sealed = ours.seal(bytes("response"), server.getPublicKey());
    const opened = server.open(sealed, ours.publicKey);
    expect(opened).not.toBeNull();
    expect(text(opened as Uint8Array)).toBe("response");
  });

  it("round-trips its seed through the nkeys curve seed format", () => {
    const ours = CalloutXkey.generate();
    const theirs = fromCurveSeed(bytes(ours.seed()));
    expect(theirs.getPublicKey()).toBe(ours.publicKey);
    expect(CalloutXkey.fromSeed(new TextDecoder().decode(createCurve().getSeed())).publicKey).toMatch(/^X/);
  });

  it("refuses a message sealed by a different sender", () => {
    const ours = CalloutXkey.generate();
    const sealed = createCurve().seal(bytes("x"), ours.publicKey);
    expect(() => ours.open(sealed, createCurve().getPublicKey())).toThrow(InvalidRequestError);
  });

  it("refuses a tampered ciphertext and a wrong version tag", () => {
    const ours = CalloutXkey.generate();
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
