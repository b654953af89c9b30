/**
 * Regenerates contracts/vectors/membership-log.json from the portable
 * reference implementations only (@noble/*, @nats-io/nkeys), never from
 * @unibus/sdk, so the vectors independently check its log encoding, entry
 * hashes and room-id derivation (contracts/specs/membership-log.md).
 *
 * Run: npx tsx contracts/vectors/generate-membership-log.ts
 */
import * as ed from "@noble/ed25519";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { fromSeed, Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

ed.hashes.sha512 = sha512;
const dir = fileURLToPath(new URL(".", import.meta.url));
const enc = new TextEncoder();

const b64u = (b: Uint8Array): string => Buffer.from(b).toString("base64url");
const concat = (parts: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts));
const u32 = (n: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};
const u64 = (n: number): Uint8Array => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
};
const field = (v: Uint8Array | string): Uint8Array => {
  const b = typeof v === "string" ? enc.encode(v) : v;
  return concat([u32(b.byteLength), b]);
};

function user(seedByte: number): { seed: Uint8Array; principal: string } {
  const seed = new Uint8Array(32).fill(seedByte);
  return { seed, principal: fromSeed(Codec.encodeSeed(Prefix.User, seed)).getPublicKey() };
}

/** The envelope signature (contracts/specs/identity-and-envelope.md): over 0xFF ‖ the signing bytes, the statement marker. */
function signEnvelope(seed: Uint8Array, subject: string, timestamp: number, nonce: string, body: Uint8Array): string {
  const domain = enc.encode("unibus-envelope-v1");
  const s = enc.encode(subject);
  const n = enc.encode(nonce);
  const bytes = concat([Uint8Array.of(0xff), Uint8Array.of(domain.byteLength), domain, u32(s.byteLength), s, u64(timestamp), Uint8Array.of(n.byteLength), n, sha256(body)]);
  return b64u(ed.sign(bytes, seed));
}

interface Entry {
  seq: number;
  prev: string;
  roomId: string;
  op: string;
  subject: string;
  body: string;
  signer: string;
  timestamp: number;
  nonce: string;
  signature: string;
  target: string;
  role?: string;
  at: string;
}

function entryHash(e: Entry): Uint8Array {
  return sha256(
    concat([
      field("unibus-room-log-v1"),
      u64(e.seq),
      Buffer.from(e.prev, "base64url"),
      field(e.roomId),
      field(e.op),
      field(e.subject),
      field(Buffer.from(e.body, "base64url")),
      field(e.signer),
      u64(e.timestamp),
      field(e.nonce),
      field(e.signature),
      field(e.target),
      field(e.role ?? ""),
      field(""),
    ]),
  );
}

const owner = user(0x11);
const bob = user(0x22);
const subjects = {
  create: "unibus.v1.membership.rooms.create",
  invite: "unibus.v1.membership.rooms.invite",
  remove: "unibus.v1.membership.rooms.remove",
  leave: "unibus.v1.membership.rooms.leave",
} as const;
const entries: Entry[] = [];
let roomId = "";
const push = (actor: { seed: Uint8Array; principal: string }, op: keyof typeof subjects, body: object, target: string, role?: string): void => {
  const seq = entries.length;
  const bytes = enc.encode(JSON.stringify(body));
  const timestamp = 1_764_800_000_000 + seq * 1000;
  const nonce = bytesToHex(new Uint8Array(16).fill(seq + 1));
  const signature = signEnvelope(actor.seed, subjects[op], timestamp, nonce, bytes);
  if (op === "create") roomId = bytesToHex(sha256(concat([field("unibus-room-id-v1"), Buffer.from(signature, "base64url")]))).slice(0, 24);
  const prev = seq === 0 ? new Uint8Array(32) : entryHash(entries[seq - 1]!);
  entries.push({ seq, prev: b64u(prev), roomId, op, subject: subjects[op], body: b64u(bytes), signer: actor.principal, timestamp, nonce, signature, target, ...(role === undefined ? {} : { role }), at: "2026-12-04T00:00:00.000Z" });
};
push(owner, "create", { name: "vectors", policy: { persist: false, encrypt: true } }, owner.principal, "owner");
push(owner, "invite", { roomId, principal: bob.principal }, bob.principal, "member");
push(owner, "invite", { roomId, principal: bob.principal, role: "owner" }, bob.principal, "owner");
push(bob, "remove", { roomId, principal: owner.principal }, owner.principal);
push(bob, "leave", { roomId }, bob.principal);

writeFileSync(
  `${dir}membership-log.json`,
  `${JSON.stringify(
    {
      description:
        "Room membership log v1 (contracts/specs/membership-log.md). entryHash = sha256(field('unibus-room-log-v1') || u64be(seq) || prev(32) || field(roomId) || field(op) || field(subject) || field(body) || field(signer) || u64be(timestamp) || field(nonce) || field(signature) || field(target) || field(role or '') || field(actorRole or '')), field = u32be(len) || bytes; roomId = hex(sha256(field('unibus-room-id-v1') || signature bytes of entry 0))[0..24]. Each signature is the actor's envelope signature (Ed25519 over 0xFF || the envelope signing bytes of subject, timestamp, nonce, body). Entries are as served by rooms.log; hashes hex.",
      generatedBy: "contracts/vectors/generate-membership-log.ts (@noble/ed25519, @noble/hashes, @nats-io/nkeys)",
      roomId,
      entries,
      hashes: entries.map((e) => bytesToHex(entryHash(e))),
      membersAfter: [[owner.principal], [bob.principal, owner.principal].sort(), [bob.principal, owner.principal].sort(), [bob.principal], []],
    },
    null,
    2,
  )}\n`,
);
