/**
 * Regenerates contracts/vectors/replica-lifecycle.json
 * (contracts/specs/replica-lifecycle.md) from the portable references only
 * (@noble/*, @nats-io/nkeys) and byte layouts written here from the spec,
 * never from @unibus/crypto or @unibus/sdk, so the vectors check them.
 *
 * Run: npx tsx contracts/vectors/generate-replica-lifecycle.ts
 */
import * as ed from "@noble/ed25519";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { fromPublic, Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

ed.hashes.sha512 = sha512;
const seq = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
const derive = (context: string, material: Uint8Array, dkLen = 32): Uint8Array => blake3(material, { context: utf8ToBytes(context), dkLen });
const b64url = (b: Uint8Array): string => Buffer.from(b).toString("base64url");
const hex = bytesToHex;

const ctx = {
  history: "unibus 2026-12-04 replica history signing v1",
  agreement: "unibus 2026-12-04 replica cluster agreement v1",
  wrap: "unibus 2026-12-04 replica cuk wrap v1",
  check: "unibus 2026-12-04 replica recovery check v1",
};
const labels = {
  latest: "unibus-replica-latest-v1",
  nodeAgreement: "unibus-replica-node-agreement-v1",
  wrap: "unibus-replica-cuk-wrap-v1",
  entry: "unibus-replica-history-v1",
};

/** u32 BE length-prefixed field. */
function field(b: Uint8Array | string): Uint8Array {
  const bytes = typeof b === "string" ? utf8ToBytes(b) : b;
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, bytes.length);
  return concatBytes(len, bytes);
}
function u64(n: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}
const MARK = Uint8Array.of(0xff);

/** RFC 4648 base32 without padding. */
function base32(b: Uint8Array): string {
  const A = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  let out = "";
  for (const x of b) {
    value = (value << 8) | x;
    bits += 8;
    while (bits >= 5) {
      out += A[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += A[(value << (5 - bits)) & 31];
  return out;
}

const principalOf = (pub: Uint8Array): string => fromPublic(new TextDecoder().decode(Codec.encode(Prefix.User, pub))).getPublicKey();

const seed = seq(32, 7);
const historySeed = derive(ctx.history, seed);
const historyKey = ed.getPublicKey(historySeed);
const agreementSecret = derive(ctx.agreement, seed);
const agreementKey = x25519.getPublicKey(agreementSecret);
const wrapKey = derive(ctx.wrap, seed);
const check = derive(ctx.check, seed, 4);
const recoverySecret = `UBRS-${(base32(concatBytes(seed, check)).match(/.{1,6}/g) ?? []).join("-")}`;

// A genesis entry: the admin's signed init request (envelope over the body hash) and the effect.
const adminSeed = seq(32, 0x21);
const adminPub = ed.getPublicKey(adminSeed);
const clusterName = "prod";
const clusterId = derive("unibus 2026 replica-handshake cluster-id v1", utf8ToBytes(clusterName), 16);
const subject = "unibus.v1.replica.init";
const body = utf8ToBytes('{"clusterName":"prod"}');
const bodyHash = sha256(body);
const timestamp = 1_790_000_000_000;
const nonce = "0123456789abcdef0123456789abcdef";
const envelopeBytes = concatBytes(MARK, Uint8Array.of(18), utf8ToBytes("unibus-envelope-v1"), field(subject), u64(timestamp), Uint8Array.of(32), utf8ToBytes(nonce), bodyHash);
const envelopeSignature = ed.sign(envelopeBytes, adminSeed);
const gateway = principalOf(ed.getPublicKey(seq(32, 0x31)));
const effect = JSON.stringify({ clusterName, clusterId: hex(clusterId), historyKey: hex(historyKey), agreementKey: hex(agreementKey), gateways: [gateway] });
const prev = new Uint8Array(32);
const entryHashInput = concatBytes(
  field(labels.entry),
  u64(0),
  prev,
  field("genesis"),
  field(subject),
  bodyHash,
  field(principalOf(adminPub)),
  u64(timestamp),
  field(nonce),
  field(b64url(envelopeSignature)),
  field(effect),
);
const entryHash = sha256(entryHashInput);
const latestStatement = concatBytes(MARK, field(labels.latest), field(clusterId), u64(0), field(entryHash));
const latestSignature = ed.sign(latestStatement, historySeed);

// A wrapped CUK with a fixed nonce (the code draws a random one).
const cuk = seq(32, 0x90);
const wrapNonce = seq(24, 0x50);
const nodeId = "node-4";
const joinKey = principalOf(ed.getPublicKey(seq(32, 0x41)));
const wrapAad = concatBytes(field(labels.wrap), field(nodeId), field(joinKey));
const wrapped = concatBytes(wrapNonce, xchacha20poly1305(wrapKey, wrapNonce, wrapAad).encrypt(cuk));

const out = {
  description: "Replica lifecycle vectors (contracts/specs/replica-lifecycle.md): seed derivations, recovery secret, a genesis entry hash, the signed latest pointer, a wrapped CUK. Byte strings hex unless named base64url.",
  contexts: ctx,
  labels,
  seed: hex(seed),
  historyKey: hex(historyKey),
  agreementSecretKey: hex(agreementSecret),
  agreementKey: hex(agreementKey),
  wrapKey: hex(wrapKey),
  recoverySecret,
  genesis: {
    adminSeed: hex(adminSeed),
    entry: {
      seq: 0,
      prev: b64url(prev),
      type: "genesis",
      subject,
      bodyHash: b64url(bodyHash),
      signer: principalOf(adminPub),
      timestamp,
      nonce,
      signature: b64url(envelopeSignature),
      effect,
      at: "2026-09-21T00:00:00.000Z",
    },
    body: hex(body),
    entryHashInput: hex(entryHashInput),
    entryHash: hex(entryHash),
    latestStatement: hex(latestStatement),
    latest: { seq: 0, hash: b64url(entryHash), signature: b64url(latestSignature) },
  },
  wrap: { cuk: hex(cuk), nodeId, joinKey, nonce: hex(wrapNonce), aad: hex(wrapAad), wrapped: hex(wrapped) },
};
writeFileSync(fileURLToPath(new URL("./replica-lifecycle.json", import.meta.url)), `${JSON.stringify(out, null, 2)}\n`);
console.log("wrote replica-lifecycle.json");
