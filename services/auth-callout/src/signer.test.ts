import { describe, expect, it } from "vitest";
import { decode as natsDecode } from "@nats-io/jwt";
import { LARGE_SIGNATURE_BYTES, NkeyPrefix, SigningKey, encodeNkeySeed, randomBytes, signingBackend } from "@unibus/crypto";
import { encodeJwt } from "./jwt.js";
import { verifyEd25519 } from "./signer.js";
import { sodium } from "./sodium.js";

describe("the callout's signing and verification", () => {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));

  it("signs through libsodium where sodium-native loads (linux x64 here)", () => {
    // Where it should load and does not, every login silently costs ~20 µs more per signature.
    if (process.platform === "linux" && process.arch === "x64") expect(sodium).toBeDefined();
    expect(signingBackend()).toBe(sodium === undefined ? "node:crypto" : "libsodium");
  });

  it("signs JWTs that @nats-io/jwt decodes and verifies against the issuer, small and past the large-message bound", () => {
    for (const rooms of [1, 2_000]) {
      const token = encodeJwt({ sub: SigningKey.generate().principal, aud: "UNIBUS", nats: { type: "user", version: 2, pub: { allow: Array.from({ length: rooms }, (_, i) => `unibus.v1.room.r${i}.>`) } } }, issuer, NkeyPrefix.account);
      expect(token.length > LARGE_SIGNATURE_BYTES).toBe(rooms > 1);
      const claims = natsDecode(token); // throws on a bad signature
      expect(claims.iss).toBe(issuer.principal);
    }
  });

  it("verifies what node:crypto signs, and refuses a changed message, a foreign key and malformed lengths", () => {
    const key = SigningKey.generate();
    const data = randomBytes(200);
    const sig = key.sign(data);
    expect(verifyEd25519(key.publicKey, data, sig)).toBe(true);
    const changed = Uint8Array.from(data);
    changed[0] = (changed[0] ?? 0) ^ 1;
    expect(verifyEd25519(key.publicKey, changed, sig)).toBe(false);
    expect(verifyEd25519(SigningKey.generate().publicKey, data, sig)).toBe(false);
    expect(verifyEd25519(key.publicKey, data, sig.subarray(0, 63))).toBe(false);
    expect(verifyEd25519(key.publicKey.subarray(0, 31), data, sig)).toBe(false);
  });
});
