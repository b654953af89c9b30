import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { Blake3Key } from "./blake3-key.js";
import { randomBytes, toHex, utf8 } from "./encoding.js";

// The BLAKE3 team's published test vectors: input i is bytes 0, 1, ..., 250,
// 0, 1, ... of that length; first 64 bytes of each extended output (1,025
// bytes is past one chunk, so it checks the fallback).
const OFFICIAL = {
  key: "whats the Elvish word for friend",
  context: "BLAKE3 2019-12-27 16:29:52 test vectors context",
  cases: [
    {
      inputLen: 0,
      keyedHash: "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26b18171a2f22a4b94822c701f107153dba24918c4bae4d2945c20ece13387627d",
      deriveKey: "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d905630c8be290dfcf3e6842f13bddd573c098c3f17361f1f206b8cad9d088aa4",
    },
    {
      inputLen: 1,
      keyedHash: "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b6568c0490609413006fbd428eb3fd14e7756d90f73a4725fad147f7bf70fd61c",
      deriveKey: "b3e2e340a117a499c6cf2398a19ee0d29cca2bb7404c73063382693bf66cb06c5827b91bf889b6b97c5477f535361caefca0b5d8c4746441c576171119331589",
    },
    {
      inputLen: 1023,
      keyedHash: "c951ecdf03288d0fcc96ee3413563d8a6d3589547f2c2fb36d9786470f1b9d6e890316d2e6d8b8c25b0a5b2180f94fb1a158ef508c3cde45e2966bd796a696d3",
      deriveKey: "74a16c1c3d44368a86e1ca6df64be6a2f64cce8f09220787450722d85725dea59c413264404661e9e4d955409dfe4ad3aa487871bcd454ed12abfe2c2b1eb775",
    },
    {
      inputLen: 1024,
      keyedHash: "75c46f6f3d9eb4f55ecaaee480db732e6c2105546f1e675003687c31719c7ba4a78bc838c72852d4f49c864acb7adafe2478e824afe51c8919d06168414c265f",
      deriveKey: "7356cd7720d5b66b6d0697eb3177d9f8d73a4a5c5e968896eb6a6896843027066c23b601d3ddfb391e90d5c8eccdef4ae2a264bce9e612ba15e2bc9d654af148",
    },
    {
      inputLen: 1025,
      keyedHash: "357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69362396b77fdc0d2634a552970843722066c3c15902ae5097e00ff53f1e116f1c",
      deriveKey: "effaa245f065fbf82ac186839a249707c3bddf6d3fdda22d1b95a3c970379bcb5d31013a167509e9066273ab6e2123bc835b408b067d88f96addb550d96b6852",
    },
  ],
} as const;

const officialInput = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => i % 251);

describe("Blake3Key", () => {
  const keyed = Blake3Key.keyed(utf8(OFFICIAL.key));
  const derive = Blake3Key.deriveKey(OFFICIAL.context);

  for (const c of OFFICIAL.cases) {
    it(`gives the official keyed_hash and derive_key answers for ${c.inputLen} input bytes (32 and 64 output bytes)`, () => {
      const input = officialInput(c.inputLen);
      expect(toHex(keyed.hash(input, 64))).toBe(c.keyedHash);
      expect(toHex(derive.hash(input, 64))).toBe(c.deriveKey);
      expect(toHex(keyed.hash(input))).toBe(c.keyedHash.slice(0, 64));
      expect(toHex(derive.hash(input))).toBe(c.deriveKey.slice(0, 64));
    });
  }

  it("matches one-shot @noble/hashes for every input length up to one chunk and past it, in both modes, at every output length used, hash after hash", () => {
    const key = randomBytes(32);
    const context = "unibus 2026 blake3-key test v1";
    const k = Blake3Key.keyed(key);
    const d = Blake3Key.deriveKey(context);
    const mismatches: string[] = [];
    for (let n = 0; n <= 1_024 + 70; n++) {
      const data = randomBytes(n);
      for (const outLen of [8, 16, 32, 33, 64, 65]) {
        if (toHex(k.hash(data, outLen)) !== toHex(nobleBlake3(data, { key, dkLen: outLen }))) mismatches.push(`keyed ${n}/${outLen}`);
        if (toHex(d.hash(data, outLen)) !== toHex(nobleBlake3(data, { context: utf8(context), dkLen: outLen }))) mismatches.push(`derive ${n}/${outLen}`);
      }
    }
    expect(mismatches).toEqual([]);
  });

  it("matches @noble past one output block on inputs of several chunks, the case blake3-jit's own finalize gets wrong", () => {
    const key = randomBytes(32);
    const context = "unibus 2026 blake3-key test v1";
    const k = Blake3Key.keyed(key);
    const d = Blake3Key.deriveKey(context);
    const mismatches: string[] = [];
    for (const n of [1_025, 2_048, 2_049, 3_073, 4_096, 5_000]) {
      const data = randomBytes(n);
      for (const outLen of [63, 64, 65, 128, 200]) {
        if (toHex(k.hash(data, outLen)) !== toHex(nobleBlake3(data, { key, dkLen: outLen }))) mismatches.push(`keyed ${n}/${outLen}`);
        if (toHex(d.hash(data, outLen)) !== toHex(nobleBlake3(data, { context: utf8(context), dkLen: outLen }))) mismatches.push(`derive ${n}/${outLen}`);
      }
    }
    expect(mismatches).toEqual([]);
  });

  it("hands out a fresh array per hash: the next hash does not overwrite an earlier answer", () => {
    const first = keyed.hash(utf8("first"));
    const copy = toHex(first);
    keyed.hash(utf8("second"));
    derive.hash(utf8("third"), 16);
    expect(toHex(first)).toBe(copy);
  });

  it("reads a message that sits inside a larger buffer at an odd offset", () => {
    const backing = randomBytes(400);
    const view = backing.subarray(3, 3 + 301);
    expect(toHex(keyed.hash(view))).toBe(toHex(nobleBlake3(Uint8Array.from(view), { key: utf8(OFFICIAL.key) })));
  });

  it("keeps its own copy of the key: changing the caller's bytes afterwards changes nothing", () => {
    const key = randomBytes(32);
    const k = Blake3Key.keyed(key);
    const before = toHex(k.hash(utf8("message")));
    key.fill(0);
    expect(toHex(k.hash(utf8("message")))).toBe(before);
  });

  it("refuses a key that is not 32 bytes and a non-positive output length", () => {
    expect(() => Blake3Key.keyed(randomBytes(31))).toThrow(RangeError);
    expect(() => Blake3Key.keyed(randomBytes(33))).toThrow(RangeError);
    expect(() => keyed.hash(new Uint8Array(1), 0)).toThrow(RangeError);
    expect(() => keyed.hash(new Uint8Array(1), 1.5)).toThrow(RangeError);
  });

  it("never shows its key material when logged or serialised", () => {
    const key = randomBytes(32);
    const k = Blake3Key.keyed(key);
    const shown = `${JSON.stringify({ k })} ${inspect(k)} ${inspect({ nested: k }, { showHidden: true })}`;
    expect(shown).not.toContain(toHex(key));
    expect(shown).toContain("keyed");
  });
});
