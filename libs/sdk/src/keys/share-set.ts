/**
 * The signed statements of room-key distribution (contracts/specs/room-keys.md):
 * the agreement-key binding a member signs for itself, and the epoch statement
 * a distributor signs over the Merkle root of a whole share set. The keys
 * service and the SDK both build these bytes here, so the two cannot drift.
 */
import { markStatement, sha256 } from "@unibus/crypto";

/** Domain-separation strings and tags; never reused for another purpose. */
export const ShareSetFormat = {
  /** Prefix of the distributor's epoch statement. */
  epochContext: "unibus-room-epoch-v1",
  /** Prefix of a member's agreement-key binding. */
  agreementContext: "unibus-agreement-key-v1",
  /** First byte of a leaf hash input (RFC 6962 style: leaves and nodes never collide). */
  leafTag: 0x00,
  /** First byte of an inner node hash input. */
  nodeTag: 0x01,
  /** Length of a room key in bytes. */
  roomKeyBytes: 32,
} as const;

const encoder = new TextEncoder();

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** A length-prefixed (u16 BE) UTF-8 field, so no two field lists encode alike. */
function field(s: string): Uint8Array {
  const b = encoder.encode(s);
  if (b.byteLength > 0xffff) throw new RangeError("field too long");
  return concat([Uint8Array.of(b.byteLength >> 8, b.byteLength & 0xff), b]);
}

function u64(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("expected a non-negative safe integer");
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/**
 * Leaf of one member: `sha256(0x00 ‖ principal ‖ flag ‖ sha256(sealedShare)?)`.
 * The flag distinguishes "no share" (the member had no agreement key) from a
 * share, so the server cannot turn one into the other.
 */
export function shareLeaf(principal: string, sealedShare: Uint8Array | undefined): Uint8Array {
  return leafOf(principal, sealedShare === undefined ? undefined : sha256(sealedShare));
}

/**
 * `sha256(0x00 ‖ field(principal) ‖ 0x00)`, or `… ‖ 0x01 ‖ digest)`, laid
 * out in one buffer: the owner and the keys service each hash a leaf per
 * member, and the parts and their concatenations cost more than the hashes.
 */
function leafOf(principal: string, digest: Uint8Array | undefined): Uint8Array {
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  const buf = new Uint8Array(3 + 3 * principal.length + 1 + 32);
  buf[0] = ShareSetFormat.leafTag;
  const len = encoder.encodeInto(principal, buf.subarray(3)).written;
  if (len > 0xffff) throw new RangeError("field too long");
  buf[1] = len >> 8;
  buf[2] = len & 0xff;
  let at = 3 + len;
  if (digest === undefined) buf[at++] = 0;
  else {
    buf[at++] = 1;
    buf.set(digest, at);
    at += digest.byteLength;
  }
  return sha256(buf.subarray(0, at));
}

function node(left: Uint8Array, right: Uint8Array): Uint8Array {
  const buf = new Uint8Array(1 + left.byteLength + right.byteLength);
  buf[0] = ShareSetFormat.nodeTag;
  buf.set(left, 1);
  buf.set(right, 1 + left.byteLength);
  return sha256(buf);
}

/** One level up: pairs hashed, an odd last node promoted unchanged. */
function levelUp(level: readonly Uint8Array[]): Uint8Array[] {
  const next: Uint8Array[] = [];
  for (let i = 0; i < level.length; i += 2) {
    const right = level[i + 1];
    next.push(right === undefined ? level[i]! : node(level[i]!, right));
  }
  return next;
}

/** Merkle root of `leaves` (in share-set order). */
export function merkleRoot(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) throw new RangeError("empty share set");
  let level = [...leaves];
  while (level.length > 1) level = levelUp(level);
  return level[0]!;
}

/** Sibling hashes from leaf `index` to the root: ⌈log2 n⌉ hashes, ~320 B for 1,000 members. */
export function merkleProof(leaves: readonly Uint8Array[], index: number): Uint8Array[] {
  if (!Number.isSafeInteger(index) || index < 0 || index >= leaves.length) throw new RangeError("leaf index out of range");
  const proof: Uint8Array[] = [];
  let level = [...leaves];
  let i = index;
  while (level.length > 1) {
    const sibling = level[i ^ 1];
    if (sibling !== undefined) proof.push(sibling);
    level = levelUp(level);
    i >>= 1;
  }
  return proof;
}

/**
 * Recomputes the root from a leaf, its index, the (signed) leaf count and the
 * proof; null when the proof has the wrong shape for that position.
 */
