import { describe, expect, it } from "vitest";
import { decode as natsDecode } from "@nats-io/jwt";
import { NkeyPrefix, SigningKey, encodeNkeySeed, randomBytes } from "@unibus/crypto";
import { encodeJwt } from "./jwt.js";
import { LARGE_SIGNATURE_BYTES, nativeSigner, verifyEd25519 } from "./signer.js";
import { sodium } from "./sodium.js";

describe("nativeSigner", () => {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));

  it("signs through libsodium where sodium-native loads (linux x64 here)", () => {
    // Where it should load and does not, every login silently costs ~20 µs more per signature.
    if (process.platform === "linux" && process.arch === "x64") expect(sodium).toBeDefined();
    expect(nativeSigner(issuer) === issuer).toBe(sodium === undefined);
  });

  it("gives exactly the signatures node:crypto gives (Ed25519 is deterministic)", () => {
    const signer = nativeSigner(issuer);
    // Both sides of the switch to node:crypto for large messages, and a JWT of a principal in 1,000 rooms.
    for (const size of [0, 1, 300, 5_000, LARGE_SIGNATURE_BYTES, LARGE_SIGNATURE_BYTES + 1, 150_000]) {
      const data = randomBytes(size);
      expect(Buffer.from(signer.sign(data)).equals(Buffer.from(issuer.sign(data)))).toBe(true);
    }
    expect(signer.nkeyPublic(NkeyPrefix.account)).toBe(issuer.principal);
  });

  it("signs JWTs that @nats-io/jwt decodes and verifies against the issuer", () => {
    const token = encodeJwt({ sub: SigningKey.generate().principal, aud: "UNIBUS", nats: { type: "user", version: 2 } }, nativeSigner(issuer), NkeyPrefix.account);
    const claims = natsDecode(token); // throws on a bad signature
    expect(claims.iss).toBe(issuer.principal);
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
