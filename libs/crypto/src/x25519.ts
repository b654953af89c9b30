import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { constantTimeEqual, fromHex, ownBytes, randomBytes, toHex } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";

// DER wrapper that lets node:crypto import a raw X25519 secret (RFC 8410).
// Public keys go through JWK (RFC 8037 "OKP"): the same raw key reaches
// OpenSSL, but importing/exporting a JWK costs ~1–20 µs where the DER
// (SPKI) path costs ~100–250 µs (OpenSSL 3 decoder lookup), which dominated
// sealing a room key to 1,000 members (room-keys.md, P4).
const PKCS8_X25519_PREFIX = fromHex("302e020100300506032b656e04220420");

/** An X25519 key-agreement key pair (raw 32-byte keys, RFC 7748). */
export interface AgreementKeyPair {
  /** 32-byte X25519 public key (u-coordinate). */
  readonly publicKey: Uint8Array;
  /** 32-byte X25519 secret scalar (unclamped; clamping happens at use, as in RFC 7748). */
  readonly secretKey: Uint8Array;
}

function checkLength(b: Uint8Array, what: string): void {
  if (!(b instanceof Uint8Array) || b.byteLength !== 32) throw new InvalidKeyError(`X25519 ${what} must be 32 bytes`);
}

// Secret KeyObjects are cached by array identity (WeakMap: dropped with the
// array) and the bytes re-checked on every hit, so a reused buffer holding a
// different key can never pick up a stale KeyObject.
const secretCache = new WeakMap<Uint8Array, { bytes: Uint8Array; key: KeyObject; publicKey?: Uint8Array }>();

function secretKeyObject(secretKey: Uint8Array): KeyObject {
  checkLength(secretKey, "secret key");
  const hit = secretCache.get(secretKey);
  if (hit !== undefined && constantTimeEqual(hit.bytes, secretKey)) return hit.key;
  const der = new Uint8Array(48);
  der.set(PKCS8_X25519_PREFIX);
  der.set(secretKey, 16);
  try {
    const key = createPrivateKey({ key: Buffer.from(der.buffer), format: "der", type: "pkcs8" });
    secretCache.set(secretKey, { bytes: ownBytes(secretKey), key });
    return key;
  } finally {
    der.fill(0);
  }
}

/** Bounded: peers' public keys are attacker-chosen. Holds a 4,000-member room's keys. */
const PUBLIC_CACHE_MAX = 4096;
const publicCache = new Map<string, KeyObject>();

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  checkLength(publicKey, "public key");
  const id = toHex(publicKey);
  const hit = publicCache.get(id);
  if (hit !== undefined) {
    publicCache.delete(id);
    publicCache.set(id, hit);
    return hit;
  }
  const key = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(publicKey.buffer, publicKey.byteOffset, 32).toString("base64url") }, format: "jwk" });
  publicCache.set(id, key);
  if (publicCache.size > PUBLIC_CACHE_MAX) {
    const oldest = publicCache.keys().next().value;
    if (oldest !== undefined) publicCache.delete(oldest);
  }
  return key;
}

/** A fresh random X25519 key pair. Independent of any Ed25519 key (architecture §3). */
export function generateAgreementKeyPair(): AgreementKeyPair {
  const secretKey = randomBytes(32);
  return { secretKey, publicKey: agreementPublicKey(secretKey) };
}

/** The X25519 public key of a 32-byte secret. */
export function agreementPublicKey(secretKey: Uint8Array): Uint8Array {
  const key = secretKeyObject(secretKey);
  const entry = secretCache.get(secretKey);
  if (entry?.publicKey !== undefined) return ownBytes(entry.publicKey);
  const publicKey = rawPublicKey(createPublicKey(key));
  if (entry !== undefined) entry.publicKey = publicKey;
  return ownBytes(publicKey);
}

/** The raw 32 bytes of an X25519 public KeyObject (via JWK; see the note on DER above). */
function rawPublicKey(key: KeyObject): Uint8Array {
  const x = key.export({ format: "jwk" }).x;
  const raw = x === undefined ? undefined : Buffer.from(x, "base64url");
  if (raw?.byteLength !== 32) throw new InvalidKeyError("X25519 public key export failed");
  return ownBytes(raw);
}

function agree(privateKey: KeyObject, peerPublicKey: Uint8Array): Uint8Array {
  let shared: Uint8Array;
  try {
    shared = ownBytes(diffieHellman({ privateKey, publicKey: publicKeyObject(peerPublicKey) }));
  } catch (cause) {
    if (cause instanceof InvalidKeyError) throw cause;
    throw new InvalidKeyError("X25519 agreement failed", { cause });
  }
  let acc = 0;
  for (const b of shared) acc |= b;
  if (acc === 0) throw new InvalidKeyError("X25519 agreement produced the all-zero secret (low-order public key)");
  return shared;
}

/**
 * X25519(secretKey, publicKey) via node:crypto, byte-identical to
 * @noble/curves `x25519.getSharedSecret`. Throws {@link InvalidKeyError} when
 * the result is all zeros (a low-order peer key), because such a "secret" is
 * known to everyone (RFC 7748 §6.1).
 */
export function x25519SharedSecret(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return agree(secretKeyObject(secretKey), publicKey);
}

/**
 * Agreement with a fresh ephemeral key whose secret half never leaves
 * node:crypto. Returns the ephemeral public key and the shared secret.
 */
export function ephemeralAgreement(peerPublicKey: Uint8Array): { publicKey: Uint8Array; shared: Uint8Array } {
  checkLength(peerPublicKey, "public key");
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  const shared = agree(privateKey, peerPublicKey);
  return { publicKey: rawPublicKey(publicKey), shared };
}

/**
 * A fresh ephemeral X25519 key pair whose secret half never leaves
 * node:crypto, and a function computing its agreement with any peer key
 * (all-zero results refused, as in {@link x25519SharedSecret}). For
 * multi-recipient sealing (sealed-box.md): the caller drops the function to
 * forget the secret.
 */
export function ephemeralAgreementKey(): { publicKey: Uint8Array; agree(peerPublicKey: Uint8Array): Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { publicKey: rawPublicKey(publicKey), agree: (peer) => agree(privateKey, peer) };
}
