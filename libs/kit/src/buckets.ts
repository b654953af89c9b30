import { setTimeout as sleep } from "node:timers/promises";
import { JetStreamApiError } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV, KvStatus } from "@nats-io/kv";
import { StoredBucket } from "@unibus/contracts";
import type { Logger } from "pino";

/** The KV bucket a service wants: created if missing, checked if present. */
export interface BucketSpec {
  readonly name: string;
  /** Entry max age in ms; 0 = forever. */
  readonly ttl?: number;
  /** Revisions kept per key; default 1. */
  readonly history?: number;
  /** Replicas; 1 standalone, 3 in the production cluster. */
  readonly replicas?: number;
  /** Size cap in bytes; -1 = unlimited. */
  readonly maxBytes?: number;
}

/** Options of {@link openBuckets}. */
export interface OpenBucketsOptions {
  /** Total time allowed for set-up, retries included. */
  readonly budgetMs: number;
  readonly logger?: Logger;
  /** First retry delay; doubles up to {@link OpenBucketsOptions.maxDelayMs}. Default 250 ms. */
  readonly initialDelayMs?: number;
  /** Longest retry delay. Default 5 s. */
  readonly maxDelayMs?: number;
}

/** Set-up of a bucket failed for good or ran out of budget. */
export class BucketSetupError extends Error {
  readonly bucket: string;
  constructor(bucket: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BucketSetupError";
    this.bucket = bucket;
  }
}

/** Window a signed envelope's timestamp may deviate from the service clock (architecture §4). */
export const ENVELOPE_WINDOW_MS = 30_000;

/**
 * The `nonces` bucket. A nonce must be remembered for as long as its timestamp
 * is acceptable: a request stamped +30 s stays fresh until 60 s from now, so
 * two minutes leaves margin for clock skew between replicas.
 */
export const NonceBucket = { name: StoredBucket.shared.nonces, ttl: 120_000, history: 1 } as const satisfies BucketSpec;

// Errors that retrying cannot fix: replicas > 1 on a standalone server, and
// JetStream disabled for the account. A cold cluster's 503s and timeouts are
// retried (nats-notes "JetStream KV").
const PERMANENT_API_CODES = new Set([10074, 10039]);
// A 400 that a cluster still coming up gives: "no suitable peers for
// placement" while a peer is offline or not yet known to the meta leader.
// Retried within the budget; a cluster that really lacks the peers still
// fails once the budget is spent.
const TRANSIENT_API_CODES = new Set([10005]);

/** Whether a bucket set-up error is one that retrying cannot fix (exported for its test). */
export function isPermanentSetupError(err: unknown): boolean {
  if (!(err instanceof JetStreamApiError) || TRANSIENT_API_CODES.has(err.code)) return false;
  return PERMANENT_API_CODES.has(err.code) || err.status === 400;
}

function mismatches(spec: BucketSpec, status: KvStatus): string[] {
  const out: string[] = [];
  const want = { ttl: spec.ttl ?? 0, history: spec.history ?? 1, replicas: spec.replicas ?? 1, max_bytes: spec.maxBytes ?? -1 };
  for (const [field, value] of Object.entries(want)) {
    const have = (status as unknown as Record<string, unknown>)[field];
    if (have !== value) out.push(`${field}: want ${value}, have ${String(have)}`);
  }
  return out;
}

/**
 * Every bucket is read through the stream leader, never by direct get: with
 * `allow_direct` any replica answers `kv.get`, and a lagging follower would
 * answer with a revoked user still active or a removed member still in the
 * room. A leader read (`$JS.API.STREAM.MSG.GET`) reflects every write
 * acknowledged before it, at the cost of one hop to the leader.
 *
 * A fresh object per call: `Kvm.open` writes `bindOnly: true` into the
 * options it is given, so one shared object would turn every later
 * `kvm.create` in the process into a bind that never creates the bucket.
 */
function leaderReads(): { allow_direct: false } {
  return { allow_direct: false };
}

/**
 * Turns off direct get on a bucket made before leader reads (or by another
 * client's defaults): `kvm.create` on an existing bucket ignores its options,
 * so the stream config itself is updated.
 */
