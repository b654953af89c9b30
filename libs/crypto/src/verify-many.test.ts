import { ed25519 } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { describe, expect, it, vi } from "vitest";
import { SigningKey, verifyMany, verifySignature } from "./ed25519.js";
import { randomBytes } from "./encoding.js";

/** Little-endian bytes of a scalar below 2^256. */
function scalarBytes(n: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return out;
}

function scalarOf(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.byteLength - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

/**
 * A valid Ed25519 signature by `seed` over `data` made with a RANDOM nonce
 * (not RFC 8032's deterministic one): what another implementation of the
 * same key could produce. It verifies, but it is not the signature this
 * library's signing makes.
 */
function randomNonceSignature(seed: Uint8Array, data: Uint8Array): Uint8Array {
  const L = ed25519.Point.Fn.ORDER;
  const { scalar, pointBytes } = ed25519.utils.getExtendedPublicKey(seed);
  const r = scalarOf(randomBytes(64)) % L;
  const R = ed25519.Point.BASE.multiply(r).toBytes();
  const k = scalarOf(sha512(Uint8Array.from([...R, ...pointBytes, ...data]))) % L;
  return Uint8Array.from([...R, ...scalarBytes((r + k * scalar) % L)]);
}

describe("verifyMany", () => {
  const keys = Array.from({ length: 8 }, () => SigningKey.generate());
  const good = (n: number, size = 100) =>
    Array.from({ length: n }, (_, i) => {
      const k = keys[i % keys.length]!;
      const data = randomBytes(size);
      return { publicKey: k.publicKey, data, signature: k.sign(data) };
    });

  it("answers like verifySignature for a large batch (worker pool): every good check true, every bad one false, in order", async () => {
    const checks = good(300);
    const tampered = new Set([3, 77, 150, 299]);
    const batch = checks.map((c, i) => {
      if (!tampered.has(i)) return c;
      const data = Uint8Array.from(c.data);
      data[0]! ^= 1;
      return { ...c, data };
    });
    // Wrong key, short signature, not-a-point key: false, never a throw.
    batch.push({ ...checks[0]!, publicKey: keys[1]!.publicKey });
    batch.push({ ...checks[0]!, signature: checks[0]!.signature.subarray(0, 63) });
    batch.push({ ...checks[0]!, publicKey: new Uint8Array(32).fill(0xff) });
    const got = await verifyMany(batch);
    const want = batch.map((c) => verifySignature(c.publicKey, c.data, c.signature));
    expect(got).toEqual(want);
    expect(got.filter(Boolean).length).toBe(296);
    for (const i of tampered) expect(got[i]).toBe(false);
    expect(got.slice(-3)).toEqual([false, false, false]);
  });

  it("a small batch, a batch of long statements and an empty one", async () => {
    const small = good(5);
    expect(await verifyMany(small)).toEqual([true, true, true, true, true]);
    const long = good(70, 10_000);
    long[10] = { ...long[10]!, signature: long[11]!.signature };
    const got = await verifyMany(long);
    expect(got.filter(Boolean).length).toBe(69);
    expect(got[10]).toBe(false);
    expect(await verifyMany([])).toEqual([]);
  });

  it("a statement that verified once is answered again, and a failed one is not remembered as good", async () => {
    const [c] = good(1);
    const bad = { ...c!, signature: Uint8Array.from(c!.signature).fill(1, 0, 4) };
    expect(verifySignature(bad.publicKey, bad.data, bad.signature)).toBe(false);
    expect((await verifyMany(Array.from({ length: 100 }, () => bad))).every((v) => !v)).toBe(true);
    expect(verifySignature(bad.publicKey, bad.data, bad.signature)).toBe(false);
    expect(verifySignature(c!.publicKey, c!.data, c!.signature)).toBe(true);
    expect(verifySignature(c!.publicKey, c!.data, c!.signature)).toBe(true);
  });

  describe("with the caller's own key", () => {
    const own = SigningKey.generate();
    const mine = (n: number) =>
      Array.from({ length: n }, () => {
        const data = randomBytes(200);
        return { publicKey: own.publicKey, data, signature: own.sign(data) };
      });

    it("answers its own signatures by signing again, and only those: a mixed batch answers exactly like verifySignature", async () => {
      const spy = vi.spyOn(own, "isOwnSignature");
      try {
        const batch = [...mine(100), ...good(100)];
        // Tampered entries under the own key: changed data, a signature over other data, a flipped bit in S.
        const changed = Uint8Array.from(batch[5]!.data);
        changed[0]! ^= 1;
        batch[5] = { ...batch[5]!, data: changed };
        batch[6] = { ...batch[6]!, signature: batch[7]!.signature };
        const flipped = Uint8Array.from(batch[8]!.signature);
        flipped[40]! ^= 1;
        batch[8] = { ...batch[8]!, signature: flipped };
        // Another key's check carrying the own key's signature.
        batch[150] = { ...batch[150]!, signature: batch[9]!.signature };
        const got = await verifyMany(batch, { own });
        expect(got).toEqual(batch.map((c) => verifySignature(c.publicKey, c.data, c.signature)));
        expect(got.filter(Boolean).length).toBe(196);
        // Asked once per check by the own key (the other keys' checks never), and "yes" for the 97 untouched.
        expect(spy).toHaveBeenCalledTimes(100);
        expect(spy.mock.results.filter((r) => r.value === true).length).toBe(97);
      } finally {
        spy.mockRestore();
      }
    });

    it("a valid signature by the own key made with another nonce is not its own, and still verifies", async () => {
      const data = randomBytes(120);
      const other = randomNonceSignature(own.seedBytes(), data);
      expect(other).not.toEqual(own.sign(data));
      expect(verifySignature(own.publicKey, data, other)).toBe(true);
      expect(own.isOwnSignature(data, other)).toBe(false);
      expect(own.isOwnSignature(data, own.sign(data))).toBe(true);
      const [got] = await verifyMany([{ publicKey: own.publicKey, data, signature: other }], { own });
      expect(got).toBe(true);
    });

    it("isOwnSignature refuses what is not a 64-byte signature, without throwing", () => {
      const data = randomBytes(10);
      const sig = own.sign(data);
      expect(own.isOwnSignature(data, sig.subarray(0, 63))).toBe(false);
      expect(own.isOwnSignature(data, new Uint8Array(65))).toBe(false);
      expect(own.isOwnSignature("x" as unknown as Uint8Array, sig)).toBe(false);
      expect(SigningKey.generate().isOwnSignature(data, sig)).toBe(false);
    });
  });
});
