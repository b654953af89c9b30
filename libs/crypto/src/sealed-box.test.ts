import { afterAll, describe, expect, it } from "vitest";
import { fromHex, randomBytes } from "./encoding.js";
import { DecryptError, InvalidKeyError } from "./errors.js";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { openSealed, SealedBox, sealTo, sealToMany, useNativeSealingForTests } from "./sealed-box.js";
import { generateAgreementKeyPair } from "./x25519.js";

describe("sealed box", () => {
  const recipient = generateAgreementKeyPair();

  afterAll(() => {
    useNativeSealingForTests(true);
  });

  // libsodium where sodium-native loads (it does in this repository's installs), node:crypto everywhere else.
  for (const native of [true, false]) {
    const path = native ? "libsodium" : "node:crypto";
    it(`sealToMany (${path}): one ephemeral per call, every recipient opens its own box only, boxes and keys differ`, () => {
      expect(useNativeSealingForTests(native)).toBe(native);
      const people = Array.from({ length: 5 }, () => generateAgreementKeyPair());
      const pt = randomBytes(32);
      const boxes = sealToMany(people.map((p) => p.publicKey), pt);
      expect(boxes).toHaveLength(5);
      const epks = new Set(boxes.map((b) => Buffer.from(b!.subarray(1, SealedBox.headerLength)).toString("hex")));
      expect(epks.size).toBe(1);
      expect(new Set(boxes.map((b) => Buffer.from(b!.subarray(SealedBox.headerLength)).toString("hex"))).size).toBe(5);
      people.forEach((p, i) => {
        expect(boxes[i]!.byteLength).toBe(pt.byteLength + SealedBox.overhead);
        expect(openSealed(p.secretKey, boxes[i]!)).toEqual(pt);
        expect(() => openSealed(people[(i + 1) % 5]!.secretKey, boxes[i]!)).toThrow(DecryptError);
      });
      // A box moved to another recipient's slot with its epk kept still fails (rpk is in the KDF).
      const again = sealToMany([people[0]!.publicKey], pt);
      expect(again[0]!.subarray(1, SealedBox.headerLength)).not.toEqual(boxes[0]!.subarray(1, SealedBox.headerLength));
    });

    it(`sealToMany (${path}): a low-order or malformed key gets null, the others still get their box; equal keys get equal boxes`, () => {
      expect(useNativeSealingForTests(native)).toBe(native);
      const a = generateAgreementKeyPair();
      const lowOrder = new Uint8Array(32);
      // A point of order 8: every agreement with it is all zeros.
      const order8 = fromHex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
      const boxes = sealToMany([a.publicKey, lowOrder, new Uint8Array(31), a.publicKey, order8], randomBytes(32));
      expect(boxes[1]).toBeNull();
      expect(boxes[2]).toBeNull();
      expect(boxes[4]).toBeNull();
      expect(boxes[0]).toEqual(boxes[3]);
      expect(openSealed(a.secretKey, boxes[0]!)).toHaveLength(32);
      expect(sealToMany([], randomBytes(32))).toEqual([]);
    });

    it(`sealToMany (${path}) output opens with the noble reference too (epk shared, per-recipient shared secret)`, () => {
      expect(useNativeSealingForTests(native)).toBe(native);
      const people = Array.from({ length: 3 }, () => generateAgreementKeyPair());
      const pt = randomBytes(32);
      const boxes = sealToMany(people.map((p) => p.publicKey), pt);
      people.forEach((p, i) => {
        const box = boxes[i]!;
        const header = box.subarray(0, SealedBox.headerLength);
        const epk = box.subarray(1, SealedBox.headerLength);
        const shared = x25519.getSharedSecret(p.secretKey, epk);
        const okm = blake3(new Uint8Array([...shared, ...epk, ...p.publicKey]), { context: new TextEncoder().encode(SealedBox.kdfContext), dkLen: 56 });
        expect(xchacha20poly1305(okm.subarray(0, 32), okm.subarray(32), header).decrypt(box.subarray(SealedBox.headerLength))).toEqual(pt);
      });
    });
  }

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
