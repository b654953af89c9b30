/**
 * Regenerates contracts/vectors/replica-handshake.json
 * (contracts/specs/replica-handshake.md) from the portable references only
 * (@noble/hashes, @noble/ed25519) and an encoding written here from the spec,
 * never from @unibus/crypto, so the vectors independently check it. The
 * official BLAKE3 known answers for the empty input (hash, keyed_hash,
 * derive_key with the official test key and context) are asserted first.
 *
 * Each case also carries its four messages' bytes in the binary layout
 * (§ Messages); `rejects` and `malformed` give a reject's bytes and byte
 * strings a strict parser refuses, with the status the acceptor answers.
 *
 * Run: npx tsx contracts/vectors/generate-replica-handshake.ts
 */
import * as ed from "@noble/ed25519";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

ed.hashes.sha512 = sha512;
const seq = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
const lp = (b: Uint8Array): Uint8Array => concatBytes(Uint8Array.of(b.length), b);

function assertEq(actual: string, expected: string, what: string): void {
  if (actual !== expected) throw new Error(`${what}: got ${actual}, expected ${expected}`);
}

// Official BLAKE3 test vectors, input_len 0.
const officialKey = utf8ToBytes("whats the Elvish word for friend");
const officialContext = "BLAKE3 2019-12-27 16:29:52 test vectors context";
const officialEmpty = {
  key: bytesToHex(officialKey),
  context: officialContext,
  hash: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
  keyedHash: "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26",
  deriveKey: "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d",
};
assertEq(bytesToHex(blake3(new Uint8Array(0))), officialEmpty.hash, "BLAKE3 hash(empty)");
assertEq(bytesToHex(blake3(new Uint8Array(0), { key: officialKey })), officialEmpty.keyedHash, "BLAKE3 keyed_hash(empty)");
assertEq(bytesToHex(blake3(new Uint8Array(0), { context: utf8ToBytes(officialContext) })), officialEmpty.deriveKey, "BLAKE3 derive_key(empty)");

const ctx = {
  macKey: "unibus 2026 replica-handshake psk-mac v1",
  keyId: "unibus 2026 replica-handshake psk-id v1",
  clusterId: "unibus 2026 replica-handshake cluster-id v1",
  sessionId: "unibus 2026 replica-handshake session-id v1",
};
const derive = (context: string, material: Uint8Array, dkLen = 32): Uint8Array => blake3(material, { context: utf8ToBytes(context), dkLen });

function handshake(c: { name: string; clusterName: string; dialerId: string; acceptorId: string; psk: Uint8Array; nonceD: Uint8Array; nonceA: Uint8Array; seed: Uint8Array }) {
  const clusterId = derive(ctx.clusterId, utf8ToBytes(c.clusterName), 16);
  const macKey = derive(ctx.macKey, c.psk);
  const keyId = derive(ctx.keyId, c.psk, 8);
  const identity = ed.getPublicKey(c.seed);
  const common = concatBytes(lp(utf8ToBytes("unibus replica-handshake mac v1")), clusterId, lp(utf8ToBytes(c.dialerId)), lp(utf8ToBytes(c.acceptorId)), c.nonceD, c.nonceA);
  const macInputA = concatBytes(common, Uint8Array.of(0x01));
  const macInputD = concatBytes(common, Uint8Array.of(0x02), identity);
  const macA = blake3(macInputA, { key: macKey });
  const macD = blake3(macInputD, { key: macKey });
  const transcript = concatBytes(
    lp(utf8ToBytes("unibus replica-handshake transcript v1")),
    clusterId,
    lp(utf8ToBytes(c.dialerId)),
    lp(utf8ToBytes(c.acceptorId)),
    c.nonceD,
    c.nonceA,
    macA,
    macD,
    identity,
  );
  // Signed as 0xFF ‖ transcript: the statement marker no connect nonce can start with.
  const signature = ed.sign(concatBytes(Uint8Array.of(0xff), transcript), c.seed);
  const sessionId = derive(ctx.sessionId, transcript, 16);
  const hex = bytesToHex;
  // The binary layout (§ Messages), written from the spec: version 1 first, fixed fields, then length-prefixed ids.
  const version = Uint8Array.of(1);
  const u64 = (n: bigint): Uint8Array => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, n);
    return b;
  };
  const wire = {
    hello: hex(concatBytes(version, clusterId, keyId, c.nonceD, lp(utf8ToBytes(c.dialerId)))),
    challenge: hex(concatBytes(version, Uint8Array.of(0), c.nonceA, macA, lp(utf8ToBytes(c.acceptorId)))),
    finish: hex(concatBytes(version, clusterId, keyId, c.nonceD, c.nonceA, identity, macD, signature, lp(utf8ToBytes(c.dialerId)), lp(utf8ToBytes(c.acceptorId)))),
    finishReply: hex(concatBytes(version, Uint8Array.of(0), sessionId, u64(BigInt(SESSION_CREATED_AT)), u64(BigInt(SESSION_CREATED_AT + SESSION_TTL_MS)))),
    createdAt: SESSION_CREATED_AT,
    expiresAt: SESSION_CREATED_AT + SESSION_TTL_MS,
  };
  // The acceptor's nonce starts with its expiry, u64 big-endian Unix ms (an acceptor only checks it; the dialer treats the nonce as opaque).
  const expiry = new DataView(c.nonceA.buffer, c.nonceA.byteOffset, 8).getBigUint64(0);
  return {
    name: c.name,
    clusterName: c.clusterName,
    dialerId: c.dialerId,
    acceptorId: c.acceptorId,
    psk: hex(c.psk),
    nonceD: hex(c.nonceD),
    nonceA: hex(c.nonceA),
    nonceAExpiresAt: expiry <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(expiry) : null,
    identitySeed: hex(c.seed),
    clusterId: hex(clusterId),
    macKey: hex(macKey),
    keyId: hex(keyId),
    identity: hex(identity),
    macInputA: hex(macInputA),
    macInputD: hex(macInputD),
    macA: hex(macA),
    macD: hex(macD),
    transcript: hex(transcript),
    signature: hex(signature),
    sessionId: hex(sessionId),
    wire,
  };
}

