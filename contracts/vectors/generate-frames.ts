/**
 * Regenerates contracts/vectors/frames.json (contracts/specs/frames.md) from
 * the portable references only (@noble/*), never from @unibus/sdk, so the
 * vectors independently check the SDK's node:crypto path.
 *
 * Run: npx tsx contracts/vectors/generate-frames.ts
 */
import * as ed from "@noble/ed25519";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

ed.hashes.sha512 = sha512;
const seq = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function frame(c: { version: 1 | 2; roomId: string; epoch: number; seed: Uint8Array; counter: number; messages: Uint8Array[]; key: Uint8Array; nonce: Uint8Array }) {
  const room = utf8ToBytes(c.roomId);
  const pub = ed.getPublicKey(c.seed);
  const ctr = new Uint8Array(8);
  new DataView(ctr.buffer).setBigUint64(0, BigInt(c.counter));
  const count = new Uint8Array(2);
  new DataView(count.buffer).setUint16(0, c.messages.length);
  const header = concatBytes(Uint8Array.of(c.version, room.length), room, u32(c.epoch), pub, ctr, count, c.nonce);
  const plaintext = concatBytes(...c.messages.flatMap((m) => [u32(m.length), m]));
  const ciphertext = xchacha20poly1305(c.key, c.nonce, header).encrypt(plaintext);
  // v2 signs SHA-256 of the body; v1 signed the body itself.
  const signed =
    c.version === 2
      ? concatBytes(Uint8Array.of(0xff), utf8ToBytes("unibus-room-frame-v2"), header, sha256(ciphertext))
      : concatBytes(Uint8Array.of(0xff), utf8ToBytes("unibus-room-frame-v1"), header, ciphertext);
  const signature = ed.sign(signed, c.seed);
  return { header, plaintext, ciphertext, signature, frame: concatBytes(header, ciphertext, signature), publicKey: pub };
}

const inputs: (Parameters<typeof frame>[0] & { name: string })[] = [
  { version: 1, name: "one message", roomId: "ops", epoch: 0, seed: seq(32, 1), counter: 1_764_000_000_000_000, messages: [utf8ToBytes("hello, room")], key: seq(32, 0x40), nonce: seq(24, 0x80) },
  {
    version: 1,
    name: "coalesced batch of three, one empty",
    roomId: "team-42_x",
    epoch: 7,
    seed: seq(32, 2),
    counter: 9_007_199_254_740_000,
    messages: [utf8ToBytes('{"n":1}'), new Uint8Array(0), seq(300)],
    key: seq(32, 0x60),
    nonce: seq(24, 0xa0),
  },
  { version: 2, name: "v2 one message", roomId: "ops", epoch: 0, seed: seq(32, 1), counter: 1_764_000_000_000_000, messages: [utf8ToBytes("hello, room")], key: seq(32, 0x40), nonce: seq(24, 0x80) },
  {
    version: 2,
    name: "v2 coalesced batch of 40 messages, one empty",
    roomId: "team-42_x",
    epoch: 9,
    seed: seq(32, 3),
    counter: 1_764_000_000_123_456,
    messages: Array.from({ length: 40 }, (_, i) => (i === 17 ? new Uint8Array(0) : seq(1 + i * 13, i))),
    key: seq(32, 0x70),
    nonce: seq(24, 0xb0),
  },
];

const cases = inputs.map((c) => {
  const f = frame(c);
  return {
    name: c.name,
    version: c.version,
    roomId: c.roomId,
    epoch: c.epoch,
    senderSeed: bytesToHex(c.seed),
    senderPublicKey: bytesToHex(f.publicKey),
    counter: c.counter,
    messages: c.messages.map(bytesToHex),
    key: bytesToHex(c.key),
    nonce: bytesToHex(c.nonce),
    header: bytesToHex(f.header),
    plaintext: bytesToHex(f.plaintext),
    bodyDigest: bytesToHex(sha256(f.ciphertext)),
    frame: bytesToHex(f.frame),
  };
});

writeFileSync(
  fileURLToPath(new URL("./frames.json", import.meta.url)),
  `${JSON.stringify(
    {
      description:
        "Room message frames (contracts/specs/frames.md). frame = header || ciphertext || signature, ciphertext = XChaCha20-Poly1305(key, nonce, plaintext, AD=header); v2 signature = Ed25519(sender, 0xFF || 'unibus-room-frame-v2' || header || SHA-256(ciphertext)) (bodyDigest), v1 signature = Ed25519(sender, 0xFF || 'unibus-room-frame-v1' || header || ciphertext). Hex.",
      generatedBy: "contracts/vectors/generate-frames.ts (@noble/ciphers, @noble/ed25519, @noble/hashes)",
      cases,
    },
    null,
    2,
  )}\n`,
);
