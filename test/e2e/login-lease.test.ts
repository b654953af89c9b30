import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { CalloutLeaseRunner, DenialCache, WatchedDirectory, calloutMetrics, createAuthCalloutService, invalidateOnUserChanges } from "@unibus/auth-callout";
import type { DirectoryEntry } from "@unibus/auth-callout";
import { CalloutLease, ServiceStorage, StoredBucket } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { calloutServerConfig, openBuckets, serviceStoragePermissions } from "@unibus/kit";
import { LeaseBarrier, leaseBarrierMetrics } from "@unibus/membership";
import type { DirectoryWrite } from "@unibus/membership";
import { controllableKv, counterValue, eventually, startTestServer, storedRooms, storedUser } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";

const logger = pino({ level: "silent" });
const LEASES = StoredBucket.authCallout.leases;

/** A callout replica as the entry builds it: its lagging watched copy, the lease, the denial cache wired to the copy. */
interface Replica {
  readonly directory: WatchedDirectory;
  readonly lease: CalloutLeaseRunner;
  readonly denials: DenialCache;
  stop(): Promise<void>;
}

describe("the callout's login lease with membership's barrier, on nats-server with production permissions", () => {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membershipUser = SigningKey.generate();
  const alice = SigningKey.generate();
  let server: TestServer;
  let membershipNc: NatsConnection;
  let calloutNc: NatsConnection;
  let users: KV;
  let rooms: KV;
  let calloutUsers: KV;
  let calloutRooms: KV;
  let leases: KV;
  let barrier: LeaseBarrier;

  beforeAll(async () => {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        serviceUsers: [{ service: "membership", nkey: membershipUser.principal, permissions: serviceStoragePermissions(ServiceStorage.membership) }],
      }),
    });
    membershipNc = await server.connect({ authenticator: nkeyAuthenticator(membershipUser), inboxPrefix: `_INBOX.${membershipUser.principal}` });
    const kvm = new Kvm(membershipNc);
    users = await kvm.create(StoredBucket.membership.users, { allow_direct: false });
    rooms = await kvm.create(StoredBucket.membership.roomsByMember, { allow_direct: false });
    await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "active")));
    await rooms.put(alice.principal, JSON.stringify(storedRooms(alice.principal, { r1: "owner", r2: "member" })));
    calloutNc = await server.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
    const ckvm = new Kvm(calloutNc);
    calloutUsers = await ckvm.open(StoredBucket.membership.users, { allow_direct: false });
    calloutRooms = await ckvm.open(StoredBucket.membership.roomsByMember, { allow_direct: false });
    barrier = new LeaseBarrier(membershipNc, { logger });
  });

  afterAll(async () => {
    barrier?.stop();
    await server?.stop();
  });

  /** Membership's order: the write's ack, then (unless `settle` is false) the barrier. */
  async function write(kv: KV, key: string, value: unknown, bucket: keyof DirectoryWrite, settle = true): Promise<void> {
    const seq = await kv.put(key, JSON.stringify(value));
    if (settle) await barrier.settle({ [bucket]: seq });
  }

  it("with no callout ever leasing (no registry bucket), a write waits for nothing", async () => {
    const started = performance.now();
    await write(users, alice.principal, storedUser(alice.principal, "active"), "users");
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(barrier.stats).toMatchObject({ answered: 0, waitedOut: 0, registryUnread: 0 });
  });

  // The watches deliver each entry late, as a lagging replica would (on one
  // server the watch otherwise applies a write before its writer sees the
  // ack, and a copy answering from memory would pass by luck).
  const LAG_MS = 300;

  async function replica(opts: { lagMs?: number; denialLagMs?: number; leaseKv?: KV } = {}): Promise<Replica> {
    const denials = new DenialCache();
    const directory = await WatchedDirectory.start(controllableKv(calloutUsers, opts.lagMs ?? LAG_MS).kv, controllableKv(calloutRooms, opts.lagMs ?? LAG_MS).kv, {
      logger,
      onUserApplied: (principal) => denials.invalidate(principal),
    });
    const watch = invalidateOnUserChanges(controllableKv(calloutUsers, opts.denialLagMs ?? 0).kv, denials);
    leases ??= (await openBuckets(jetstream(calloutNc), [{ name: LEASES, ttl: CalloutLease.recordTtlMs }], { budgetMs: 10_000, logger }))[LEASES];
    const lease = await CalloutLeaseRunner.start(calloutNc, opts.leaseKv ?? leases, directory, { logger });
    return {
      directory,
      lease,
      denials,
      async stop() {
        await lease.stop();
        watch.stop();
        directory.stop();
      },
    };
  }

  /** Logins as alice in `loops` loops until stopped; each attempt's start and outcome. */
  function loginStorm(loops: number) {
    const attempts: Array<{ started: number; admitted: boolean }> = [];
    let storming = true;
    const worker = async (): Promise<void> => {
      while (storming) {
        const attempt = { started: performance.now(), admitted: false };
        attempts.push(attempt);
        try {
          const nc = await server.connect({ authenticator: nkeyAuthenticator(alice), inboxPrefix: `_INBOX.${alice.principal}`, reconnect: false, timeout: 5_000 });
          attempt.admitted = true;
          await nc.close();
        } catch {
          // Refused: what a revoked principal gets.
        }
      }
    };
    const done = Promise.all(Array.from({ length: loops }, worker));
    return {
      attempts,
      async stop() {
        storming = false;
        await done;
      },
    };
  }

  async function revokeRounds(settle: boolean): Promise<{ readmitted: number; held: number }> {
    const r = await replica();
    const service = await createAuthCalloutService(calloutNc, { issuer, directory: r.directory, denialCache: r.denials, logger });
    const storm = loginStorm(16);
    let readmitted = 0;
    try {
      for (let round = 0; round < 3; round++) {
        await write(users, alice.principal, storedUser(alice.principal, "active"), "users", settle);
        const activeAt = performance.now();
        await eventually(() => storm.attempts.filter((a) => a.started > activeAt && a.admitted).length, (n) => n >= 20, { timeoutMs: 15_000, what: "logins admitted while active" });
        await write(users, alice.principal, storedUser(alice.principal, "revoked"), "users", settle);
        const ackAt = performance.now();
        await eventually(() => storm.attempts.filter((a) => a.started > ackAt).length, (n) => n >= 40, { timeoutMs: 15_000, what: "logins after the revoke" });
        readmitted += storm.attempts.filter((a) => a.started > ackAt && a.admitted).length;
      }
    } finally {
      await storm.stop();
      await service.stop();
      await r.stop();
    }
    return { readmitted, held: r.directory.stats.held };
  }

  it("a revoke under a login storm answered from memory: the write is acknowledged after the barrier, and no login started after it is admitted", async () => {
    const before = { ...barrier.stats };
    const { readmitted, held } = await revokeRounds(true);
    expect(readmitted).toBe(0);
    // Logins were answered from memory under the lease, and the writes waited for the replica's answer.
    expect(held).toBeGreaterThan(0);
    expect(barrier.stats.answered).toBeGreaterThan(before.answered);
  }, 120_000);

  it("the same storm with the barrier left out admits the revoked principal (the barrier is what makes the lease safe)", async () => {
    const { readmitted, held } = await revokeRounds(false);
    expect(held).toBeGreaterThan(0);
    expect(readmitted).toBeGreaterThan(0);
  }, 120_000);

  it("a room removal under a lookup storm: no lookup started after the acknowledged removal grants the room", async () => {
    const r = await replica();
    await write(users, alice.principal, storedUser(alice.principal, "active"), "users");
    const lookups: Array<{ started: number; entry?: DirectoryEntry | null }> = [];
    let storming = true;
    const worker = async (): Promise<void> => {
      while (storming) {
        const l: { started: number; entry?: DirectoryEntry | null } = { started: performance.now() };
        lookups.push(l);
        l.entry = await r.directory.lookup(alice.principal).catch(() => undefined);
        await new Promise((res) => setImmediate(res));
      }
    };
    const storm = Promise.all(Array.from({ length: 8 }, worker));
    try {
      for (let round = 0; round < 4; round++) {
        await write(rooms, alice.principal, storedRooms(alice.principal, { r1: "owner", r2: "member" }), "rooms_by_member");
        const grantedAt = performance.now();
        await eventually(() => lookups.filter((l) => l.started > grantedAt && l.entry?.rooms?.rooms["r1"] !== undefined).length, (n) => n >= 8, { what: "lookups granting r1" });
        await write(rooms, alice.principal, storedRooms(alice.principal, { r2: "member" }), "rooms_by_member");
        const ackAt = performance.now();
        await eventually(() => lookups.filter((l) => l.started > ackAt && l.entry !== undefined).length, (n) => n >= 100, { what: "lookups after the removal" });
        expect(lookups.filter((l) => l.started > ackAt && l.entry?.rooms?.rooms["r1"] !== undefined)).toEqual([]);
      }
    } finally {
      storming = false;
      await storm;
      await r.stop();
    }
    expect(r.directory.stats.held).toBeGreaterThan(0);
  }, 60_000);

  it("a replica that stops answering barriers delays a write by at most one lease, then answers no login from memory", async () => {
    const r = await replica({ lagMs: 0 });
    try {
      await eventually(() => r.lease.keeper.current(), (m) => m !== undefined, { what: "the lease held" });
      expect(await counterValue(calloutMetrics.leaseHeld)).toBe(1);
      r.lease.silence();
      const waitedOutBefore = await counterValue(leaseBarrierMetrics.outcomes, { result: "waited_out" });
      const started = performance.now();
      await write(users, alice.principal, storedUser(alice.principal, "active"), "users");
      const waited = performance.now() - started;
      // The operator sees the wait: one lease waited out, and the silent replica no longer holds its lease.
      expect(await counterValue(leaseBarrierMetrics.outcomes, { result: "waited_out" })).toBe(waitedOutBefore + 1);
      expect(await counterValue(calloutMetrics.leaseHeld)).toBe(0);
      // Its lease was written at most a renewal period before: the wait is about the rest of it, never more than a lease.
      expect(waited).toBeLessThan(CalloutLease.durationMs + 500);
      expect(waited).toBeGreaterThan(CalloutLease.durationMs - CalloutLease.renewEveryMs - 500);
      // By then its lease has run out: every lookup takes a fence.
      expect(r.lease.keeper.current()).toBeUndefined();
      const before = { ...r.directory.stats };
      expect((await r.directory.lookup(alice.principal))?.user.status).toBe("active");
      expect(r.directory.stats.held).toBe(before.held);
      expect(r.directory.stats.fences).toBe(before.fences + 1);
      // The silent replica's record is unchanged: the next write does not wait for it again.
      const again = performance.now();
      await write(users, alice.principal, storedUser(alice.principal, "active"), "users");
      expect(performance.now() - again).toBeLessThan(1_000);
    } finally {
      await r.stop();
    }
  }, 30_000);

  it("a lease renewal that fails drops the lease at once: logins go back to a fence each", async () => {
    let failing = false;
    const flaky = new Proxy(leases ?? (await openBuckets(jetstream(calloutNc), [{ name: LEASES, ttl: CalloutLease.recordTtlMs }], { budgetMs: 10_000, logger }))[LEASES], {
      get(target, prop, receiver) {
        if (prop === "put") return (...args: Parameters<KV["put"]>) => (failing ? Promise.reject(new Error("lease write refused")) : target.put(...args));
        const v: unknown = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const r = await replica({ lagMs: 0, leaseKv: flaky });
    try {
      await eventually(() => r.lease.keeper.current(), (m) => m !== undefined, { what: "the lease held" });
      expect((await r.directory.lookup(alice.principal))?.user.status).toBe("active");
      expect(r.directory.stats.held).toBeGreaterThan(0);
      expect(await counterValue(calloutMetrics.leaseHeld)).toBe(1);
      const failedBefore = await counterValue(calloutMetrics.leaseRenewals, { result: "failed" });
      failing = true;
      const failures = r.lease.keeper.stats.failures;
      await eventually(() => r.lease.keeper.stats.failures, (n) => n > failures, { what: "a failed renewal" });
      // Dropped at once, not at the end of the lease it had; /metrics says so.
      expect(r.lease.keeper.current()).toBeUndefined();
      expect(await counterValue(calloutMetrics.leaseHeld)).toBe(0);
      expect(await counterValue(calloutMetrics.leaseRenewals, { result: "failed" })).toBeGreaterThan(failedBefore);
      const before = { ...r.directory.stats };
      expect((await r.directory.lookup(alice.principal))?.user.status).toBe("active");
      expect(r.directory.stats.held).toBe(before.held);
      expect(r.directory.stats.fences).toBe(before.fences + 1);
    } finally {
      await r.stop();
    }
  }, 30_000);

  it("a replica starting while writes go on never answers a lookup without a write acknowledged before it", async () => {
    const first = await replica();
    const replicas = [first];
    const lookups: Array<{ started: number; status?: string }> = [];
    let storming = true;
    const worker = (i: number) => async (): Promise<void> => {
      while (storming) {
        const dir = replicas[i % replicas.length]!.directory;
        const l: { started: number; status?: string } = { started: performance.now() };
        lookups.push(l);
        l.status = (await dir.lookup(alice.principal).catch(() => undefined))?.user.status;
        await new Promise((res) => setImmediate(res));
      }
    };
    const storm = Promise.all(Array.from({ length: 8 }, (_, i) => worker(i)()));
    try {
      for (let round = 0; round < 4; round++) {
        // The second replica starts (and takes its first lease) while the writes go on.
        const starting = round === 1 ? replica().then((r) => replicas.push(r)) : Promise.resolve();
        await write(users, alice.principal, storedUser(alice.principal, "active"), "users");
        const activeAt = performance.now();
        await eventually(() => lookups.filter((l) => l.started > activeAt && l.status === "active").length, (n) => n >= 8, { what: "lookups active" });
        await write(users, alice.principal, storedUser(alice.principal, "revoked"), "users");
        const ackAt = performance.now();
        await starting;
        await eventually(() => lookups.filter((l) => l.started > ackAt && l.status !== undefined).length, (n) => n >= 100, { what: "lookups after the revoke" });
        expect(lookups.filter((l) => l.started > ackAt && l.status === "active")).toEqual([]);
      }
      expect(replicas).toHaveLength(2);
      expect(replicas[1]!.directory.stats.held).toBeGreaterThan(0);
    } finally {
      storming = false;
      await storm;
      for (const r of replicas) await r.stop();
    }
  }, 90_000);

  it("a refused principal added by an acknowledged write logs in at the very next attempt (no cached refusal)", async () => {
    const bob = SigningKey.generate();
    // The denial cache's own users watch lags far behind: only the copy's
    // invalidation (applied before the barrier answers) can clear it in time.
    const r = await replica({ denialLagMs: 5_000 });
    const service = await createAuthCalloutService(calloutNc, { issuer, directory: r.directory, denialCache: r.denials, logger });
    const login = (): Promise<boolean> =>
      server.connect({ authenticator: nkeyAuthenticator(bob), inboxPrefix: `_INBOX.${bob.principal}`, reconnect: false, timeout: 5_000 }).then(
        async (nc) => {
          await nc.close();
          return true;
        },
        () => false,
      );
    try {
      await eventually(() => r.lease.keeper.current(), (m) => m !== undefined, { what: "the lease held" });
      expect(await login()).toBe(false);
      expect(r.denials.lookup(bob.principal)).toBeDefined();
      await write(users, bob.principal, storedUser(bob.principal, "active"), "users");
      expect(await login()).toBe(true);
    } finally {
      await service.stop();
      await r.stop();
    }
  }, 30_000);
});
