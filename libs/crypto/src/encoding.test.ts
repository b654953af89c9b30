import { describe, expect, it } from "vitest";
import { constantTimeEqual, fromBase64Url, fromHex, randomBytes, toBase64Url, toHex } from "./encoding.js";
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
