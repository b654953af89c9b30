import { describe, expect, it } from "vitest";
import { SigningKey, verifyMany, verifySignature } from "./ed25519.js";
import { randomBytes } from "./encoding.js";

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
});
