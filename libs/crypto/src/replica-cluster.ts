/**
 * The cluster secret seed and what is derived from it
 * (contracts/specs/replica-lifecycle.md): the history signing key, the
 * cluster agreement key nodes seal their unlock-key shares to, the wrap key
 * of stored shares, and the recovery secret an operator keeps offline.
 * Pure functions; the seed never leaves memory except sealed.
 */
import { aeadDecrypt, aeadEncrypt, AeadSize } from "./aead.js";
import { SigningKey, verifySignature } from "./ed25519.js";
import { concatBytes, constantTimeEqual, randomBytes, utf8 } from "./encoding.js";
import { blake3, blake3DeriveKey } from "./hash.js";
import { base32Decode, base32Encode } from "./nkey.js";
import { markStatement } from "./statement-marker.js";
import { agreementPublicKey } from "./x25519.js";

/** Sizes and BLAKE3 derive_key contexts of the cluster keys; a context is never reused for another purpose. */
export const ClusterSeedFormat = {
  seedBytes: 32,
  cukBytes: 32,
  checkBytes: 4,
  recoveryPrefix: "UBRS-",
  historyKeyContext: "unibus 2026-12-04 replica history signing v1",
  agreementKeyContext: "unibus 2026-12-04 replica cluster agreement v1",
  wrapKeyContext: "unibus 2026-12-04 replica cuk wrap v1",
  recoveryCheckContext: "unibus 2026-12-04 replica recovery check v1",
  latestLabel: "unibus-replica-latest-v1",
  nodeAgreementLabel: "unibus-replica-node-agreement-v1",
  wrapLabel: "unibus-replica-cuk-wrap-v1",
  gatewayAgreementLabel: "unibus-replica-gateway-agreement-v1",
  seedAnswerLabel: "unibus-replica-seed-answer-v1",
} as const;

/** A seed, recovery secret or wrapped share that is malformed or fails its check. The message never quotes the input. */
export class ClusterSecretError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ClusterSecretError";
  }
}

/** What a gateway derives from the seed. Objects hold secrets: never log them. */
export interface ClusterKeys {
  /** Signs the history's latest pointer. */
  readonly historyKey: SigningKey;
  /** X25519 secret nodes seal their CUK to (every seed holder can open). */
  readonly agreementSecretKey: Uint8Array;
  readonly agreementPublicKey: Uint8Array;
  /** AEAD key of the stored (wrapped) CUKs. */
  readonly wrapKey: Uint8Array;
}

function checkSeed(seed: Uint8Array): void {
  if (!(seed instanceof Uint8Array) || seed.byteLength !== ClusterSeedFormat.seedBytes) throw new ClusterSecretError(`the cluster seed must be ${ClusterSeedFormat.seedBytes} bytes`);
}

/** A fresh random cluster seed. */
export function generateClusterSeed(): Uint8Array {
  return randomBytes(ClusterSeedFormat.seedBytes);
}

/** The keys derived from `seed`, each with its own context. */
export function deriveClusterKeys(seed: Uint8Array): ClusterKeys {
  checkSeed(seed);
  const agreementSecretKey = blake3DeriveKey(ClusterSeedFormat.agreementKeyContext, seed);
  return {
    historyKey: SigningKey.fromSeed(blake3DeriveKey(ClusterSeedFormat.historyKeyContext, seed)),
    agreementSecretKey,
    agreementPublicKey: agreementPublicKey(agreementSecretKey),
    wrapKey: blake3DeriveKey(ClusterSeedFormat.wrapKeyContext, seed),
  };
}

function recoveryCheck(seed: Uint8Array): Uint8Array {
  return blake3DeriveKey(ClusterSeedFormat.recoveryCheckContext, seed, ClusterSeedFormat.checkBytes);
}

/**
 * The recovery secret of `seed`: `UBRS-` then base32 of seed ‖ 4-byte
 * BLAKE3 check, in groups of 6 joined by `-`, so a person can copy it by
 * hand and a typo is caught before the gateway sees it.
 */
export function encodeRecoverySecret(seed: Uint8Array): string {
  checkSeed(seed);
  const text = base32Encode(concatBytes(seed, recoveryCheck(seed)));
  return ClusterSeedFormat.recoveryPrefix + (text.match(/.{1,6}/g) ?? []).join("-");
}

/**
 * The seed of a recovery secret. Case, blanks and dashes are ignored.
 *
 * @throws ClusterSecretError on a bad prefix, length, alphabet or check.
 */
