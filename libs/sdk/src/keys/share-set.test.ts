import { describe, expect, it } from "vitest";
import { SigningKey, randomBytes, toHex } from "@unibus/crypto";
import { agreementKeyStatementBytes, epochStatementBytes, merkleProof, merkleRoot, rootFromProof, shareLeaf } from "./share-set.js";

const leaves = (n: number): Uint8Array[] => Array.from({ length: n }, () => shareLeaf(SigningKey.generate().principal, randomBytes(81)));

describe("the share-set Merkle tree", () => {
  it.each([1, 2, 3, 5, 8, 13, 1000])("every leaf of a %i-leaf tree proves the root, at its own index only", (n) => {
    const ls = leaves(n);
    const root = toHex(merkleRoot(ls));
    const indexes = n > 20 ? [0, 1, 511, 998, 999] : ls.map((_, i) => i);
    for (const i of indexes) {
      const proof = merkleProof(ls, i);
      expect(proof.length).toBeLessThanOrEqual(Math.ceil(Math.log2(n)));
      expect(toHex(rootFromProof(ls[i]!, i, n, proof) ?? new Uint8Array())).toBe(root);
      if (n > 1) {
        const other = (i + 1) % n;
        const moved = rootFromProof(ls[i]!, other, n, proof);
        expect(moved === null || toHex(moved) !== root).toBe(true);
        const tampered = proof.map((h, j) => (j === 0 ? Uint8Array.from(h, (b, k) => (k === 0 ? b ^ 1 : b)) : h));
        expect(toHex(rootFromProof(ls[i]!, i, n, tampered) ?? new Uint8Array())).not.toBe(root);
        expect(rootFromProof(ls[i]!, i, n, [...proof, proof[0]!])).toBeNull();
      }
    }
  });

  it("a member without a share and a member with one hash differently", () => {
    const p = SigningKey.generate().principal;
    expect(toHex(shareLeaf(p, undefined))).not.toBe(toHex(shareLeaf(p, new Uint8Array(0))));
  });

  it("the statements bind room, epoch, distributor, leaf count, log position, log head and recipients, and the agreement binding its principal", () => {
    const root = randomBytes(32);
    const base = { roomId: "aaaaaaaaaaaa", epoch: 2, distributor: SigningKey.generate().principal, leafCount: 3, root, logSeq: 5, logHead: randomBytes(32), recipients: randomBytes(32) };
    const variants = [
      base,
      { ...base, roomId: "aaaaaaaaaaab" },
      { ...base, epoch: 3 },
      { ...base, leafCount: 4 },
      { ...base, distributor: SigningKey.generate().principal },
      { ...base, logSeq: 6 },
      { ...base, logHead: randomBytes(32) },
      { ...base, recipients: randomBytes(32) },
    ];
    expect(new Set(variants.map((v) => toHex(epochStatementBytes(v)))).size).toBe(variants.length);
    const key = randomBytes(32);
    expect(toHex(agreementKeyStatementBytes(base.distributor, key))).not.toBe(toHex(agreementKeyStatementBytes(SigningKey.generate().principal, key)));
  });
});
