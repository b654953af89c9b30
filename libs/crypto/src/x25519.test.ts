import { x25519 } from "@noble/curves/ed25519.js";
import { describe, expect, it } from "vitest";
import { randomBytes } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { agreementPublicKey, generateAgreementKeyPair, x25519SharedSecret } from "./x25519.js";

describe("X25519", () => {
  it("node:crypto is byte-identical to @noble/curves for random keys", () => {
    for (let i = 0; i < 50; i++) {
      const a = randomBytes(32);
      const b = generateAgreementKeyPair();
      expect(agreementPublicKey(a)).toEqual(x25519.getPublicKey(a));
      expect(b.publicKey).toEqual(x25519.getPublicKey(b.secretKey));
      expect(x25519SharedSecret(a, b.publicKey)).toEqual(x25519.getSharedSecret(a, b.publicKey));
      expect(x25519SharedSecret(b.secretKey, agreementPublicKey(a))).toEqual(x25519SharedSecret(a, b.publicKey));
    }
  });

  it("a reused secret-key buffer with new contents never uses the stale cached key", () => {
    const buf = randomBytes(32);
    const first = agreementPublicKey(buf);
    buf.set(randomBytes(32));
    expect(agreementPublicKey(buf)).not.toEqual(first);
    expect(agreementPublicKey(buf)).toEqual(x25519.getPublicKey(buf));
  });

  it("refuses low-order peer keys (all-zero shared secret) and wrong sizes", () => {
    const sk = randomBytes(32);
    expect(() => x25519SharedSecret(sk, new Uint8Array(32))).toThrow(InvalidKeyError);
    const one = new Uint8Array(32);
    one[0] = 1;
    expect(() => x25519SharedSecret(sk, one)).toThrow(InvalidKeyError);
    expect(() => x25519SharedSecret(sk, new Uint8Array(31))).toThrow(InvalidKeyError);
    expect(() => agreementPublicKey(new Uint8Array(16))).toThrow(InvalidKeyError);
  });
});
