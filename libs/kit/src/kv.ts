/**
 * One way to read and write KV records for every service: JSON values
 * checked against their stored-data schema, compare-and-set updates, key
 * listing, and one mapping of store failures to coded errors. A store error
 * is 503 (retry), never "absent"; a record that fails its schema is 500
 * `corrupt_record`, never used (threat: a damaged or forged record granting
 * access because a reader trusted its shape).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import { ErrorCode, ErrorReason, SchemaRegistry, UnibusError } from "@unibus/contracts";
import type { SchemaTypes } from "@unibus/contracts";

/** A record with the KV revision it was read or written at. */
export interface Versioned<T> {
  value: T;
  revision: number;
}

/** How a reader names its store in errors and checks what it reads. */
export interface RecordReader<T> {
  /** Shown in the caller-safe message: `<store> store unavailable`. */
  readonly store: string;
  /** Throws 500 `corrupt_record` unless `value` is a valid record; absent: no check. */
  readonly check?: (value: unknown, key: string) => T;
}

/** True for the JetStream error a failed compare-and-set (or create on an existing key) raises. */
export function isRevisionConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

/** A store failure the caller may retry; never a sign that the request was wrong. */
export function storeUnavailable(store: string, cause: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, `${store} store unavailable`, { cause });
}

/** A stored record that is not what its schema says. The key and cause go to the log only. */
export function corruptRecord(store: string, key: string, cause?: unknown): UnibusError {
  return new UnibusError(ErrorCode.Internal, ErrorReason.CorruptRecord, `${store} store holds a damaged record`, { cause: cause ?? new Error(`corrupt record at ${key}`) });
}

let registry: SchemaRegistry | undefined;

/** Stored-data schema ids (`contracts/schemas/stored`). */
export type StoredRecordId = Extract<keyof SchemaTypes, `stored.${string}`>;

/**
 * The check of one stored-data schema, compiled once. A value that fails it
 * throws 500 `corrupt_record` naming the store (the path of the first
 * violation goes to the log with the key).
 */
export function recordCheck<Id extends StoredRecordId>(store: string, id: Id): (value: unknown, key: string) => SchemaTypes[Id] {
  registry ??= new SchemaRegistry();
  const validate = registry.validator(id);
  return (value, key) => {
    const result = validate(value);
    if (!result.ok) throw corruptRecord(store, key, new Error(`${id} at ${key}: ${result.path} ${result.message}`));
    return value as SchemaTypes[Id];
  };
}

function present(entry: KvEntry | null): entry is KvEntry {
  return entry !== null && entry.operation === "PUT";
}

function decode<T>(entry: KvEntry, key: string, reader: RecordReader<T>): T {
  let value: unknown;
  try {
    value = entry.json<unknown>();
  } catch (err) {
    throw corruptRecord(reader.store, key, err);
  }
  return reader.check === undefined ? (value as T) : reader.check(value, key);
}

async function getEntry(kv: KV, key: string, store: string): Promise<KvEntry | null> {
  try {
    return await kv.get(key);
  } catch (err) {
    throw storeUnavailable(store, err);
  }
}

/** One JSON record and its revision; null for a missing or deleted key. */
export async function readVersioned<T>(kv: KV, key: string, reader: RecordReader<T>): Promise<Versioned<T> | null> {
  const entry = await getEntry(kv, key, reader.store);
  return present(entry) ? { value: decode(entry, key, reader), revision: entry.revision } : null;
}

/** One JSON record; null for a missing or deleted key. */
export async function readRecord<T>(kv: KV, key: string, reader: RecordReader<T>): Promise<T | null> {
  return (await readVersioned(kv, key, reader))?.value ?? null;
}

/** Keys matching `filter` (every key without one). */
export async function listKeys(kv: KV, store: string, filter?: string): Promise<string[]> {
  try {
    const out: string[] = [];
    for await (const key of await kv.keys(filter)) out.push(key);
    return out;
  } catch (err) {
    throw storeUnavailable(store, err);
  }
}

/** Returned by a {@link casUpdate} mutator to leave the entry as it is. */
export const Unchanged = Symbol("unchanged");

/**
 * Bound of one compare-and-set loop before giving up with 503. One owner
 * creating 32 rooms at once puts 32 writers on its `rooms_by_member` key;
 * retrying at once made them collide again and again (16 immediate attempts
 * gave up under that load), so each retry waits a jittered, growing delay.
 */
const CAS_ATTEMPTS = 64;
const CAS_BUDGET_MS = 5_000;
const CAS_BACKOFF_MS = { first: 2, max: 100 } as const;

/**
 * Read-modify-write of one key by compare-and-set: the write names the
 * revision it read, so a concurrent writer (another replica) makes it fail
 * and the loop re-reads instead of overwriting — no lost update. `mutate`
 * sees null for a missing key; returning {@link Unchanged} writes nothing,
 * returning null deletes the key (also by revision).
 *
 * @returns the stored value and revision after the call (null if absent).
 */
export async function casUpdate<T>(kv: KV, key: string, reader: RecordReader<T>, mutate: (current: T | null) => T | null | typeof Unchanged): Promise<Versioned<T> | null> {
  const deadline = Date.now() + CAS_BUDGET_MS;
  for (let attempt = 0; attempt < CAS_ATTEMPTS && Date.now() < deadline; attempt++) {
    if (attempt > 0) {
      // Full jitter: the colliding writers spread out instead of retrying in lockstep.
      await sleep(Math.random() * Math.min(CAS_BACKOFF_MS.max, CAS_BACKOFF_MS.first * 2 ** attempt));
    }
    const entry = await getEntry(kv, key, reader.store);
    const current = present(entry) ? decode(entry, key, reader) : null;
    const next = mutate(current);
    if (next === Unchanged) return current === null || entry === null ? null : { value: current, revision: entry.revision };
    try {
      if (next === null) {
        if (current === null || entry === null) return null;
        await kv.delete(key, { previousSeq: entry.revision });
        return null;
      }
      // A key never written needs create (revision 0); a deleted one is
      // updated over its delete marker so a concurrent re-create still conflicts.
      const revision = entry === null ? await kv.create(key, JSON.stringify(next)) : await kv.update(key, JSON.stringify(next), entry.revision);
      return { value: next, revision };
    } catch (err) {
      if (isRevisionConflict(err)) continue;
      throw storeUnavailable(reader.store, err);
    }
  }
  throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, `${reader.store} store busy; retry`, { details: { retryAfterMs: 100 } });
}
