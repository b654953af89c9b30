import { describe, expect, it } from "vitest";
import { SigningKey } from "./ed25519.js";
import { utf8 } from "./encoding.js";
import type { Envelope } from "./envelope.js";
import { envelopeCheck, envelopeFromHeaders, EnvelopeHeader, envelopeSigningBytes, envelopeToHeaders, signEnvelope, verifyEnvelope } from "./envelope.js";

describe("signed request envelope", () => {
  const key = SigningKey.generate();
  const subject = "unibus.v1.users.add";
  const body = utf8('{"principal":"UABC","role":"member"}');
  const env = signEnvelope(key, subject, body, 1_763_900_000_000);

  it("carries the signer's principal, the given time, a 32-hex nonce and an 86-char base64url signature", () => {
    expect(env.signer).toBe(key.principal);
    expect(env.timestamp).toBe(1_763_900_000_000);
    expect(env.nonce).toMatch(/^[0-9a-f]{32}$/);
    expect(env.signature).toMatch(/^[A-Za-z0-9_-]{86}$/);
    expect(signEnvelope(key, subject, body).nonce).not.toBe(env.nonce);
    expect(verifyEnvelope(env, subject, body)).toBe(true);
  });

  it("tampering with any field, the subject or the body makes verification fail", () => {
    const other = SigningKey.generate();
    const flipLast = (s: string): string => s.slice(0, -1) + (s.endsWith("A") ? "Q" : "A");
    const tampered: Envelope[] = [
      { ...env, signer: other.principal },
      { ...env, timestamp: env.timestamp + 1 },
      { ...env, nonce: env.nonce.slice(0, -1) + (env.nonce.endsWith("0") ? "1" : "0") },
      { ...env, signature: flipLast(env.signature) },
    ];
    for (const t of tampered) expect(verifyEnvelope(t, subject, body)).toBe(false);
    expect(verifyEnvelope(env, "unibus.v1.users.revoke", body)).toBe(false);
    expect(verifyEnvelope(env, subject, utf8('{"principal":"UABC","role":"admin"}'))).toBe(false);
    expect(verifyEnvelope(env, subject, new Uint8Array(0))).toBe(false);
  });

  it("malformed fields are rejected without throwing", () => {
    const malformed: unknown[] = [
      { ...env, signer: Buffer.from(key.publicKey).toString("hex") },
      { ...env, signer: key.nkeyPublic("A") },
      { ...env, nonce: env.nonce.toUpperCase() },
      { ...env, nonce: env.nonce.slice(2) },
      { ...env, timestamp: -1 },
      { ...env, timestamp: 1.5 },
      { ...env, timestamp: String(env.timestamp) },
      { ...env, signature: `${env.signature}==` },
      { ...env, signature: Buffer.from(env.signature, "base64url").toString("base64") },
      { ...env, signature: "" },
      { signer: env.signer },
      null,
      "envelope",
    ];
    for (const m of malformed) expect(verifyEnvelope(m as Envelope, subject, body)).toBe(false);
  });

  it("a non-canonical base64url spelling of a valid signature is rejected", () => {
    // The 86th character carries 2 unused bits; setting them gives the same bytes.
    const last = env.signature.at(-1) ?? "A";
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const variant = env.signature.slice(0, -1) + alphabet[alphabet.indexOf(last) | 1];
    expect(Buffer.from(variant, "base64url")).toEqual(Buffer.from(env.signature, "base64url"));
    if (variant !== env.signature) expect(verifyEnvelope({ ...env, signature: variant }, subject, body)).toBe(false);
  });

  it("of the 16 spellings of a signature's last character that decode to the same bytes, only the canonical one verifies", () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const top = alphabet.indexOf(env.signature.at(-1)!) & 0x30;
    const spellings = Array.from({ length: 16 }, (_, low) => env.signature.slice(0, -1) + alphabet[top | low]);
    for (const v of spellings) expect(Buffer.from(v, "base64url")).toEqual(Buffer.from(env.signature, "base64url"));
    expect(spellings.filter((v) => verifyEnvelope({ ...env, signature: v }, subject, body))).toEqual([env.signature]);
  });

  it("a check's signer key is its own copy: changing it does not change the next check of that signer", () => {
    const first = envelopeCheck(env, subject, body)!;
    first.publicKey.fill(0);
    expect(verifyEnvelope(env, subject, body)).toBe(true);
    expect(envelopeCheck(env, subject, body)!.publicKey).toEqual(key.publicKey);
  });

  it("length prefixes keep different subjects/nonces from producing the same signed bytes", () => {
    const nonce = "0".repeat(32);
    const a = envelopeSigningBytes("a.b", 1, nonce, body);
    const b = envelopeSigningBytes("a.bc", 1, nonce, body);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
    expect(() => envelopeSigningBytes(subject, -1, nonce, body)).toThrow(RangeError);
    expect(() => envelopeSigningBytes(subject, 1, "xyz", body)).toThrow(RangeError);
  });

  it("survives a round trip through NATS header values", () => {
    const headers = envelopeToHeaders(env);
    expect(Object.keys(headers).sort()).toEqual(Object.values(EnvelopeHeader).sort());
    const back = envelopeFromHeaders((n) => headers[n as EnvelopeHeader]);
    expect(back).toEqual(env);
    expect(envelopeFromHeaders((n) => (n === EnvelopeHeader.signature ? "" : headers[n as EnvelopeHeader]))).toBeUndefined();
    expect(envelopeFromHeaders((n) => (n === EnvelopeHeader.timestamp ? "01" : headers[n as EnvelopeHeader]))).toBeUndefined();
    expect(envelopeFromHeaders((n) => (n === EnvelopeHeader.timestamp ? "1e3" : headers[n as EnvelopeHeader]))).toBeUndefined();
  });
});
