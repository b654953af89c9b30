// The browser twins (`*.browser.ts`, bundled into the admin panel in place
// of their node:crypto originals) must produce the very same bytes, or the
// panel's signatures would not verify at the services.
import { describe, expect, it } from "vitest";
import * as nodeEd from "./ed25519.js";
import * as browserEd from "./ed25519.browser.js";
import * as nodeEnc from "./encoding.js";
import * as browserEnc from "./encoding.browser.js";
import * as nodeHash from "./hash.js";
import * as browserHash from "./hash.browser.js";
import { envelopeSigningBytes, signEnvelope, verifyEnvelope } from "./envelope.js";

const sizes = [0, 1, 2, 3, 4, 5, 31, 32, 33, 64, 1000];

describe("browser crypto twins", () => {
  it("encode and decode like the Node versions", () => {
    for (const n of sizes) {
      const b = nodeEnc.randomBytes(n);
      expect(browserEnc.toHex(b)).toBe(nodeEnc.toHex(b));
      expect(browserEnc.toBase64Url(b)).toBe(nodeEnc.toBase64Url(b));
      expect(browserEnc.fromHex(nodeEnc.toHex(b))).toEqual(b);
      expect(browserEnc.fromBase64Url(nodeEnc.toBase64Url(b))).toEqual(b);
      expect(browserEnc.randomBytes(n).byteLength).toBe(n);
    }
    expect(browserEnc.randomBytes(70_000).byteLength).toBe(70_000);
    expect(browserEnc.NONCE_POOL_BYTES).toBe(nodeEnc.NONCE_POOL_BYTES);
    for (const n of [0, 32, browserEnc.NONCE_POOL_BYTES]) expect(browserEnc.randomNonce(n).byteLength).toBe(n);
    expect(() => browserEnc.randomNonce(browserEnc.NONCE_POOL_BYTES + 1)).toThrow(RangeError);
    expect(browserEnc.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(browserEnc.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(browserEnc.constantTimeEqual(new Uint8Array([1]), new Uint8Array([1, 0]))).toBe(false);
  });

  it("refuse the malformed input the Node versions refuse", () => {
    for (const bad of ["abc", "zz", "0g"]) {
      expect(() => nodeEnc.fromHex(bad)).toThrow(/hex/);
      expect(() => browserEnc.fromHex(bad)).toThrow(/hex/);
    }
    for (const bad of ["a", "ab+c", "ab/c", "ab=", "a b"]) {
      expect(() => nodeEnc.fromBase64Url(bad)).toThrow();
      expect(() => browserEnc.fromBase64Url(bad)).toThrow();
    }
  });

  it("hash like the Node versions", () => {
    for (const n of sizes) {
      const b = nodeEnc.randomBytes(n);
      expect(browserHash.sha256(b)).toEqual(nodeHash.sha256(b));
      expect(browserHash.blake3(b)).toEqual(nodeHash.blake3(b));
    }
  });

  it("sign byte-identically, and each verifies the other's signatures", () => {
    for (const n of sizes) {
      const seed = nodeEnc.randomBytes(32);
      const a = nodeEd.SigningKey.fromSeed(seed);
      const b = browserEd.SigningKey.fromSeed(seed);
      expect(b.principal).toBe(a.principal);
      expect(b.publicKey).toEqual(a.publicKey);
      expect(b.nkeySeed()).toBe(a.nkeySeed());
      const msg = nodeEnc.randomBytes(n);
      const sig = b.sign(msg);
      expect(sig).toEqual(a.sign(msg));
      expect(nodeEd.verifySignature(a.publicKey, msg, sig)).toBe(true);
      expect(browserEd.verifySignature(a.publicKey, msg, sig)).toBe(true);
      const tampered = new Uint8Array(sig);
      tampered[0] = (tampered[0] ?? 0) ^ 1;
      expect(browserEd.verifySignature(a.publicKey, msg, tampered)).toBe(false);
      expect(browserEd.verifySignature(a.publicKey.subarray(1), msg, sig)).toBe(false);
    }
    expect(JSON.stringify(browserEd.SigningKey.generate())).toMatch(/^\{"principal":"U[A-Z2-7]+"\}$/);
    expect(() => browserEd.SigningKey.fromSeed(new Uint8Array(31))).toThrow(/32 bytes/);
  });

  it("sign an envelope the service-side check accepts", () => {
    const key = browserEd.SigningKey.generate();
    const body = new TextEncoder().encode('{"a":1}');
    const subject = "unibus.v1.membership.users.list";
    // The bundle passes the browser key to the envelope code unchanged; the cast only bridges the two class declarations.
    const envelope = signEnvelope(key as unknown as nodeEd.SigningKey, subject, body);
    expect(verifyEnvelope(envelope, subject, body)).toBe(true);
    expect(verifyEnvelope(envelope, `${subject}.x`, body)).toBe(false);
    expect(nodeEd.verifySignature(key.publicKey, envelopeSigningBytes(subject, envelope.timestamp, envelope.nonce, body), nodeEnc.fromBase64Url(envelope.signature))).toBe(true);
  });
});