export function decodeRecoverySecret(text: string): Uint8Array {
  const compact = text.replace(/[\s-]/g, "").toUpperCase();
  const prefix = ClusterSeedFormat.recoveryPrefix.replace("-", "");
  if (!compact.startsWith(prefix)) throw new ClusterSecretError("not a recovery secret (expected the UBRS- prefix)");
  const raw = base32Decode(compact.slice(prefix.length));
  if (raw?.byteLength !== ClusterSeedFormat.seedBytes + ClusterSeedFormat.checkBytes) throw new ClusterSecretError("the recovery secret has the wrong length or characters");
  const seed = raw.slice(0, ClusterSeedFormat.seedBytes);
  if (!constantTimeEqual(recoveryCheck(seed), raw.slice(ClusterSeedFormat.seedBytes))) throw new ClusterSecretError("the recovery secret's checksum does not match (a typo?)");
  return seed;
}

function field(b: Uint8Array | string): Uint8Array {
  const bytes = typeof b === "string" ? utf8(b) : b;
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, bytes.byteLength);
  return concatBytes(len, bytes);
}

function u64(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("expected a non-negative safe integer");
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/**
 * What the history key signs for the latest pointer: label, cluster id, seq,
 * head hash. Every statement here starts with the 0xFF statement marker, so
 * no signature over it can pass as a NATS connect-nonce signature (the node
 * and gateway keys are also their NATS login keys).
 */
export function latestPointerBytes(clusterId: Uint8Array, seq: number, hash: Uint8Array): Uint8Array {
  return markStatement(concatBytes(field(ClusterSeedFormat.latestLabel), field(clusterId), u64(seq), field(hash)));
}

/** What a node's join key signs to vouch for its agreement key (so a gateway cannot swap it and read the CUK). */
export function nodeAgreementBytes(clusterId: Uint8Array, nodeId: string, agreementKey: Uint8Array): Uint8Array {
  return markStatement(concatBytes(field(ClusterSeedFormat.nodeAgreementLabel), field(clusterId), field(nodeId), field(agreementKey)));
}

/** What a gateway's service identity signs to publish its per-process agreement key. */
export function gatewayAgreementBytes(principal: string, agreementKey: Uint8Array): Uint8Array {
  return markStatement(concatBytes(field(ClusterSeedFormat.gatewayAgreementLabel), field(principal), field(agreementKey)));
}

/** What a peer signs when it hands the seed over: the request it answers and the sealed seed. */
export function seedAnswerBytes(requestHash: Uint8Array, responder: string, sealed: Uint8Array): Uint8Array {
  return markStatement(concatBytes(field(ClusterSeedFormat.seedAnswerLabel), field(requestHash), field(responder), field(sealed)));
}

/** Verifies an Ed25519 signature by `publicKey`; false on any malformed input. */
export function verifyDetached(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    return verifySignature(publicKey, data, signature);
  } catch {
    return false;
  }
}

function wrapAad(nodeId: string, joinKey: string): Uint8Array {
  return concatBytes(field(ClusterSeedFormat.wrapLabel), field(nodeId), field(joinKey));
}

/** A node's CUK wrapped under the seed's wrap key, bound to the node id and join key: `nonce(24) ‖ ciphertext`. */
export function wrapCuk(wrapKey: Uint8Array, cuk: Uint8Array, nodeId: string, joinKey: string): Uint8Array {
  if (cuk.byteLength !== ClusterSeedFormat.cukBytes) throw new ClusterSecretError(`a CUK must be ${ClusterSeedFormat.cukBytes} bytes`);
  const nonce = randomBytes(AeadSize.nonce);
  return concatBytes(nonce, aeadEncrypt(wrapKey, nonce, cuk, wrapAad(nodeId, joinKey)));
}

/**
 * Opens a wrapped CUK.
 *
 * @throws ClusterSecretError when it is malformed, or wrapped for another node, join key or seed.
 */
export function unwrapCuk(wrapKey: Uint8Array, wrapped: Uint8Array, nodeId: string, joinKey: string): Uint8Array {
  if (wrapped.byteLength !== AeadSize.nonce + ClusterSeedFormat.cukBytes + AeadSize.tag) throw new ClusterSecretError("a wrapped CUK has the wrong length");
  try {
    return aeadDecrypt(wrapKey, wrapped.subarray(0, AeadSize.nonce), wrapped.subarray(AeadSize.nonce), wrapAad(nodeId, joinKey));
  } catch {
    throw new ClusterSecretError("the wrapped CUK does not open with this seed for this node");
  }
}

/** Cold start without any gateway: a node opens its own wrapped CUK with the operator's recovery secret. */
export function unlockWrappedCuk(recoverySecret: string, wrapped: Uint8Array, nodeId: string, joinKey: string): Uint8Array {
  return unwrapCuk(deriveClusterKeys(decodeRecoverySecret(recoverySecret)).wrapKey, wrapped, nodeId, joinKey);
}

/** BLAKE3 of bytes, 32 bytes (exported for the seed request hash). */
export function seedRequestHash(body: Uint8Array): Uint8Array {
  return blake3(body);
}