async function requireLeaderReads(jsm: JetStreamManager, name: string, logger: Logger | undefined): Promise<void> {
  const stream = `KV_${name}`;
  const info = await jsm.streams.info(stream);
  if (info.config.allow_direct !== true) return;
  await jsm.streams.update(stream, { ...info.config, allow_direct: false });
  logger?.warn({ op: "bucket.open", bucket: name }, "bucket allowed direct gets from any replica; switched to leader reads");
}

/**
 * Runs `attempt` for one bucket until it succeeds, retrying with exponential
 * backoff until `deadline`; a permanent JetStream error stops at once.
 */
async function retryBucket(name: string, options: OpenBucketsOptions, deadline: number, attempt: () => Promise<KV>): Promise<KV> {
  let delay = options.initialDelayMs ?? 250;
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      const remaining = deadline - Date.now();
      if (isPermanentSetupError(err)) throw new BucketSetupError(name, `bucket ${name}: ${(err as Error).message}`, { cause: err });
      if (remaining <= delay) {
        throw new BucketSetupError(name, `bucket ${name}: not ready within ${options.budgetMs} ms (${n} attempts)`, { cause: err });
      }
      options.logger?.warn({ op: "bucket.open", bucket: name, attempt: n, err: (err as Error).message }, "bucket set-up failed; retrying");
      await sleep(delay);
      delay = Math.min(delay * 2, options.maxDelayMs ?? 5_000);
    }
  }
}

/**
 * Creates or opens KV buckets, retrying with exponential backoff within a time
 * budget: a cold cluster answers nothing for a while, then 503, until a meta
 * leader exists (nats-notes "JetStream KV"). `kvm.create` on an existing bucket
 * ignores the options, so each bucket's status is compared with its spec and a
 * difference is logged as a warning rather than silently trusted. Every bucket
 * is read from its stream leader (an existing bucket with direct get is
 * switched over), so a read reflects every write acknowledged before it.
 *
 * @throws BucketSetupError when a bucket cannot be set up within the budget.
 */
export async function openBuckets<const S extends readonly BucketSpec[]>(
  js: JetStreamClient,
  specs: S,
  options: OpenBucketsOptions,
): Promise<{ [K in S[number]["name"]]: KV }> {
  const deadline = Date.now() + options.budgetMs;
  const kvm = new Kvm(js);
  const out: Record<string, KV> = {};
  for (const spec of specs) {
    out[spec.name] = await retryBucket(spec.name, options, deadline, async () => {
      const kv = await kvm.create(spec.name, {
        ttl: spec.ttl ?? 0,
        history: spec.history ?? 1,
        replicas: spec.replicas ?? 1,
        max_bytes: spec.maxBytes ?? -1,
        ...leaderReads(),
      });
      await requireLeaderReads(await js.jetstreamManager(), spec.name, options.logger);
      const differences = mismatches(spec, await kv.status());
      if (differences.length > 0) {
        options.logger?.warn({ op: "bucket.open", bucket: spec.name, differences }, "existing bucket differs from its spec; left unchanged");
      }
      return kv;
    });
  }
  return out as { [K in S[number]["name"]]: KV };
}

/**
 * Opens KV buckets that another service creates, never creating them (an
 * empty stand-in bucket would silently change what the reader decides), and
 * waits for them with the same backoff and budget as {@link openBuckets}:
 * services start in any order. `kvm.open` binds without asking the server, so
 * each bucket's status is read to prove its stream exists before it is used.
 *
 * @throws BucketSetupError when a bucket does not appear within the budget.
 */
export async function openExistingBuckets<const N extends readonly string[]>(
  js: JetStreamClient,
  names: N,
  options: OpenBucketsOptions,
): Promise<{ [K in N[number]]: KV }> {
  const deadline = Date.now() + options.budgetMs;
  const kvm = new Kvm(js);
  const out: Record<string, KV> = {};
  for (const name of names) {
    out[name] = await retryBucket(name, options, deadline, async () => {
      // Leader reads whatever the owner's stream config says (see leaderReads).
      const kv = await kvm.open(name, leaderReads());
      await kv.status();
      return kv;
    });
  }
  return out as { [K in N[number]]: KV };
}
