import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { BlobFormat, BlobIntegrityError, ciphertextSize, decryptBlobChunks, encryptBlobChunks, generateBlobKey, openChunk, sealChunk } from "./blobs-format.js";

async function collect(it: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const x of it) out.push(x);
  return out;
}
async function* from(...parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield await Promise.resolve(p);
}
const cat = (parts: Uint8Array[]): Buffer => Buffer.concat(parts);
const idOf = (parts: Uint8Array[]): string => createHash("sha256").update(cat(parts)).digest("hex");

describe("blob format v1", () => {
  it.each([0, 1, BlobFormat.plainChunkBytes, BlobFormat.plainChunkBytes + 1, 3 * BlobFormat.plainChunkBytes])("a %i-byte plaintext round-trips with the predicted ciphertext size", async (n) => {
    const key = generateBlobKey();
    const plain = new Uint8Array(n).map((_, i) => i % 251);
    const sealed = await collect(encryptBlobChunks(key, from(plain.subarray(0, 7), plain.subarray(7))));
    expect(cat(sealed).byteLength).toBe(ciphertextSize(n));
    const back = await collect(decryptBlobChunks(key, idOf(sealed), ciphertextSize(n), from(cat(sealed))));
    expect(cat(back).equals(Buffer.from(plain))).toBe(true);
  });

  it("the same key and plaintext give the same ciphertext (the upload's second pass relies on it)", async () => {
    const key = generateBlobKey();
    const plain = new Uint8Array(100_000).fill(3);
    expect(cat(await collect(encryptBlobChunks(key, from(plain))))).toEqual(cat(await collect(encryptBlobChunks(key, from(plain)))));
  });

  it("swapped chunks, a chunk opened at another index, or a non-final chunk presented as final all fail authentication", async () => {
    const key = generateBlobKey();
    const sealed = await collect(encryptBlobChunks(key, from(new Uint8Array(3 * BlobFormat.plainChunkBytes))));
    const [a, b, c] = sealed;
    if (a === undefined || b === undefined || c === undefined) throw new Error("three chunks expected");
    expect(() => openChunk(key, 1, false, a)).toThrow(BlobIntegrityError);
    expect(() => openChunk(key, 1, true, b)).toThrow(BlobIntegrityError);
    expect(openChunk(key, 2, true, c).byteLength).toBe(BlobFormat.plainChunkBytes);
    const swapped = [a, c, b];
    await expect(collect(decryptBlobChunks(key, idOf(swapped), ciphertextSize(3 * BlobFormat.plainChunkBytes), from(...swapped)))).rejects.toBeInstanceOf(BlobIntegrityError);
  });

  it("truncation at a chunk boundary is detected even when the id and size are those of the truncated ciphertext", async () => {
    const key = generateBlobKey();
    const sealed = await collect(encryptBlobChunks(key, from(new Uint8Array(2 * BlobFormat.plainChunkBytes + 5))));
    const truncated = sealed.slice(0, 2);
    await expect(collect(decryptBlobChunks(key, idOf(truncated), cat(truncated).byteLength, from(...truncated)))).rejects.toBeInstanceOf(BlobIntegrityError);
  });

  it("authentic chunks under a different blob id fail the final hash check", async () => {
    const key = generateBlobKey();
    const sealed = await collect(encryptBlobChunks(key, from(new Uint8Array(10))));
    await expect(collect(decryptBlobChunks(key, "0".repeat(64), cat(sealed).byteLength, from(...sealed)))).rejects.toThrow(/does not hash/);
    expect(sealChunk(key, 0, true, new Uint8Array(0)).byteLength).toBe(16);
  });
});
