import { describe, expect, it } from "vitest";
import { randomBytes } from "./encoding.js";
import { DecryptError, InvalidKeyError } from "./errors.js";
import { openSealed, SealedBox, sealTo } from "./sealed-box.js";
import { generateAgreementKeyPair } from "./x25519.js";

describe("sealed box", () => {
  const recipient = generateAgreementKeyPair();

  it("the recipient opens what was sealed to it; each box uses a fresh ephemeral key", () => {
    const pt = randomBytes(32);
    const a = sealTo(recipient.publicKey, pt);
    const b = sealTo(recipient.publicKey, pt);
    expect(a.byteLength).toBe(pt.byteLength + SealedBox.overhead);
    expect(a).not.toEqual(b);
    expect(openSealed(recipient.secretKey, a)).toEqual(pt);
    expect(openSealed(recipient.secretKey, b)).toEqual(pt);
    expect(openSealed(recipient.secretKey, sealTo(recipient.publicKey, new Uint8Array(0)))).toEqual(new Uint8Array(0));
  });

  it("any tampered byte, truncation, unknown version or wrong recipient is a DecryptError", () => {
    const sealed = sealTo(recipient.publicKey, randomBytes(64));
    for (let i = 0; i < sealed.byteLength; i++) {
      const t = sealed.slice();
      t[i] = (t[i] ?? 0) ^ 0x80;
      expect(() => openSealed(recipient.secretKey, t)).toThrow(DecryptError);
    }
    expect(() => openSealed(recipient.secretKey, sealed.subarray(0, sealed.byteLength - 1))).toThrow(DecryptError);
    expect(() => openSealed(recipient.secretKey, sealed.subarray(0, 10))).toThrow(DecryptError);
    expect(() => openSealed(generateAgreementKeyPair().secretKey, sealed)).toThrow(DecryptError);
    const lowOrder = sealed.slice();
    lowOrder.fill(0, 1, 33);
    expect(() => openSealed(recipient.secretKey, lowOrder)).toThrow(DecryptError);
  });

  it("sealing to a low-order or malformed recipient key throws InvalidKeyError", () => {
    expect(() => sealTo(new Uint8Array(32), randomBytes(4))).toThrow(InvalidKeyError);
    expect(() => sealTo(new Uint8Array(31), randomBytes(4))).toThrow(InvalidKeyError);
  });
});
