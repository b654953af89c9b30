import { createHash, verify as nodeVerify, createPublicKey } from "node:crypto";
import * as ed from "@noble/ed25519";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { resetCryptoPoolForTests } from "./crypto-pool.js";
import { LARGE_SIGNATURE_BYTES, SigningKey, strictEd25519Encoding, useNativeEd25519ForTests, useNativeSigningForTests, verifyMany, verifyUncachedForTests } from "./ed25519.js";
import type { SignatureCheck } from "./ed25519.js";
import { fromHex, randomBytes, toHex } from "./encoding.js";
import { sha256, useNativeSha256ForTests } from "./hash.js";
import { nativeSodium } from "./native-sodium.js";
import { openSealed, sealToVerified } from "./sealed-box.js";
import { generateAgreementKeyPair } from "./x25519.js";

/** Ed25519's group order L, little-endian scalar arithmetic for the tests below. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const le = (n: bigint): Uint8Array => Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
const fromLe = (b: Uint8Array): bigint => b.reduce((acc, x, i) => acc | (BigInt(x) << BigInt(8 * i)), 0n);

/** The identity point's encoding: a public key of order 1. */
const IDENTITY = fromHex("0100000000000000000000000000000000000000000000000000000000000000");

/**
 * A "signature" under the identity key that OpenSSL's equation accepts for
 * any message: with A the identity, [s]B = R + [h]A holds for R = [s]B.
 */
function identityForgery(data: Uint8Array): SignatureCheck {
  const s = fromLe(randomBytes(31));
  const r = ed.Point.BASE.multiply(s).toBytes();
  const signature = new Uint8Array(64);
  signature.set(r, 0);
  signature.set(le(s), 32);
  return { publicKey: IDENTITY, data, signature };
}

/** Good checks, each tampered way, and the encodings only libsodium refuses by itself. */
function mixedChecks(n: number): { checks: SignatureCheck[]; want: boolean[] } {
  const checks: SignatureCheck[] = [];
  const want: boolean[] = [];
  const add = (c: SignatureCheck, ok: boolean): void => {
    checks.push(c);
    want.push(ok);
  };
  for (let i = 0; i < n; i++) {
    const key = SigningKey.generate();
    const data = randomBytes(40 + (i % 60));
    const signature = key.sign(data);
    switch (i % 6) {
      case 0: {
        const bad = Uint8Array.from(data);
        bad[0]! ^= 1;
        add({ publicKey: key.publicKey, data: bad, signature }, false);
        break;
      }
      case 1: {
        // S + L: the same equation, a second spelling (malleability).
        const high = Uint8Array.from(signature);
        high.set(le(fromLe(signature.subarray(32)) + L), 32);
        add({ publicKey: key.publicKey, data, signature: high }, false);
        break;
      }
      case 2:
        add(identityForgery(data), false);
        break;
      case 3: {
        // R of small order (order 8) with an honest key.
        const smallR = Uint8Array.from(signature);
        smallR.set(fromHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), 0);
        add({ publicKey: key.publicKey, data, signature: smallR }, false);
        break;
      }
      case 4: {
        // A non-canonical key spelling (y = p + 3) and the order-2 point p − 1 with its sign bit set.
        const nonCanonical = fromHex("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        add({ publicKey: i % 12 === 4 ? nonCanonical : fromHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"), data, signature }, false);
        break;
      }
      default:
        add({ publicKey: key.publicKey, data, signature }, true);
    }
  }
  return { checks, want };
}

afterEach(async () => {
  useNativeEd25519ForTests(true);
  useNativeSigningForTests(true);
  await resetCryptoPoolForTests();
});
afterAll(() => {
  useNativeEd25519ForTests(true);
  useNativeSha256ForTests(true);
});

