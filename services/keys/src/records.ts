import type { KV, KvEntry } from "@nats-io/kv";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError } from "@unibus/contracts";

/** KV buckets the keys service owns. */
export const KeysBucket = StoredBucket.keys;
/** One of the {@link KeysBucket} names. */
export type KeysBucket = (typeof KeysBucket)[keyof typeof KeysBucket];

/** Membership buckets the keys service reads (never writes; its server permissions allow reads only). */
export const MembershipReadBucket = { users: StoredBucket.membership.users, members: StoredBucket.membership.members } as const;

/** One member's entry in an epoch's share set. */
export interface ShareEntry {
  principal: string;
  /** base64url sealed box of the room key; absent when the member had no agreement key, or left (then see `shareDigest`). */
  sealedShare?: string;
  /** base64url SHA-256 of a sealed share deleted when its member left the room: keeps the Merkle tree, not the share. */
  shareDigest?: string;
}

/** A value of `room_keys`: the whole signed share set of one epoch. No plaintext key ever. */
export interface EpochRecord {
  roomId: string;
  epoch: number;
  distributor: string;
  /** base64url Ed25519 signature over the epoch statement. */
  signature: string;
  /** Sorted by principal, strictly ascending. */
  shares: ShareEntry[];
  createdAt: string;
  /** The membership-log position the set covers (signed; contracts/specs/membership-log.md). */
  logSeq: number;
  /** base64url hash of the log entry at logSeq (signed). */
  logHead: string;
}

/** A value of `agreement_keys`: a member's self-signed X25519 public key. */
export interface AgreementKeyRecord {
  principal: string;
  /** base64url X25519 public key. */
  agreementKey: string;
  /** base64url signature by `principal` over the agreement-key statement. */
  signature: string;
}

/** The `room_keys` key of an epoch. */
export function epochKey(roomId: string, epoch: number): string {
  return `${roomId}.${epoch}`;
}

/** A store failure the caller may retry. */
export function unavailable(cause: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "keys store unavailable", { cause });
}

/** True for a failed compare-and-set / create on an existing key. */
export function isRevisionConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

/** Reads one JSON value; null for a missing or deleted key. A store error is 503 (never "absent"). */
export async function readJson<T>(kv: KV, key: string): Promise<T | null> {
  let entry: KvEntry | null;
  try {
    entry = await kv.get(key);
  } catch (err) {
    throw unavailable(err);
  }
  return entry !== null && entry.operation === "PUT" ? entry.json<T>() : null;
}

/** Keys matching `filter`. */
export async function listKeys(kv: KV, filter: string): Promise<string[]> {
  try {
    const out: string[] = [];
    for await (const key of await kv.keys(filter)) out.push(key);
    return out;
  } catch (err) {
    throw unavailable(err);
  }
}
