/**
 * Regenerates contracts/vectors/node-store-key.json
 * (contracts/specs/node-store-key.md) from the portable BLAKE3 reference
 * (@noble/hashes) and the derivation written here from the spec, never from
 * @unibus/crypto, so the vectors independently check it.
 *
 * Run: npx tsx contracts/vectors/generate-node-store-key.ts
 */
import { blake3 } from "@noble/hashes/blake3.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const context = "unibus 2026-12-04 node store key v1";
const seq = (n: number, start: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);

function storeKey(nuk: Uint8Array, cuk: Uint8Array): string {
  const mixed = nuk.map((b, i) => b ^ cuk[i]!);
  return `K${bytesToHex(blake3(mixed, { context: utf8ToBytes(context) }))}`;
}

const cases = [
  { name: "counting halves", nuk: seq(32, 0x00), cuk: seq(32, 0x80) },
  { name: "same NUK, another CUK", nuk: seq(32, 0x00), cuk: seq(32, 0x40) },
  { name: "another NUK, same CUK", nuk: seq(32, 0x20), cuk: seq(32, 0x80) },
].map((c) => ({ name: c.name, nuk: bytesToHex(c.nuk), cuk: bytesToHex(c.cuk), storeKey: storeKey(c.nuk, c.cuk) }));

const out = { description: "Per-node JetStream key: 'K' + hex(BLAKE3 derive_key(context, NUK xor CUK)); see contracts/specs/node-store-key.md", context, cases };
writeFileSync(fileURLToPath(new URL("./node-store-key.json", import.meta.url)), `${JSON.stringify(out, null, 2)}\n`);
