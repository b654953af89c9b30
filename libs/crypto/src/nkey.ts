import { InvalidKeyError } from "./errors.js";

/**
 * nkey public-key prefixes (the first character of an encoded nkey) that a
 * {@link SigningKey} can be presented under.
 */
export const NkeyPrefix = {
  user: "U",
  account: "A",
  server: "N",
  operator: "O",
  curve: "X",
} as const;
/** One of the {@link NkeyPrefix} letters. */
export type NkeyPrefix = (typeof NkeyPrefix)[keyof typeof NkeyPrefix];

// Prefix bytes from nats-io/nkeys: the letter is the top 5 bits of the first byte.
const PREFIX_BYTE: Record<NkeyPrefix, number> = { U: 20 << 3, A: 0, N: 13 << 3, O: 14 << 3, X: 23 << 3 };
const SEED_BYTE = 18 << 3; // 'S'
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1;
    t[i] = c & 0xffff;
  }
  return t;
})();

/** CRC-16/XMODEM, as nats-io/nkeys uses for its checksum. */
function crc16(data: Uint8Array): number {
  let crc = 0;
  for (const b of data) crc = ((crc << 8) & 0xffff) ^ (CRC_TABLE[((crc >> 8) ^ b) & 0xff] ?? 0);
  return crc;
}

export function base32Encode(src: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const b of src) {
    value = ((value << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

export function base32Decode(src: string): Uint8Array | undefined {
  const out = new Uint8Array(((src.length * 5) / 8) | 0);
  let bits = 0;
  let value = 0;
  let j = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src.charCodeAt(i);
    const v = c < 128 ? (DECODE[c] ?? -1) : -1;
    if (v < 0) return undefined;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out[j++] = (value >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  return out.subarray(0, j);
}

function withChecksum(raw: Uint8Array): string {
  const buf = new Uint8Array(raw.byteLength + 2);
  buf.set(raw);
  const crc = crc16(raw);
  buf[raw.byteLength] = crc & 0xff;
  buf[raw.byteLength + 1] = crc >> 8;
  return base32Encode(buf);
}

function checkedPayload(encoded: string): Uint8Array | undefined {
  const raw = base32Decode(encoded);
  if (raw === undefined || raw.byteLength < 3) return undefined;
  const body = raw.subarray(0, raw.byteLength - 2);
  const crc = (raw[raw.byteLength - 2] ?? 0) | ((raw[raw.byteLength - 1] ?? 0) << 8);
  return crc16(body) === crc ? body : undefined;
}

function prefixOfByte(b: number): NkeyPrefix | undefined {
  for (const [letter, byte] of Object.entries(PREFIX_BYTE)) if (byte === b) return letter as NkeyPrefix;
  return undefined;
}

/** Encodes a 32-byte public key as an nkey string (`U…`, `A…`, …; 56 characters). */
export function encodeNkeyPublic(prefix: NkeyPrefix, publicKey: Uint8Array): string {
  const byte = PREFIX_BYTE[prefix];
  if (byte === undefined) throw new InvalidKeyError(`unknown nkey prefix ${String(prefix)}`);
  if (publicKey.byteLength !== 32) throw new InvalidKeyError("nkey public key must be 32 bytes");
  const raw = new Uint8Array(33);
  raw[0] = byte;
  raw.set(publicKey, 1);
  return withChecksum(raw);
}

/** The 35 bytes of a public nkey (prefix, key, CRC) as {@link publicPayloadChecks} decoded them last; public data, used synchronously. */
const publicScratch = new Uint8Array(35);

/**
 * Decodes the 56 characters of a public nkey into {@link publicScratch}
 * and checks their CRC: what {@link checkedPayload} does for any length,
 * without its three arrays and iterator per key (a cold rekey decodes a
 * thousand members' keys on the owner's thread, and the keys service the
 * same thousand principals of the share set it is asked to store).
 */
function publicPayloadChecks(encoded: string): boolean {
  let bits = 0;
  let value = 0;
  let j = 0;
  for (let i = 0; i < 56; i++) {
    const c = encoded.charCodeAt(i);
    const v = c < 128 ? DECODE[c]! : -1;
    if (v < 0) return false;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      publicScratch[j++] = (value >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  let crc = 0;
  for (let i = 0; i < 33; i++) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ publicScratch[i]!) & 0xff]!;
  return crc === (publicScratch[33]! | (publicScratch[34]! << 8));
}

/**
 * Public nkeys already decoded, by their string (whose first character is
 * the prefix {@link decodeNkeyPublic} checks): a log sync decodes the same
 * few signers a thousand times, each a base32 decode and a CRC. Only valid keys are kept,
 * callers get a copy, and the size is bounded, so hostile input can neither
 * grow it without limit nor alter a cached key.
 */
const DECODED_PUBLIC_MAX = 4096;
const decodedPublic = new Map<string, Uint8Array>();

/**
 * Decodes an nkey public string, checking length, checksum and that its prefix
 * is `expected`. Returns undefined on any mismatch (callers map that to their
 * own error), so a malformed key never throws from a verification path.
 */
export function decodeNkeyPublic(expected: NkeyPrefix, encoded: string): Uint8Array | undefined {
  if (typeof encoded !== "string" || encoded.length !== 56 || encoded[0] !== expected) return undefined;
  const hit = decodedPublic.get(encoded);
  if (hit !== undefined) return hit.slice();
  if (!publicPayloadChecks(encoded) || publicScratch[0] !== PREFIX_BYTE[expected]) return undefined;
  const key = publicScratch.slice(1, 33);
  decodedPublic.set(encoded, key.slice());
  if (decodedPublic.size > DECODED_PUBLIC_MAX) {
    const oldest = decodedPublic.keys().next().value;
    if (oldest !== undefined) decodedPublic.delete(oldest);
  }
  return key;
}

/** Encodes a 32-byte Ed25519 seed as an nkey seed string (`SU…`, `SA…`, …; 58 characters). */
export function encodeNkeySeed(prefix: NkeyPrefix, seed: Uint8Array): string {
  const kind = PREFIX_BYTE[prefix];
  if (kind === undefined) throw new InvalidKeyError(`unknown nkey prefix ${String(prefix)}`);
  if (seed.byteLength !== 32) throw new InvalidKeyError("nkey seed must be 32 bytes");
  const raw = new Uint8Array(34);
  raw[0] = SEED_BYTE | (kind >> 5);
  raw[1] = (kind & 31) << 3;
  raw.set(seed, 2);
  return withChecksum(raw);
}

/** Decodes an nkey seed string into its prefix kind and 32 seed bytes; throws {@link InvalidKeyError}. */
export function decodeNkeySeed(encoded: string): { prefix: NkeyPrefix; seed: Uint8Array } {
  // The message never includes the input: it is a secret.
  if (typeof encoded !== "string" || encoded.length !== 58) throw new InvalidKeyError("invalid nkey seed");
  const body = checkedPayload(encoded);
  if (body === undefined || body.byteLength !== 34) throw new InvalidKeyError("invalid nkey seed");
  const b0 = body[0] ?? 0;
  const b1 = body[1] ?? 0;
  if ((b0 & 0xf8) !== SEED_BYTE) throw new InvalidKeyError("invalid nkey seed");
  const prefix = prefixOfByte(((b0 & 7) << 5) | ((b1 & 0xf8) >> 3));
  if (prefix === undefined) throw new InvalidKeyError("invalid nkey seed prefix");
  return { prefix, seed: body.slice(2) };
}
