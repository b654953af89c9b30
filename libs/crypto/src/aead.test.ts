import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { aeadDecrypt, aeadEncrypt, aeadEncryptInto, aeadScratchWiped, NATIVE_AEAD_MAX_BYTES, useNativeAeadForTests } from "./aead.js";
import { randomBytes } from "./encoding.js";
import { DecryptError } from "./errors.js";
import { nativeSodium } from "./native-sodium.js";

// Every case runs on both paths: libsodium (small messages, when sodium-native loads) and node's.
describe.each([
  ["libsodium", true],
  ["node:crypto", false],
])("XChaCha20-Poly1305 (%s path)", (_name, native) => {
  beforeAll(() => {
    // The native path is there exactly when sodium-native loaded: a build without it still runs the node cases.
    expect(useNativeAeadForTests(native)).toBe(native && nativeSodium !== undefined);
  });
  afterAll(() => void useNativeAeadForTests(true));

  it("is byte-identical to @noble/ciphers for random keys, nonces, sizes and associated data, on both sides of the native bound", () => {
    for (const size of [0, 1, 15, 16, 63, 64, 65, 1000, NATIVE_AEAD_MAX_BYTES, NATIVE_AEAD_MAX_BYTES + 1, 70_000]) {
      const key = randomBytes(32);
      const nonce = randomBytes(24);
      const pt = randomBytes(size);
      const ad = size % 2 === 0 ? randomBytes(size % 40) : undefined;
      const ct = aeadEncrypt(key, nonce, pt, ad);
      expect(ct).toEqual(xchacha20poly1305(key, nonce, ad).encrypt(pt));
      expect(aeadDecrypt(key, nonce, ct, ad)).toEqual(pt);
    }
  });

  it("the reused subkey scratch carries nothing between calls: interleaved keys, a failed open and a refused call in between all match the reference, and no key bytes stay behind", () => {
    const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const pt = randomBytes(1024);
    for (let i = 0; i < 30; i++) {
      const key = keys[i % 3]!;
      const nonce = randomBytes(24);
      const ct = aeadEncrypt(key, nonce, pt);
      expect(aeadScratchWiped()).toBe(true);
      expect(ct).toEqual(xchacha20poly1305(key, nonce).encrypt(pt));
      // A wrong key fails the tag, then the right one opens: the failure left nothing behind.
      expect(() => aeadDecrypt(keys[(i + 1) % 3]!, nonce, ct)).toThrow(DecryptError);
      expect(aeadScratchWiped()).toBe(true);
      expect(() => aeadEncrypt(key, nonce.subarray(1), pt)).toThrow(RangeError);
      expect(aeadDecrypt(key, nonce, ct)).toEqual(pt);
      expect(aeadScratchWiped()).toBe(true);
    }
  });

  it("encrypts into a caller's buffer at an offset exactly as aeadEncrypt, and refuses an output that does not fit", () => {
    const key = randomBytes(32);
    const nonce = randomBytes(24);
    const pt = randomBytes(1000);
    const ad = randomBytes(20);
    const out = new Uint8Array(7 + 1016 + 5).fill(0xaa);
    aeadEncryptInto(key, nonce, pt, ad, out, 7);
    expect(out.subarray(7, 7 + 1016)).toEqual(aeadEncrypt(key, nonce, pt, ad));
    expect([...out.subarray(0, 7), ...out.subarray(1023)].every((b) => b === 0xaa)).toBe(true);
    expect(() => aeadEncryptInto(key, nonce, pt, ad, out, 13)).toThrow(RangeError);
    expect(() => aeadEncryptInto(key, nonce, pt, ad, out, -1)).toThrow(RangeError);
  });

  it("encrypts correctly when the output overlaps the plaintext (in place, and shifted by a few bytes)", () => {
    const key = randomBytes(32);
    const nonce = randomBytes(24);
    const pt = randomBytes(500);
    const want = xchacha20poly1305(key, nonce).encrypt(pt);
    for (const shift of [0, 3]) {
      const buf = new Uint8Array(shift + 516);
      buf.set(pt, 0);
      aeadEncryptInto(key, nonce, buf.subarray(0, 500), undefined, buf, shift);
      expect(buf.subarray(shift)).toEqual(want);
    }
  });

  it("any flipped bit in ciphertext, tag, nonce, key or associated data is a DecryptError", () => {
    const key = randomBytes(32);
    const nonce = randomBytes(24);
    const ad = randomBytes(12);
    const ct = aeadEncrypt(key, nonce, randomBytes(40), ad);
    const flip = (b: Uint8Array, i: number): Uint8Array => {
      const c = b.slice();
      c[i] = (c[i] ?? 0) ^ 0x01;
      return c;
    };
    for (const i of [0, 39, 40, 55]) expect(() => aeadDecrypt(key, nonce, flip(ct, i), ad)).toThrow(DecryptError);
    expect(() => aeadDecrypt(flip(key, 3), nonce, ct, ad)).toThrow(DecryptError);
    expect(() => aeadDecrypt(key, flip(nonce, 20), ct, ad)).toThrow(DecryptError);
    expect(() => aeadDecrypt(key, flip(nonce, 2), ct, ad)).toThrow(DecryptError);
    expect(() => aeadDecrypt(key, nonce, ct, flip(ad, 0))).toThrow(DecryptError);
    expect(() => aeadDecrypt(key, nonce, ct)).toThrow(DecryptError);
    expect(() => aeadDecrypt(key, nonce, ct.subarray(0, 15), ad)).toThrow(DecryptError);
    expect(() => aeadDecrypt(key.subarray(1), nonce, ct, ad)).toThrow(DecryptError);
  });

  it("rejects wrong key and nonce sizes when encrypting", () => {
    expect(() => aeadEncrypt(randomBytes(16), randomBytes(24), randomBytes(1))).toThrow(RangeError);
    expect(() => aeadEncrypt(randomBytes(32), randomBytes(12), randomBytes(1))).toThrow(RangeError);
  });
});
