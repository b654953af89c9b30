import type { KV } from "@nats-io/kv";
import { StoredBucket } from "@unibus/contracts";
import type { UnibusError } from "@unibus/contracts";
import { listKeys as listStoreKeys, readRecord, storeUnavailable } from "@unibus/kit";

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

// The kit's KV access, named for this store: 503 "keys store unavailable",
// 500 corrupt_record for a value that is not JSON.
const KEYS_STORE = { store: "keys" } as const;

/** A store failure the caller may retry. */
export function unavailable(cause: unknown): UnibusError {
  return storeUnavailable(KEYS_STORE.store, cause);
}

export { isRevisionConflict } from "@unibus/kit";

/** Reads one JSON value; null for a missing or deleted key. A store error is 503 (never "absent"). */
export function readJson<T>(kv: KV, key: string): Promise<T | null> {
  return readRecord<T>(kv, key, KEYS_STORE);
}

/** Keys matching `filter`. */
export function listKeys(kv: KV, filter: string): Promise<string[]> {
  return listStoreKeys(kv, KEYS_STORE.store, filter);
}
