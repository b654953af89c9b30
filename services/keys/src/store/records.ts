import type { KV } from "@nats-io/kv";
import { StoredBucket } from "@unibus/contracts";
import type { StoredAgreementKeyRecord, StoredRoomKeysRecord, UnibusError } from "@unibus/contracts";
import { listKeys as listStoreKeys, readRecord, recordCheck, storeUnavailable } from "@unibus/kit";
import type { RecordReader } from "@unibus/kit";

/** KV buckets the keys service owns. */
export const KeysBucket = StoredBucket.keys;
/** One of the {@link KeysBucket} names. */
export type KeysBucket = (typeof KeysBucket)[keyof typeof KeysBucket];

/** Membership buckets the keys service reads (never writes; its server permissions allow reads only). */
export const MembershipReadBucket = { users: StoredBucket.membership.users, members: StoredBucket.membership.members } as const;

/** A value of `room_keys`: the whole signed share set of one epoch (stored-data contract). No plaintext key ever. */
export type EpochRecord = StoredRoomKeysRecord;
/** One member's entry in an epoch's share set. */
export type ShareEntry = EpochRecord["shares"][number];

/** A value of `agreement_keys`: a member's self-signed X25519 public key (stored-data contract). */
export type AgreementKeyRecord = StoredAgreementKeyRecord;

/** The `room_keys` key of an epoch. */
export function epochKey(roomId: string, epoch: number): string {
  return `${roomId}.${epoch}`;
}

// The kit's KV access, named for this store: 503 "keys store unavailable",
// 500 corrupt_record for a value that is not JSON or fails its stored-data
// schema (threat: a damaged or forged epoch or agreement key sent to members
// as if the service had checked it).
const KEYS_STORE = { store: "keys" } as const;

/** Checks a `room_keys` value; throws 500 corrupt_record. */
export const checkEpochRecord = recordCheck(KEYS_STORE.store, "stored.room_keys.record");
/** Checks an `agreement_keys` value; throws 500 corrupt_record. */
export const checkAgreementKeyRecord = recordCheck(KEYS_STORE.store, "stored.agreement_keys.record");
const EpochReader: RecordReader<EpochRecord> = { ...KEYS_STORE, check: checkEpochRecord };
const AgreementKeyReader: RecordReader<AgreementKeyRecord> = { ...KEYS_STORE, check: checkAgreementKeyRecord };

/** A store failure the caller may retry. */
export function unavailable(cause: unknown): UnibusError {
  return storeUnavailable(KEYS_STORE.store, cause);
}

export { isRevisionConflict } from "@unibus/kit";

/** One epoch's share set, checked; null for a missing or deleted key. A store error is 503 (never "absent"). */
export function readEpochRecord(kv: KV, key: string): Promise<EpochRecord | null> {
  return readRecord(kv, key, EpochReader);
}

/** One member's agreement key record, checked; null when none is registered. A store error is 503. */
export function readAgreementKeyRecord(kv: KV, principal: string): Promise<AgreementKeyRecord | null> {
  return readRecord(kv, principal, AgreementKeyReader);
}

/** Keys matching `filter`. */
export function listKeys(kv: KV, filter: string): Promise<string[]> {
  return listStoreKeys(kv, KEYS_STORE.store, filter);
}