/** The finish reply's times in the vectors: 2026-12-05T00:00:00Z and the session bucket's 10 min later. */
const SESSION_CREATED_AT = 1_796_428_800_000;
const SESSION_TTL_MS = 600_000;

const cases = [
  { name: "basic", clusterName: "prod", dialerId: "node-2", acceptorId: "gateway-1", psk: seq(32, 0x10), nonceD: seq(32, 0x40), nonceA: seq(32, 0x80), seed: seq(32, 1) },
  { name: "long psk, long ids", clusterName: "eu-west cluster ü", dialerId: "n".repeat(63), acceptorId: "gw.a_b-c", psk: seq(64, 0xa0), nonceD: new Uint8Array(32), nonceA: new Uint8Array(32).fill(0xff), seed: seq(32, 0x33) },
  // An acceptor nonce as the gateway issues it: expiry 2026-12-05T00:00:10Z, then 24 random bytes.
  { name: "nonce with expiry", clusterName: "prod", dialerId: "node-2", acceptorId: "gateway-1", psk: seq(32, 0x10), nonceD: seq(32, 0x40), nonceA: concatBytes(Uint8Array.of(0x00, 0x00, 0x01, 0xa2, 0x43, 0x80, 0x47, 0x10), seq(24, 0xc0)), seed: seq(32, 1) },
  // Swapped ids: the same values in the other slots must give other MACs.
  { name: "swapped ids", clusterName: "prod", dialerId: "gateway-1", acceptorId: "node-2", psk: seq(32, 0x10), nonceD: seq(32, 0x40), nonceA: seq(32, 0x80), seed: seq(32, 1) },
].map(handshake);

const statuses = { Ok: 0, UnknownCommand: 1, ClusterMismatch: 2, DirectionalRule: 3, AuthRequired: 4, MacMismatch: 5, Expired: 6, Malformed: 7 };
// A reject, challenge or finish reply alike: version ‖ status, nothing else.
const rejects = Object.entries(statuses)
  .filter(([, v]) => v !== 0)
  .map(([status, v]) => ({ status, bytes: bytesToHex(Uint8Array.of(1, v)) }));
// Byte strings a strict parser refuses, from the basic case's hello and finish, with the acceptor's answer.
const basic = cases[0]!;
const helloOf = (id: Uint8Array, len = id.length): string => basic.wire.hello.slice(0, 2 * 57) + bytesToHex(concatBytes(Uint8Array.of(len), id));
const malformed = [
  { what: "empty hello", message: "hello", bytes: "", status: "Malformed" },
  { what: "hello of version 2", message: "hello", bytes: `02${basic.wire.hello.slice(2)}`, status: "UnknownCommand" },
  { what: "hello of version 0", message: "hello", bytes: "00", status: "UnknownCommand" },
  { what: "hello truncated in its fixed part", message: "hello", bytes: basic.wire.hello.slice(0, 60), status: "Malformed" },
  { what: "hello truncated in its id", message: "hello", bytes: basic.wire.hello.slice(0, -2), status: "Malformed" },
  { what: "hello with a trailing byte", message: "hello", bytes: `${basic.wire.hello}00`, status: "Malformed" },
  { what: "hello with an empty id", message: "hello", bytes: helloOf(new Uint8Array(0)), status: "Malformed" },
  { what: "hello with a 64-byte id", message: "hello", bytes: helloOf(utf8ToBytes("n".repeat(64))), status: "Malformed" },
  { what: "hello with an upper-case id", message: "hello", bytes: helloOf(utf8ToBytes("Node-2")), status: "Malformed" },
  { what: "hello with an id starting with '-'", message: "hello", bytes: helloOf(utf8ToBytes("-node")), status: "Malformed" },
  { what: "hello with a non-ASCII id", message: "hello", bytes: helloOf(utf8ToBytes("nöde")), status: "Malformed" },
  { what: "hello whose id length runs past the end", message: "hello", bytes: helloOf(utf8ToBytes("node-2"), 7), status: "Malformed" },
  { what: "finish of version 2", message: "finish", bytes: `02${basic.wire.finish.slice(2)}`, status: "UnknownCommand" },
  { what: "finish truncated", message: "finish", bytes: basic.wire.finish.slice(0, -2), status: "Malformed" },
  { what: "finish with a trailing byte", message: "finish", bytes: `${basic.wire.finish}00`, status: "Malformed" },
  { what: "finish without its acceptor id", message: "finish", bytes: basic.wire.finish.slice(0, 2 * (217 + 1 + basic.dialerId.length)), status: "Malformed" },
  { what: "a hello sent as a finish", message: "finish", bytes: basic.wire.hello, status: "Malformed" },
  { what: "a finish sent as a hello", message: "hello", bytes: basic.wire.finish, status: "Malformed" },
];

const out = {
  description: "Replica PSK handshake vectors (contracts/specs/replica-handshake.md); all byte strings hex.",
  contexts: ctx,
  blake3Official: officialEmpty,
  statuses,
  cases,
  rejects,
  malformed,
};
writeFileSync(fileURLToPath(new URL("./replica-handshake.json", import.meta.url)), `${JSON.stringify(out, null, 2)}\n`);
console.log(`wrote replica-handshake.json (${cases.length} cases)`);
