import { describe, expect, it } from "vitest";
import { createAccount, createCurve } from "@nats-io/nkeys";
import { curvePublicKey, newCurveSeed } from "./curve-nkey.js";
import { InvalidKeyError } from "./errors.js";

const text = new TextDecoder();

describe("curve nkeys", () => {
  it("derives the same X… key as nats-io/nkeys from its seed", () => {
    const kp = createCurve();
    expect(curvePublicKey(text.decode(kp.getSeed()))).toBe(kp.getPublicKey());
  });

  it("a fresh seed is an SX… seed whose public key is an X… key", () => {
    const seed = newCurveSeed();
    expect(seed.startsWith("SX")).toBe(true);
    expect(curvePublicKey(seed)).toMatch(/^X[A-Z2-7]{55}$/);
    expect(newCurveSeed()).not.toBe(seed);
  });

  it("refuses a seed of another kind and a damaged seed", () => {
    expect(() => curvePublicKey(text.decode(createAccount().getSeed()))).toThrow(InvalidKeyError);
    expect(() => curvePublicKey("SXnot-a-seed")).toThrow(InvalidKeyError);
  });
});