export function rootFromProof(leaf: Uint8Array, index: number, leafCount: number, proof: readonly Uint8Array[]): Uint8Array | null {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(leafCount) || index < 0 || index >= leafCount) return null;
  let hash = leaf;
  let i = index;
  let n = leafCount;
  let used = 0;
  while (n > 1) {
    const promoted = i === n - 1 && n % 2 === 1;
    if (!promoted) {
      const sibling = proof[used++];
      if (sibling === undefined || sibling.byteLength !== 32) return null;
      hash = i % 2 === 0 ? node(hash, sibling) : node(sibling, hash);
    }
    i >>= 1;
    n = Math.ceil(n / 2);
  }
  return used === proof.length ? hash : null;
}

/** What a distributor signs for an epoch. */
export interface EpochStatement {
  readonly roomId: string;
  readonly epoch: number;
  /** The signer's principal. */
  readonly distributor: string;
  readonly leafCount: number;
  /** {@link merkleRoot} of the share set. */
  readonly root: Uint8Array;
  /** Position in the room's membership log whose membership the set covers. */
  readonly logSeq: number;
  /** Hash of the log entry at {@link logSeq} (contracts/specs/membership-log.md). */
  readonly logHead: Uint8Array;
  /** {@link principalsHash} of the set's sorted principals: members compare it with the verified membership at {@link logSeq}. */
  readonly recipients: Uint8Array;
}

/**
 * `0xFF ‖ "unibus-room-epoch-v1" ‖ roomId ‖ epoch ‖ distributor ‖ leafCount
 * ‖ root ‖ logSeq ‖ logHead ‖ recipients` (0xFF: the statement marker, so no
 * connect nonce can equal it): room and epoch stop a signed set from being
 * replayed elsewhere; the leaf count fixes the tree shape, so a proof cannot
 * move a leaf; the log position, its hash and the recipients hash let every
 * member check that the set went to exactly the verified membership at that
 * position (threat: a keys service naming an extra recipient).
 */
export function epochStatementBytes(s: EpochStatement): Uint8Array {
  if (s.root.byteLength !== 32) throw new RangeError("root must be 32 bytes");
  if (s.logHead.byteLength !== 32) throw new RangeError("logHead must be 32 bytes");
  if (s.recipients.byteLength !== 32) throw new RangeError("recipients must be 32 bytes");
  return markStatement(concat([field(ShareSetFormat.epochContext), field(s.roomId), u64(s.epoch), field(s.distributor), u64(s.leafCount), s.root, u64(s.logSeq), s.logHead, s.recipients]));
}

/**
 * `0xFF ‖ "unibus-agreement-key-v1" ‖ principal ‖ agreementKey`, signed by the
 * principal itself: the server stores the binding but cannot substitute a key
 * of its own, because clients verify it before sealing a room key to it.
 */
export function agreementKeyStatementBytes(principal: string, agreementKey: Uint8Array): Uint8Array {
  if (agreementKey.byteLength !== 32) throw new RangeError("agreement key must be 32 bytes");
  // Laid out in one buffer, the marked context written once per process: a
  // cold rekey builds one statement per member, and the parts, their
  // concatenations and the context's encoding cost more than the layout.
  // UTF-8 takes at most 3 bytes per UTF-16 unit; the unused tail is cut off.
  const head = agreementHead.byteLength;
  const buf = new Uint8Array(head + 2 + 3 * principal.length + 32);
  buf.set(agreementHead, 0);
  const len = encoder.encodeInto(principal, buf.subarray(head + 2)).written;
  if (len > 0xffff) throw new RangeError("field too long");
  buf[head] = len >> 8;
  buf[head + 1] = len & 0xff;
  buf.set(agreementKey, head + 2 + len);
  return buf.subarray(0, head + 2 + len + 32);
}

/** `0xFF ‖ field("unibus-agreement-key-v1")`, the fixed start of every agreement-key statement. */
const agreementHead = markStatement(field(ShareSetFormat.agreementContext));

/** SHA-256 of the sorted principals joined by `\n`: compares a share set with a membership without the shares. */
export function principalsHash(sortedPrincipals: readonly string[]): Uint8Array {
  return sha256(encoder.encode(sortedPrincipals.join("\n")));
}

/**
 * The leaf of a member whose sealed share was deleted (it left the room):
 * `sha256(0x00 ‖ principal ‖ 0x01 ‖ digest)` with `digest = sha256(sealedShare)`,
 * equal to {@link shareLeaf} of the share. The keys service keeps only the
 * digest, so the other members' proofs still verify and the share is gone.
 */
export function shareLeafOfDigest(principal: string, digest: Uint8Array): Uint8Array {
  if (digest.byteLength !== 32) throw new RangeError("share digest must be 32 bytes");
  return leafOf(principal, digest);
}
