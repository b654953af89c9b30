import { describe, expect, it } from "vitest";
import { constantTimeEqual, fromBase64Url, fromHex, NONCE_POOL_BYTES, randomBytes, randomNonce, toBase64Url, toHex } from "./encoding.js";
import { EncodingError } from "./errors.js";
import { blake3, blake3DeriveKey, blake3Mac } from "./hash.js";

describe("encodings", () => {
  it("hex and base64url round-trip and return plain Uint8Arrays", () => {
    const b = randomBytes(33);
    expect(fromHex(toHex(b))).toEqual(b);
    expect(fromBase64Url(toBase64Url(b))).toEqual(b);
    expect(Buffer.isBuffer(fromHex(toHex(b)))).toBe(false);
    expect(toBase64Url(b)).not.toMatch(/[=+/]/);
    expect(fromHex("ABcd")).toEqual(Uint8Array.of(0xab, 0xcd));
  });

  it("rejects malformed input instead of silently truncating", () => {
    for (const s of ["abc", "zz", "ab cd", "0x00"]) expect(() => fromHex(s)).toThrow(EncodingError);
    for (const s of ["ab+/", "abc=", "a", "ab cd"]) expect(() => fromBase64Url(s)).toThrow(EncodingError);
  });

  it("randomNonce hands out each pooled byte once, in arrays of their own, across refills of the pool", () => {
    const seen = new Set<string>();
    // More than three pools' worth, so refills happen mid-way.
    const count = Math.ceil((3 * NONCE_POOL_BYTES) / 32) + 7;
    for (let i = 0; i < count; i++) {
      const n = randomNonce(32);
      expect(n.byteLength).toBe(32);
      // Its own buffer: a view would expose the pool, the next nonces included.
      expect(n.buffer.byteLength).toBe(32);
      expect(Buffer.isBuffer(n)).toBe(false);
      seen.add(toHex(n));
    }
    expect(seen.size).toBe(count);
    // An odd size that does not divide the pool still yields whole, fresh values.
    for (let i = 0; i < 300; i++) expect(randomNonce(33).byteLength).toBe(33);
    expect(randomNonce(0).byteLength).toBe(0);
    expect(randomNonce(NONCE_POOL_BYTES).byteLength).toBe(NONCE_POOL_BYTES);
  });

  it("randomNonce refuses sizes it cannot serve from one pool", () => {
    for (const n of [-1, 1.5, Number.NaN, NONCE_POOL_BYTES + 1]) expect(() => randomNonce(n)).toThrow(RangeError);
  });

  it("constantTimeEqual compares contents and is false (not a throw) for different lengths", () => {
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2))).toBe(true);
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3))).toBe(false);
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3))).toBe(false);
  });
});

describe("BLAKE3", () => {
  it("matches the official BLAKE3 test vector for empty input, and modes are separated", () => {
    expect(toHex(blake3(new Uint8Array(0)))).toBe("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    expect(blake3(new Uint8Array(0), { dkLen: 64 }).byteLength).toBe(64);
    const data = randomBytes(10);
    const key = randomBytes(32);
    expect(blake3Mac(key, data)).not.toEqual(blake3(data));
    expect(blake3DeriveKey("unibus test a", data)).not.toEqual(blake3DeriveKey("unibus test b", data));
    expect(blake3DeriveKey("unibus test a", data, 56).byteLength).toBe(56);
  });

  it("blake3Mac refuses a key that is not exactly 32 bytes", () => {
    expect(() => blake3Mac(randomBytes(16), randomBytes(1))).toThrow(RangeError);
    expect(() => blake3Mac(randomBytes(33), randomBytes(1))).toThrow(RangeError);
  });
});
