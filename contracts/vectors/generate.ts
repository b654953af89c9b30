/**
 * Regenerates the crypto test vectors in this folder from the portable
 * reference implementations only (@noble/*, @nats-io/nkeys), never from
 * @unibus/crypto, so the vectors are an independent check of its node:crypto
 * fast paths. Known-answer inputs/outputs from RFC 8032, RFC 7748 and
 * draft-irtf-cfrg-xchacha are asserted before anything is written.
 *
 * Run: npx tsx contracts/vectors/generate.ts
 */
import * as ed from "@noble/ed25519";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { fromSeed, Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

ed.hashes.sha512 = sha512;
const dir = fileURLToPath(new URL(".", import.meta.url));
const td = new TextDecoder();

function assertEq(actual: string, expected: string, what: string): void {
  if (actual !== expected) throw new Error(`${what}: got ${actual}, expected ${expected}`);
}
function write(name: string, data: unknown): void {
  writeFileSync(`${dir}${name}`, `${JSON.stringify(data, null, 2)}\n`);
}
function nkeyFor(prefix: Prefix, seed: Uint8Array): { seed: string; publicKey: string } {
  const encoded = Codec.encodeSeed(prefix, seed);
  return { seed: td.decode(encoded), publicKey: fromSeed(encoded).getPublicKey() };
}
const seq = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);

// --- Ed25519 + nkeys ---------------------------------------------------------
const rfc8032 = [
  {
    name: "RFC 8032 §7.1 TEST 1",
    seed: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    publicKey: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    message: "",
    signature: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
  },
  {
    name: "RFC 8032 §7.1 TEST 2",
    seed: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    publicKey: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    message: "72",
    signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
  },
];
const ed25519Cases = [
  ...rfc8032,
  { name: "unibus: 1 KiB message", seed: bytesToHex(seq(32, 1)), message: bytesToHex(seq(1024, 7)) },
].map((c) => {
  const seed = hexToBytes(c.seed);
  const publicKey = bytesToHex(ed.getPublicKey(seed));
  const signature = bytesToHex(ed.sign(hexToBytes(c.message), seed));
  if ("publicKey" in c) assertEq(publicKey, c.publicKey, `${c.name} public key`);
  if ("signature" in c) assertEq(signature, c.signature, `${c.name} signature`);
  const user = nkeyFor(Prefix.User, seed);
  const account = nkeyFor(Prefix.Account, seed);
  return {
    name: c.name,
    seed: c.seed,
    publicKey,
    message: c.message,
    signature,
    nkeyUserSeed: user.seed,
    principal: user.publicKey,
    nkeyAccountSeed: account.seed,
    nkeyAccountPublic: account.publicKey,
  };
});
const authSeed = seq(32, 100);
const authNonce = "kJh3sQbvZmCq8wT2";
const authKp = fromSeed(Codec.encodeSeed(Prefix.User, authSeed));
write("ed25519.json", {
  description:
    "Ed25519 (RFC 8032) signatures and nkey encodings. Hex unless noted. principal = user nkey (U…) of publicKey; nkeyUserSeed = SU… seed. nkeyAuth: the nats connect signature, standard base64 (padded) of Ed25519(utf8(nonce)), as nats.js sends it.",
  generatedBy: "contracts/vectors/generate.ts (@noble/ed25519, @nats-io/nkeys)",
  cases: ed25519Cases,
  nkeyAuth: {
    nkeyUserSeed: td.decode(Codec.encodeSeed(Prefix.User, authSeed)),
    nonce: authNonce,
    nkey: authKp.getPublicKey(),
    sig: Buffer.from(authKp.sign(utf8ToBytes(authNonce))).toString("base64"),
  },
});

