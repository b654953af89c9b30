import { describe, expect, it } from "vitest";
import {
  ClusterSecretError,
  decodeRecoverySecret,
  deriveClusterKeys,
  encodeRecoverySecret,
  generateClusterSeed,
  unlockWrappedCuk,
  unwrapCuk,
  wrapCuk,
} from "./replica-cluster.js";
import { randomBytes, toHex } from "./encoding.js";

describe("cluster seed", () => {
  it("the recovery secret round-trips, ignoring case, blanks and dashes", () => {
    const seed = generateClusterSeed();
    const secret = encodeRecoverySecret(seed);
    expect(secret).toMatch(/^UBRS-[A-Z2-7]{6}(-[A-Z2-7]{1,6})+$/);
    expect(toHex(decodeRecoverySecret(secret))).toBe(toHex(seed));
    expect(toHex(decodeRecoverySecret(` ${secret.toLowerCase().replace(/-/g, " ")}\n`))).toBe(toHex(seed));
  });

  it("a typo, a wrong prefix or a short secret is refused by the checksum, never accepted as another seed", () => {
    const secret = encodeRecoverySecret(generateClusterSeed());
    const i = 8;
    const typo = secret.slice(0, i) + (secret[i] === "A" ? "B" : "A") + secret.slice(i + 1);
    expect(() => decodeRecoverySecret(typo)).toThrow(ClusterSecretError);
    expect(() => decodeRecoverySecret(secret.replace("UBRS", "UBXS"))).toThrow(/prefix/);
    expect(() => decodeRecoverySecret(secret.slice(0, -3))).toThrow(ClusterSecretError);
    expect(() => decodeRecoverySecret(`${secret}-AAAAAA`)).toThrow(ClusterSecretError);
  });

  it("the error never quotes the secret", () => {
    const secret = encodeRecoverySecret(generateClusterSeed());
    try {
      decodeRecoverySecret(`${secret}X`);
      expect.unreachable();
    } catch (err) {
      expect(String(err)).not.toContain(secret.slice(5, 20));
    }
  });

  it("derived keys are deterministic and distinct per purpose", () => {
    const seed = generateClusterSeed();
    const a = deriveClusterKeys(seed);
    const b = deriveClusterKeys(seed);
    expect(toHex(a.historyKey.publicKey)).toBe(toHex(b.historyKey.publicKey));
    expect(toHex(a.wrapKey)).toBe(toHex(b.wrapKey));
    expect(new Set([toHex(a.historyKey.seedBytes()), toHex(a.wrapKey), toHex(a.agreementSecretKey)]).size).toBe(3);
    expect(toHex(deriveClusterKeys(generateClusterSeed()).historyKey.publicKey)).not.toBe(toHex(a.historyKey.publicKey));
    expect(() => deriveClusterKeys(randomBytes(31))).toThrow(ClusterSecretError);
  });

  it("a wrapped CUK opens only for its node id and join key, and with the recovery secret alone", () => {
    const seed = generateClusterSeed();
    const { wrapKey } = deriveClusterKeys(seed);
    const cuk = randomBytes(32);
    const wrapped = wrapCuk(wrapKey, cuk, "node-4", "UJOINKEY");
    expect(toHex(unwrapCuk(wrapKey, wrapped, "node-4", "UJOINKEY"))).toBe(toHex(cuk));
    expect(toHex(unlockWrappedCuk(encodeRecoverySecret(seed), wrapped, "node-4", "UJOINKEY"))).toBe(toHex(cuk));
    expect(() => unwrapCuk(wrapKey, wrapped, "node-5", "UJOINKEY")).toThrow(ClusterSecretError);
    expect(() => unwrapCuk(wrapKey, wrapped, "node-4", "UOTHER")).toThrow(ClusterSecretError);
    expect(() => unwrapCuk(deriveClusterKeys(generateClusterSeed()).wrapKey, wrapped, "node-4", "UJOINKEY")).toThrow(ClusterSecretError);
    expect(() => unwrapCuk(wrapKey, wrapped.subarray(1), "node-4", "UJOINKEY")).toThrow(ClusterSecretError);
  });
});
