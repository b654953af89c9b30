import { randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { CalloutLease, leaseBarrierSubject } from "@unibus/contracts";
import type { FenceMark } from "@unibus/kit";
import type { Logger } from "pino";
import { calloutMetrics, reportLeaseHeld, stopReportingLeaseHeld } from "../metrics.js";
import type { DirectoryLease, WatchedDirectory } from "./watched-directory.js";

/** Local monotonic milliseconds (never the wall clock: a clock step must not stretch a lease). */
export type MonotonicClock = () => number;

const monotonic: MonotonicClock = () => performance.now();

/**
 * How long a lease written at a moment stays usable: its duration less the
 * margin for this clock running slower than membership's (10%, at least
 * 100 ms). Membership waits the whole duration on its own clock.
 */
export function leaseUsableMs(durationMs: number): number {
  return durationMs - Math.max(durationMs * CalloutLease.marginRatio, CalloutLease.marginMinMs);
}

/** What {@link LeaseKeeper} works with: the record's write, the directory's fence, and a clock. */
export interface LeaseKeeperDeps {
  readonly clock: MonotonicClock;
  readonly durationMs: number;
  /** Writes this replica's lease record; resolves once the bucket acknowledged it. */
  write(): Promise<void>;
  /** A fence sent after this call, resolved once the copies have applied it. */
  fence(): Promise<FenceMark>;
  /** Whether the copies still hold what a fence proved (same watchers, not behind). */
  holds(mark: FenceMark): boolean;
  /** The copies' watchers, as a key that changes whenever one is replaced. */
  generation(): string;
}

/**
 * The lease state machine. A renewal is: note the time, write the record,
 * after its ack send a fence and wait for the copies to apply it; only then
 * is the lease extended to (that time + the usable duration). Any failure,
 * a copy whose watcher was replaced, or a lease run out drops it at once;
 * without a lease every login is fenced as before, so correctness never
 * depends on the lease being held.
 */
export class LeaseKeeper implements DirectoryLease {
  readonly #deps: LeaseKeeperDeps;
  #held: { mark: FenceMark; validUntil: number } | undefined;
  readonly stats = { renewals: 0, failures: 0 };

  constructor(deps: LeaseKeeperDeps) {
    this.#deps = deps;
  }

  /** One renewal; true if the lease is held after it. */
  async renew(): Promise<boolean> {
    // Before the write: a membership write acknowledged after reading this
    // record waits for this moment + the duration at the latest.
    const sentAt = this.#deps.clock();
    // The same watchers from before the write to the fence's catch-up: a
    // watcher replaced meanwhile may have answered a barrier in its old
    // life that its replay, caught up only to this fence, does not hold.
    const generation = this.#deps.generation();
    try {
      await this.#deps.write();
      const mark = await this.#deps.fence();
      const validUntil = sentAt + leaseUsableMs(this.#deps.durationMs);
      if (this.#deps.generation() !== generation || !this.#deps.holds(mark) || this.#deps.clock() >= validUntil) {
        this.#fail();
        return false;
      }
      this.#held = { mark, validUntil };
      this.stats.renewals++;
      return true;
    } catch {
      this.#fail();
      return false;
    }
  }

  current(): FenceMark | undefined {
    const held = this.#held;
    if (held === undefined) return undefined;
    if (this.#deps.clock() >= held.validUntil || !this.#deps.holds(held.mark)) {
      this.#held = undefined;
      return undefined;
    }
    return held.mark;
  }

  drop(): void {
    this.#held = undefined;
  }

  #fail(): void {
    this.#held = undefined;
    this.stats.failures++;
  }
}

/** The lease record a replica writes (nothing secret: any bucket reader may see it). */
export interface LeaseRecord {
  readonly replica: string;
  readonly barrier: string;
  readonly durationMs: number;
}

/** Options of {@link CalloutLease}. */
export interface CalloutLeaseOptions {
  readonly logger: Logger;
  /** Unique per process; default 16 random hex digits. */
  readonly replicaId?: string;
  /** Default {@link CalloutLease.durationMs} (tests shorten it; never longer). */
  readonly durationMs?: number;
  /** Default {@link CalloutLease.renewEveryMs}. */
  readonly renewEveryMs?: number;
  readonly clock?: MonotonicClock;
}

/** Barrier waits at once; beyond, a request is not answered and its writer waits for the lease to run out. */
const MAX_BARRIERS = 256;

function isSeq(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * One callout replica's login lease: renews its record in `callout_leases`
 * every second (write, then a fence, then caught up), lets the directory
 * answer logins from memory while it holds, and answers membership's
 * barrier requests on its own subject once its copies applied the write
 * named. A request with anything but two sequences gets no answer; an
 * answer says only "applied".
 */
export class CalloutLeaseRunner {
  readonly replicaId: string;
  readonly keeper: LeaseKeeper;
  readonly #kv: KV;
  readonly #directory: WatchedDirectory;
  readonly #logger: Logger;
  readonly #durationMs: number;
  readonly #renewEveryMs: number;
  readonly #sub: Subscription;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #barriers = 0;
  readonly barrierStats = { answered: 0, unanswered: 0, malformed: 0 };
  /** What the `unibus_callout_lease_held` gauge reads while this runner runs. */
  readonly #heldNow = (): boolean => this.keeper.current() !== undefined;

  private constructor(nc: NatsConnection, kv: KV, directory: WatchedDirectory, opts: CalloutLeaseOptions) {
    this.replicaId = opts.replicaId ?? randomBytes(8).toString("hex");
    this.#kv = kv;
    this.#directory = directory;
    this.#logger = opts.logger;
    this.#durationMs = Math.min(opts.durationMs ?? CalloutLease.durationMs, CalloutLease.durationMs);
    this.#renewEveryMs = opts.renewEveryMs ?? CalloutLease.renewEveryMs;
    const record: LeaseRecord = { replica: this.replicaId, barrier: leaseBarrierSubject(this.replicaId), durationMs: this.#durationMs };
    const payload = JSON.stringify(record);
    this.keeper = new LeaseKeeper({
      clock: opts.clock ?? monotonic,
      durationMs: this.#durationMs,
      write: async () => {
        await kv.put(this.replicaId, payload);
      },
      fence: () => directory.mark(),
      holds: (mark) => directory.holds(mark),
      generation: () => directory.generation(),
    });
    this.#sub = nc.subscribe(record.barrier, { callback: (err, msg) => (err === null ? void this.#barrier(msg) : undefined) });
  }

  /** Subscribes to the barrier first (a record must never name a subject nobody answers), then takes the first lease. */
  static async start(nc: NatsConnection, kv: KV, directory: WatchedDirectory, opts: CalloutLeaseOptions): Promise<CalloutLeaseRunner> {
    const runner = new CalloutLeaseRunner(nc, kv, directory, opts);
    await nc.flush();
    directory.useLease(runner.keeper);
    reportLeaseHeld(runner.#heldNow);
    await runner.#renew(true);
    return runner;
  }

  async #renew(first = false): Promise<void> {
    if (this.#stopped) return;
    const had = this.keeper.current() !== undefined;
    const ok = await this.keeper.renew();
    calloutMetrics.leaseRenewals.inc({ result: ok ? "held" : "failed" });
    if (ok !== had || first) this.#logger.info({ op: "lease", replica: this.replicaId, held: ok }, ok ? "login lease held: logins answered from memory" : "login lease lost: every login fenced");
    if (!this.#stopped) this.#timer = setTimeout(() => void this.#renew(), this.#renewEveryMs);
  }

  async #barrier(msg: Msg): Promise<void> {
    let req: unknown;
    try {
      req = msg.json();
    } catch {
      req = undefined;
    }
    const r = req as { users?: unknown; rooms_by_member?: unknown } | undefined;
    if (msg.reply === undefined || r === undefined || r === null || typeof r !== "object" || !isSeq(r.users) || !isSeq(r.rooms_by_member)) {
      this.barrierStats.malformed++;
      calloutMetrics.leaseBarriers.inc({ result: "malformed" });
      return;
    }
    if (this.#barriers >= MAX_BARRIERS) {
      this.barrierStats.unanswered++;
      calloutMetrics.leaseBarriers.inc({ result: "unanswered" });
      return;
    }
    this.#barriers++;
    try {
      // Bounded by a lease's length: past it the writer no longer waits.
      if (await this.#directory.appliedUpTo(r.users, r.rooms_by_member, this.#durationMs)) {
        msg.respond(JSON.stringify({ applied: true }));
        this.barrierStats.answered++;
        calloutMetrics.leaseBarriers.inc({ result: "answered" });
      } else {
        this.barrierStats.unanswered++;
        calloutMetrics.leaseBarriers.inc({ result: "unanswered" });
      }
    } catch (err) {
      this.barrierStats.unanswered++;
      calloutMetrics.leaseBarriers.inc({ result: "unanswered" });
      this.#logger.debug({ op: "lease.barrier", err: err instanceof Error ? err.message : String(err) }, "barrier not answered");
    } finally {
      this.#barriers--;
    }
  }

  /** Drops the lease, stops answering barriers, and deletes the record (best effort: a record left behind only costs writers one wait). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.keeper.drop();
    this.#directory.useLease(undefined);
    stopReportingLeaseHeld(this.#heldNow);
    this.#sub.unsubscribe();
    await this.#kv.delete(this.replicaId).catch(() => undefined);
  }

  /** Stops renewing and answering barriers without deleting the record (tests: a replica that went silent). */
  silence(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#sub.unsubscribe();
  }
}
