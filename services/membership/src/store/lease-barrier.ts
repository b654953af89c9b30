import { setTimeout as sleep } from "node:timers/promises";
import { JetStreamApiError, jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { CalloutLease, StoredBucket } from "@unibus/contracts";
import { FencedCopy, defineCounter } from "@unibus/kit";
import type { Logger } from "pino";

/** The sequences of a write the callouts decide logins on (a bucket not written: 0). */
export interface DirectoryWrite {
  readonly users?: number;
  readonly rooms_by_member?: number;
}

/** Local monotonic milliseconds. */
export type MonotonicClock = () => number;

/** Options of {@link LeaseBarrier}. */
export interface LeaseBarrierOptions {
  readonly logger: Logger;
  readonly clock?: MonotonicClock;
  /** The longest lease a callout may hold, waited out when the registry cannot be read. Default {@link CalloutLease.durationMs}. */
  readonly maxLeaseMs?: number;
}

/** The stream behind the registry does not exist (JetStream "stream not found"). */
const STREAM_NOT_FOUND = 10059;

/**
 * The barrier in `/metrics`: directory writes settled, and per lease holder
 * how each was settled (`answered`: the replica said "applied"; `waited_out`:
 * its lease ran out first, each one a write held for up to a lease) plus
 * `registry_unread` (the registry could not be read, the longest lease was
 * waited out). A steady `waited_out` names a callout replica that renews
 * but does not answer; `registry_unread`, a registry without quorum.
 */
export const leaseBarrierMetrics = {
  settled: defineCounter("unibus_lease_barrier_writes_total", "Directory writes (users, rooms_by_member) held until every callout lease holder applied them"),
  outcomes: defineCounter("unibus_lease_barrier_waits_total", "Lease barrier waits of membership's directory writes, by result", ["result"] as const),
};

/** Counters, for tests and the bench. */
export interface LeaseBarrierStats {
  /** Writes settled. */
  settled: number;
  /** Barrier requests answered "applied". */
  answered: number;
  /** Leases waited out (no answer before the lease ran out, or one seen unchanged for a lease's length). */
  waitedOut: number;
  /** Writes for which the registry could not be read, so the longest lease was waited out. */
  registryUnread: number;
}

interface Seen {
  readonly revision: number;
  /** Local time the record at this revision was first read: it was written before. */
  readonly since: number;
}

function parseLease(value: Uint8Array): { barrier: string; durationMs: number } | undefined {
  try {
    const v = JSON.parse(new TextDecoder().decode(value)) as { barrier?: unknown; durationMs?: unknown };
    if (typeof v.barrier !== "string" || !v.barrier.startsWith(`${CalloutLease.barrierPrefix}.`)) return undefined;
    if (typeof v.durationMs !== "number" || !(v.durationMs > 0) || v.durationMs > CalloutLease.durationMs) return undefined;
    return { barrier: v.barrier, durationMs: v.durationMs };
  } catch {
    return undefined;
  }
}

/**
 * Holds a write to `users` or `rooms_by_member` until no callout can answer
 * a login from memory without it (docs/design.md "The login lease"): after
 * the write's ack, a fenced read of the callouts' lease registry (a fence
 * sent after the ack, so every lease written before it is listed), then, for
 * each lease listed, the replica's barrier answer ("applied") or the end of
 * that lease, whichever comes first. A lease written after the read was
 * followed by its holder's own fence, sent after the write: that replica's
 * copy has it. A record seen unchanged for a lease's length belongs to a
 * replica that has not renewed since: no wait.
 *
 * It never fails: the write is durable and acknowledged by JetStream. When
 * the registry cannot be read, it waits the longest lease out instead (any
 * lease taken before the write has run out by then), so the caller's
 * acknowledgement keeps its meaning, only later. No registry bucket at all:
 * no callout ever held a lease, and one that takes it later fences after.
 */
export class LeaseBarrier {
  readonly #nc: NatsConnection;
  readonly #logger: Logger;
  readonly #clock: MonotonicClock;
  readonly #maxLeaseMs: number;
  #copy: FencedCopy | undefined;
  #opening: Promise<FencedCopy | undefined> | undefined;
  #stopped = false;
  readonly #seen = new Map<string, Seen>();
  readonly stats: LeaseBarrierStats = { settled: 0, answered: 0, waitedOut: 0, registryUnread: 0 };

  constructor(nc: NatsConnection, opts: LeaseBarrierOptions) {
    this.#nc = nc;
    this.#logger = opts.logger;
    this.#clock = opts.clock ?? (() => performance.now());
    this.#maxLeaseMs = opts.maxLeaseMs ?? CalloutLease.durationMs;
  }

  /** Resolves once every lease holder applied `write` or its lease ran out; never rejects. */
  async settle(write: DirectoryWrite): Promise<void> {
    this.stats.settled++;
    leaseBarrierMetrics.settled.inc();
    const start = this.#clock();
    let records: Array<[string, { value: Uint8Array; revision: number }]>;
    try {
      const copy = await this.#registry();
      if (copy === undefined) return;
      records = await copy.list();
    } catch (err) {
      this.stats.registryUnread++;
      leaseBarrierMetrics.outcomes.inc({ result: "registry_unread" });
      this.#logger.warn({ op: "lease.barrier", err: err instanceof Error ? err.message : String(err) }, "lease registry not read; waiting out the longest lease");
      await sleep(Math.max(0, start + this.#maxLeaseMs - this.#clock()));
      return;
    }
    const now = this.#clock();
    const live = new Set<string>();
    const waits: Promise<void>[] = [];
    for (const [key, rec] of records) {
      live.add(key);
      let seen = this.#seen.get(key);
      if (seen?.revision !== rec.revision) {
        seen = { revision: rec.revision, since: now };
        this.#seen.set(key, seen);
      }
      const lease = parseLease(rec.value);
      // A record that does not parse still may be a lease: wait the longest one out.
      const remaining = seen.since + (lease?.durationMs ?? this.#maxLeaseMs) - now;
      if (remaining <= 0) continue;
      waits.push(this.#ask(lease?.barrier, write, remaining));
    }
    for (const key of this.#seen.keys()) if (!live.has(key)) this.#seen.delete(key);
    await Promise.all(waits);
  }

  /** The replica's "applied", or the end of its lease; whichever is first. */
  async #ask(subject: string | undefined, write: DirectoryWrite, remainingMs: number): Promise<void> {
    const deadline = this.#clock() + remainingMs;
    if (subject !== undefined) {
      try {
        const reply = await this.#nc.request(subject, JSON.stringify({ users: write.users ?? 0, rooms_by_member: write.rooms_by_member ?? 0 }), { timeout: Math.max(1, Math.ceil(remainingMs)) });
        const body = reply.json<{ applied?: unknown }>();
        if (body.applied === true) {
          this.stats.answered++;
          leaseBarrierMetrics.outcomes.inc({ result: "answered" });
          return;
        }
      } catch {
        // No responders, a timeout or a bad answer: the lease's end decides.
      }
    }
    this.stats.waitedOut++;
    leaseBarrierMetrics.outcomes.inc({ result: "waited_out" });
    const left = deadline - this.#clock();
    if (left > 0) await sleep(left);
  }

  /** The registry's fenced copy, opened once the bucket exists; undefined while it does not. */
  async #registry(): Promise<FencedCopy | undefined> {
    if (this.#copy !== undefined) return this.#copy;
    // One open at a time: concurrent writes share it rather than start watches of their own.
    this.#opening ??= this.#open().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening;
  }

  async #open(): Promise<FencedCopy | undefined> {
    if (this.#stopped) throw new Error("lease barrier stopped");
    const name = StoredBucket.authCallout.leases;
    const kv = await new Kvm(jetstream(this.#nc)).open(name, { allow_direct: false });
    try {
      await kv.status();
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return undefined;
      throw err;
    }
    const copy = new FencedCopy(kv, { op: "lease.registry.watch", logger: this.#logger });
    await copy.start();
    if (this.#stopped) {
      copy.stop();
      throw new Error("lease barrier stopped");
    }
    this.#copy = copy;
    return copy;
  }

  stop(): void {
    this.#stopped = true;
    this.#copy?.stop();
  }
}
