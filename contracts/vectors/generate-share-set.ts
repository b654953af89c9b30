/**
 * Regenerates share-set.json: the agreement-key statement, share-set leaves,
 * Merkle root and proofs, and the epoch statement (contracts/specs/room-keys.md),
 * written from the spec with @noble/* only, never from @unibus/sdk, so the
 * SDK's share-set code is checked against something it did not produce.
 * contracts/vectors/check.py recomputes all of it a third time in Python.
 *
 * Run: npx tsx contracts/vectors/generate-share-set.ts
 */
import * as ed from "@noble/ed25519";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { fromSeed, Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

ed.hashes.sha512 = sha512;
const seq = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
const principalOf = (seed: Uint8Array): string => fromSeed(Codec.encodeSeed(Prefix.User, seed)).getPublicKey();

const MARKER = Uint8Array.of(0xff);
function F(s: string): Uint8Array {
  const b = utf8ToBytes(s);
  return concatBytes(Uint8Array.of(b.length >> 8, b.length & 0xff), b);
}
function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}
const leaf = (principal: string, sealed: Uint8Array | undefined): Uint8Array =>
  sha256(concatBytes(Uint8Array.of(0x00), F(principal), sealed === undefined ? Uint8Array.of(0) : concatBytes(Uint8Array.of(1), sha256(sealed))));
const node = (l: Uint8Array, r: Uint8Array): Uint8Array => sha256(concatBytes(Uint8Array.of(0x01), l, r));

/** Every level of the tree, leaves first; an odd last node is promoted unchanged. */
function levels(leaves: Uint8Array[]): Uint8Array[][] {
  const out = [leaves];
  while (out.at(-1)!.length > 1) {
    const prev = out.at(-1)!;
    const next: Uint8Array[] = [];
    for (let i = 0; i < prev.length; i += 2) next.push(i + 1 < prev.length ? node(prev[i]!, prev[i + 1]!) : prev[i]!);
    out.push(next);
  }
  return out;
}
function proof(tree: Uint8Array[][], index: number): string[] {
  const p: string[] = [];
  let i = index;
  for (const level of tree.slice(0, -1)) {
    const sib = level[i ^ 1];
    if (sib !== undefined) p.push(bytesToHex(sib));
    i >>= 1;
  }
  return p;
}

const agreementCases = [1, 2].map((k) => {
  const seed = seq(32, 10 * k);
  const principal = principalOf(seed);
  const agreementKey = seq(32, 0x70 + k);
  const statement = concatBytes(MARKER, F("unibus-agreement-key-v1"), F(principal), agreementKey);
  return { seed: bytesToHex(seed), principal, agreementKey: bytesToHex(agreementKey), statement: bytesToHex(statement), signature: bytesToHex(ed.sign(statement, seed)) };
});

const distributorSeed = seq(32, 0xc0);
const distributor = principalOf(distributorSeed);
const setCases = [1, 2, 3, 5, 7].map((n, k) => {
  const roomId = `room-${n}`;
  const epoch = 1 + k * 1000;
  const members = Array.from({ length: n }, (_, i) => principalOf(seq(32, 0x20 + i)))
    .sort()
    .map((principal, i) => ({ principal, ...(i % 3 === 2 ? {} : { sealedShare: bytesToHex(seq(81, i * 7 + n)) }) }));
  const leaves = members.map((m) => leaf(m.principal, m.sealedShare === undefined ? undefined : Uint8Array.from(Buffer.from(m.sealedShare, "hex"))));
  const tree = levels(leaves);
  const root = tree.at(-1)![0]!;
  // The membership-log position the set covers: its hash and the recipients' hash (sorted principals joined by "\n").
  const logSeq = 3 * k + n;
  const logHead = sha256(concatBytes(utf8ToBytes("log-head"), u64(logSeq)));
  const recipients = sha256(utf8ToBytes(members.map((m) => m.principal).join("\n")));
  const statement = concatBytes(MARKER, F("unibus-room-epoch-v1"), F(roomId), u64(epoch), F(distributor), u64(n), root, u64(logSeq), logHead, recipients);
  return {
    roomId,
    epoch,
    logSeq,
    logHead: bytesToHex(logHead),
    recipients: bytesToHex(recipients),
    members,
    leaves: leaves.map(bytesToHex),
    root: bytesToHex(root),
    proofs: members.map((_, i) => proof(tree, i)),
    statement: bytesToHex(statement),
    signature: bytesToHex(ed.sign(statement, distributorSeed)),
  };
});

writeFileSync(
  fileURLToPath(new URL("./share-set.json", import.meta.url)),
  `${JSON.stringify(
    {
      description:
        "Room-key share sets (contracts/specs/room-keys.md). F(s) = u16be(len) || utf8(s). agreement statement = 0xFF || F('unibus-agreement-key-v1') || F(principal) || key(32). leaf = sha256(0x00 || F(principal) || 0x00) without a share, sha256(0x00 || F(principal) || 0x01 || sha256(sealedShare)) with one; node = sha256(0x01 || left || right); an odd last node is promoted. epoch statement = 0xFF || F('unibus-room-epoch-v1') || F(roomId) || u64be(epoch) || F(distributor) || u64be(n) || root || u64be(logSeq) || logHead(32) || recipients(32), recipients = sha256(sorted principals joined by '\\n'). proofs[i] = sibling hashes leaf to root. Signatures Ed25519 over the statement. Hex.",
      generatedBy: "contracts/vectors/generate-share-set.ts (@noble/ed25519, @noble/hashes, @nats-io/nkeys)",
      agreement: agreementCases,
      distributorSeed: bytesToHex(distributorSeed),
      distributor,
      shareSets: setCases,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote share-set.json (${agreementCases.length} agreement, ${setCases.length} share sets)`);
