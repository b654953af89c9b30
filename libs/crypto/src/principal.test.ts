import { describe, expect, it } from "vitest";
import { SigningKey } from "./ed25519.js";
import { toHex } from "./encoding.js";
import { InvalidPrincipalError } from "./errors.js";
import { isPrincipal, normalisePrincipal, principalFromPublicKey, publicKeyFromPrincipal } from "./principal.js";

describe("principals", () => {
  const key = SigningKey.generate();
  const hex = toHex(key.publicKey);

  it("a principal is the U… nkey of the Ed25519 public key", () => {
    expect(principalFromPublicKey(key.publicKey)).toBe(key.principal);
    expect(isPrincipal(key.principal)).toBe(true);
  });

  it("a decoded key is the caller's own copy: changing it does not change the next decode; a bad checksum is never remembered as good", () => {
    const first = publicKeyFromPrincipal(key.principal);
    first.fill(0);
    expect(toHex(publicKeyFromPrincipal(key.principal))).toBe(hex);
    const last = key.principal.at(-1) === "A" ? "B" : "A";
    const bad = key.principal.slice(0, -1) + last;
    for (let i = 0; i < 2; i++) {
      expect(isPrincipal(bad)).toBe(false);
      expect(() => publicKeyFromPrincipal(bad)).toThrow(InvalidPrincipalError);
    }
  });

  it("normalises 64-hex (either case, surrounding whitespace) and U… to the same U… principal", () => {
    expect(normalisePrincipal(hex)).toBe(key.principal);
    expect(normalisePrincipal(hex.toUpperCase())).toBe(key.principal);
    expect(normalisePrincipal(`  ${hex}\n`)).toBe(key.principal);
    expect(normalisePrincipal(key.principal)).toBe(key.principal);
    expect(publicKeyFromPrincipal(hex)).toEqual(key.publicKey);
    expect(publicKeyFromPrincipal(key.principal)).toEqual(key.publicKey);
  });

  it("hex is accepted as input but is not a canonical principal", () => {
    expect(isPrincipal(hex)).toBe(false);
  });

  it("rejects other nkey kinds, bad checksums, wrong lengths and junk with InvalidPrincipalError", () => {
    const bad = [
      key.nkeyPublic("A"),
      key.principal.slice(0, -1) + (key.principal.endsWith("A") ? "B" : "A"),
      key.principal.slice(1),
      hex.slice(2),
      `${hex}00`,
      "",
      "u" + key.principal.slice(1),
      key.nkeySeed(),
    ];
    for (const s of bad) {
      expect(isPrincipal(s)).toBe(false);
      expect(() => normalisePrincipal(s)).toThrow(InvalidPrincipalError);
    }
    expect(() => principalFromPublicKey(new Uint8Array(31))).toThrow(InvalidPrincipalError);
  });

  it("refuses every one-character change of a principal past its prefix (the CRC catches each), and characters outside base32", () => {
    const fresh = SigningKey.generate().principal;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let tried = 0;
    for (let i = 1; i < fresh.length; i++) {
      for (const c of alphabet) {
        if (c === fresh[i]) continue;
        const changed = fresh.slice(0, i) + c + fresh.slice(i + 1);
        expect(isPrincipal(changed)).toBe(false);
        tried++;
      }
      for (const c of ["a", "1", "=", "\u00c9", "\ud83d"]) expect(isPrincipal(fresh.slice(0, i) + c + fresh.slice(i + 1))).toBe(false);
    }
    expect(tried).toBe(55 * 31);
    expect(isPrincipal(fresh)).toBe(true);
  });
});