describe("Ed25519 through libsodium and through node:crypto", () => {
  it("sodium-native loads here, so the native path is the one under test", () => {
    expect(nativeSodium).toBeDefined();
    expect(useNativeEd25519ForTests(true)).toBe(true);
  });

  it("signs through libsodium the bytes node:crypto and the reference implementation give, up to and past the large-message bound", async () => {
    expect(useNativeSigningForTests(true)).toBe(true);
    const key = SigningKey.generate();
    for (const size of [0, 1, 64, 150, 1024, LARGE_SIGNATURE_BYTES, LARGE_SIGNATURE_BYTES + 1, 110_000]) {
      const data = randomBytes(size);
      useNativeSigningForTests(true);
      const native = key.sign(data);
      useNativeSigningForTests(false);
      const openssl = key.sign(data);
      expect(native.constructor).toBe(Uint8Array);
      expect(native.byteOffset).toBe(0);
      expect(native.buffer.byteLength).toBe(64);
      expect(toHex(native)).toBe(toHex(openssl));
      expect(await ed.verifyAsync(native, data, key.publicKey)).toBe(true);
    }
  });

  it("both paths give the same answer for good, tampered, malleated and small-order checks", () => {
    const { checks, want } = mixedChecks(240);
    for (const on of [true, false]) {
      useNativeEd25519ForTests(on);
      expect(checks.map((c) => verifyUncachedForTests(c.publicKey, c.data, c.signature))).toEqual(want);
    }
  });

  it("a forgery under the identity key passes OpenSSL's equation alone, and is refused on both paths", () => {
    const forged = identityForgery(randomBytes(64));
    const raw = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(forged.publicKey).toString("base64url") }, format: "jwk" });
    expect(nodeVerify(null, forged.data, raw, forged.signature)).toBe(true);
    expect(strictEd25519Encoding(forged.publicKey, forged.signature)).toBe(false);
    for (const on of [true, false]) {
      useNativeEd25519ForTests(on);
      expect(verifyUncachedForTests(forged.publicKey, forged.data, forged.signature)).toBe(false);
    }
  });

  it("the pool's workers answer alike with and without libsodium", async () => {
    for (const native of [true, false]) {
      await resetCryptoPoolForTests({ native });
      // Fresh checks per round: a statement verified once is answered from memory.
      const { checks, want } = mixedChecks(300);
      expect(await verifyMany(checks)).toEqual(want);
    }
  });

  it("no box is sealed to a key bound by a small-order signer, on the pool or inline", async () => {
    for (const native of [true, false]) {
      await resetCryptoPoolForTests({ native });
      useNativeEd25519ForTests(native);
      const people = Array.from({ length: 100 }, () => {
        const signer = SigningKey.generate();
        const agreement = generateAgreementKeyPair();
        return { agreement, binding: { publicKey: signer.publicKey, data: agreement.publicKey, signature: signer.sign(agreement.publicKey) } };
      });
      const forged = identityForgery(people[7]!.agreement.publicKey);
      const recipients = people.map((p, i) => ({ agreementKey: p.agreement.publicKey, binding: i === 7 ? forged : p.binding }));
      const roomKey = randomBytes(32);
      for (const set of [recipients, recipients.slice(0, 10)]) {
        const sealed = await sealToVerified(set, roomKey);
        expect(sealed[7]).toEqual({ box: null, verified: false });
        expect(sealed.filter((s) => s.box !== null).length).toBe(set.length - 1);
        expect(openSealed(people[0]!.agreement.secretKey, sealed[0]!.box!)).toEqual(roomKey);
      }
    }
  });

  it("SHA-256 through libsodium gives node:crypto's bytes, for every length around the block size and an empty input", () => {
    expect(useNativeSha256ForTests(true)).toBe(true);
    for (const n of [0, 1, 31, 32, 55, 56, 63, 64, 65, 127, 128, 256, 257, 1000, 100_000]) {
      const data = randomBytes(n);
      const want = createHash("sha256").update(data).digest();
      expect(Buffer.from(sha256(data))).toEqual(want);
      // A view into a larger buffer hashes only its own bytes.
      const inside = new Uint8Array(n + 10);
      inside.set(data, 5);
      expect(Buffer.from(sha256(inside.subarray(5, 5 + n)))).toEqual(want);
    }
    useNativeSha256ForTests(false);
    expect(Buffer.from(sha256(Uint8Array.of(1, 2, 3)))).toEqual(createHash("sha256").update(Uint8Array.of(1, 2, 3)).digest());
  });
});