// --- X25519 -------------------------------------------------------------------
const alice = hexToBytes("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
const bob = hexToBytes("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
assertEq(bytesToHex(x25519.getPublicKey(alice)), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", "RFC 7748 alice");
assertEq(bytesToHex(x25519.getPublicKey(bob)), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", "RFC 7748 bob");
const xCase = (name: string, secretKey: Uint8Array, peerSecret: Uint8Array) => ({
  name,
  secretKey: bytesToHex(secretKey),
  publicKey: bytesToHex(x25519.getPublicKey(secretKey)),
  peerPublicKey: bytesToHex(x25519.getPublicKey(peerSecret)),
  shared: bytesToHex(x25519.getSharedSecret(secretKey, x25519.getPublicKey(peerSecret))),
});
write("x25519.json", {
  description: "X25519 (RFC 7748). secretKey is the raw (unclamped) 32-byte scalar; shared = X25519(secretKey, peerPublicKey). Hex.",
  generatedBy: "contracts/vectors/generate.ts (@noble/curves)",
  cases: [xCase("RFC 7748 §6.1 alice", alice, bob), xCase("RFC 7748 §6.1 bob", bob, alice), xCase("unibus: sequential keys", seq(32, 200), seq(32, 50))],
});

// --- XChaCha20-Poly1305 -------------------------------------------------------------
const aeadCase = (name: string, key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad?: Uint8Array) => ({
  name,
  key: bytesToHex(key),
  nonce: bytesToHex(nonce),
  plaintext: bytesToHex(plaintext),
  ...(ad === undefined ? {} : { associatedData: bytesToHex(ad) }),
  ciphertext: bytesToHex(xchacha20poly1305(key, nonce, ad).encrypt(plaintext)),
});
const sunscreen = utf8ToBytes(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);
const draft = aeadCase("draft-irtf-cfrg-xchacha-03 §A.3.1", seq(32, 0x80), seq(24, 0x40), sunscreen, hexToBytes("50515253c0c1c2c3c4c5c6c7"));
assertEq(draft.ciphertext.slice(-32), "c0875924c1c7987947deafd8780acf49", "draft-irtf-cfrg-xchacha tag");
write("xchacha20poly1305.json", {
  description: "XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha). ciphertext = encrypted plaintext || 16-byte tag. Hex. associatedData absent = none.",
  generatedBy: "contracts/vectors/generate.ts (@noble/ciphers)",
  cases: [
    draft,
    aeadCase("unibus: empty plaintext, no associated data", seq(32, 1), seq(24, 9), new Uint8Array(0)),
    aeadCase("unibus: 300 bytes (spans blocks), empty associated data", seq(32, 33), seq(24, 77), seq(300, 3), new Uint8Array(0)),
  ],
});

// --- Signed request envelope (contracts/specs/identity-and-envelope.md) ---------
function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}
function u64be(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}
function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
function envelopeBytes(subject: string, timestamp: number, nonce: string, body: Uint8Array): Uint8Array {
  const domain = utf8ToBytes("unibus-envelope-v1");
  const s = utf8ToBytes(subject);
  const n = utf8ToBytes(nonce);
  return cat(Uint8Array.of(0xff, domain.length), domain, u32be(s.length), s, u64be(timestamp), Uint8Array.of(n.length), n, sha256(body));
}
const envSeed = seq(32, 42);
const envCase = (name: string, subject: string, timestamp: number, nonce: string, body: Uint8Array) => {
  const signingBytes = envelopeBytes(subject, timestamp, nonce, body);
  return {
    name,
    subject,
    body: bytesToHex(body),
    signingBytes: bytesToHex(signingBytes),
    envelope: {
      signer: nkeyFor(Prefix.User, envSeed).publicKey,
      timestamp,
      nonce,
      signature: Buffer.from(ed.sign(signingBytes, envSeed)).toString("base64url"),
    },
  };
};
write("envelope.json", {
  description:
    "Signed request envelope v1. signingBytes = u8(0xFF) (statement marker) || u8(18) 'unibus-envelope-v1' || u32be(len) utf8(subject) || u64be(timestamp ms) || u8(32) ascii(nonce) || sha256(body); signature = base64url (no padding) Ed25519(seed, signingBytes). Hex unless noted.",
  generatedBy: "contracts/vectors/generate.ts (@noble/ed25519, @noble/hashes, @nats-io/nkeys)",
  seed: bytesToHex(envSeed),
  cases: [
    envCase("JSON body", "unibus.v1.users.add", 1763900000000, "000102030405060708090a0b0c0d0e0f", utf8ToBytes('{"principal":"U…","role":"member"}')),
    envCase("empty body, unicode subject", "unibus.v1.rooms.créer", 0, "ffffffffffffffffffffffffffffffff", new Uint8Array(0)),
  ],
});

// --- Sealed box v1 (contracts/specs/sealed-box.md) -----------------------------
const SEALED_CONTEXT = "unibus 2026-11-23 sealed-box v1";
const sealCase = (name: string, recipientSecretKey: Uint8Array, ephemeralSecretKey: Uint8Array, plaintext: Uint8Array) => {
  const rpk = x25519.getPublicKey(recipientSecretKey);
  const epk = x25519.getPublicKey(ephemeralSecretKey);
  const shared = x25519.getSharedSecret(ephemeralSecretKey, rpk);
  const okm = blake3(cat(shared, epk, rpk), { context: utf8ToBytes(SEALED_CONTEXT), dkLen: 56 });
  const header = cat(Uint8Array.of(1), epk);
  const body = xchacha20poly1305(okm.subarray(0, 32), okm.subarray(32), header).encrypt(plaintext);
  return {
    name,
    recipientSecretKey: bytesToHex(recipientSecretKey),
    recipientPublicKey: bytesToHex(rpk),
    ephemeralSecretKey: bytesToHex(ephemeralSecretKey),
    plaintext: bytesToHex(plaintext),
    intermediate: { ephemeralPublicKey: bytesToHex(epk), shared: bytesToHex(shared), key: bytesToHex(okm.subarray(0, 32)), nonce: bytesToHex(okm.subarray(32)) },
    sealed: bytesToHex(cat(header, body)),
  };
};
// Many recipients, ONE ephemeral (sealed-box.md "Many recipients"): each box
// is an ordinary v1 box; only epk is shared. Keys and nonces must all differ.
const manyEsk = seq(32, 0x30);
const manyPlaintext = seq(32, 0xc0);
const manyRecipients = [seq(32, 10), alice, bob, seq(32, 0x50)].map((sk, i) => {
  const c = sealCase(`recipient ${i}`, sk, manyEsk, manyPlaintext);
  return { recipientSecretKey: c.recipientSecretKey, recipientPublicKey: c.recipientPublicKey, shared: c.intermediate.shared, key: c.intermediate.key, nonce: c.intermediate.nonce, sealed: c.sealed };
});
for (const field of ["recipientPublicKey", "shared", "key", "nonce", "sealed"] as const) {
  if (new Set(manyRecipients.map((r) => r[field])).size !== manyRecipients.length) throw new Error(`multi-recipient vectors: ${field} repeats`);
}

write("sealed-box.json", {
  description:
    "Sealed box v1: sealed = 0x01 || epk || XChaCha20-Poly1305(key, nonce, plaintext, ad = 0x01 || epk); key || nonce = BLAKE3-derive_key(context, shared || epk || rpk, 56 bytes). Hex.",
  generatedBy: "contracts/vectors/generate.ts (@noble/curves, @noble/hashes, @noble/ciphers)",
  kdfContext: SEALED_CONTEXT,
  cases: [
    sealCase("32-byte room key share", seq(32, 10), seq(32, 90), seq(32, 0xa0)),
    sealCase("empty plaintext", alice, bob, new Uint8Array(0)),
  ],
  multiRecipient: {
    description: "One plaintext sealed to several recipients with ONE ephemeral secret (sealToMany): box i = sealed box v1 to recipient i; epk shared, key/nonce distinct per recipient.",
    ephemeralSecretKey: bytesToHex(manyEsk),
    ephemeralPublicKey: bytesToHex(x25519.getPublicKey(manyEsk)),
    plaintext: bytesToHex(manyPlaintext),
    recipients: manyRecipients,
  },
});
console.log(`vectors written to ${dir}`);
