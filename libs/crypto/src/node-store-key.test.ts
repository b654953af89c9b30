import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { fromHex } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { nodeStoreKey } from "./node-store-key.js";
import { randomBytes } from "./encoding.js";

interface NodeStoreKeyVectors {
  context: string;
  cases: { name: string; nuk: string; cuk: string; storeKey: string }[];
}
const vectors = JSON.parse(readFileSync(new URL("../../../contracts/vectors/node-store-key.json", import.meta.url), "utf8")) as NodeStoreKeyVectors;

describe("nodeStoreKey", () => {
  it.each(vectors.cases)("matches the frozen vector: $name", (c) => {
    expect(nodeStoreKey(fromHex(c.nuk), fromHex(c.cuk))).toBe(c.storeKey);
  });

  it("is in the form nats-server reads from $UNIBUS_JS_KEY: a letter, then letters and digits", () => {
    expect(nodeStoreKey(randomBytes(32), randomBytes(32))).toMatch(/^K[0-9a-f]{64}$/);
  });

  it("changes when either half changes: neither half alone determines it", () => {
    const nuk = randomBytes(32);
    const cuk = randomBytes(32);
    const key = nodeStoreKey(nuk, cuk);
    const otherNuk = Uint8Array.from(nuk);
    otherNuk[31]! ^= 1;
    const otherCuk = Uint8Array.from(cuk);
    otherCuk[0]! ^= 0x80;
    expect(nodeStoreKey(otherNuk, cuk)).not.toBe(key);
    expect(nodeStoreKey(nuk, otherCuk)).not.toBe(key);
    expect(nodeStoreKey(nuk, cuk)).toBe(key);
    // Neither half is the key, and the key is not a hash of either half alone under the same context.
    expect(key).not.toContain(Buffer.from(nuk).toString("hex"));
    expect(key).not.toContain(Buffer.from(cuk).toString("hex"));
  });

  it("refuses halves that are not 32 bytes, and equal halves (an all-zero mix chosen by neither secret)", () => {
    expect(() => nodeStoreKey(randomBytes(31), randomBytes(32))).toThrow(InvalidKeyError);
    expect(() => nodeStoreKey(randomBytes(32), randomBytes(33))).toThrow(InvalidKeyError);
    const same = randomBytes(32);
    expect(() => nodeStoreKey(same, Uint8Array.from(same))).toThrow(/equal/);
  });

  it("leaves the caller's keys untouched", () => {
    const nuk = randomBytes(32);
    const cuk = randomBytes(32);
    const copies = [Uint8Array.from(nuk), Uint8Array.from(cuk)];
    nodeStoreKey(nuk, cuk);
    expect([nuk, cuk]).toEqual(copies);
  });
});
