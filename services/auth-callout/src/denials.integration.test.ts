import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { AuditDenialRecord } from "@unibus/contracts";
import { AuditDenialStream, auditDenialSubject } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import { counterValue, eventually, startTestServer, storedUser } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import {
  CalloutXkey,
  DenialCache,
  KvPrincipalDirectory,
  calloutMetrics,
  createAuthCalloutService,
  invalidateOnUserChanges,
} from "./index.js";
import type { DenialCacheOptions, DirectoryEntry, PrincipalDirectory, UserChangeWatch } from "./index.js";

const quiet = pino({ level: "silent" });

// Records as membership stores them: the callout refuses any other shape as damaged.

/** The real KV directory, with a read counter and a switch that makes it fail like a lost quorum. */
class CountingDirectory implements PrincipalDirectory {
  reads = 0;
  failing = false;
  constructor(private readonly inner: PrincipalDirectory) {}
  lookup(principal: string): Promise<DirectoryEntry | null> {
    this.reads++;
    if (this.failing) return Promise.reject(new Error("no quorum"));
    return this.inner.lookup(principal);
  }
}

/** A bus of one server, the callout and the audit stream, as production lays them out. */
async function startBus(cacheOptions: DenialCacheOptions, watch: boolean) {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membershipUser = SigningKey.generate();
  const xkey = CalloutXkey.generate();
  const server: TestServer = await startTestServer({
    config: calloutServerConfig({
      issuerAccountPublic: issuer.principal,
      calloutUserPublic: calloutUser.principal,
      xkeyPublic: xkey.publicKey,
      serviceUsers: [
        {
          service: "membership",
          nkey: membershipUser.principal,
          permissions: servicePermissions({
            service: "membership",
            kvBuckets: ["users", "rooms_by_member"],
            publish: [`$JS.API.STREAM.CREATE.${AuditDenialStream.name}`, `$JS.API.STREAM.MSG.GET.${AuditDenialStream.name}`],
          }),
        },
      ],
    }),
  });
  const admin = await server.connect({ authenticator: nkeyAuthenticator(membershipUser), inboxPrefix: `_INBOX.${membershipUser.principal}` });
  const kvm = new Kvm(admin);
  const users = await kvm.create("users", { allow_direct: false });
  await kvm.create("rooms_by_member", { allow_direct: false });
  const jsm = await jetstreamManager(admin);
  await jsm.streams.add({ name: AuditDenialStream.name, subjects: [`${AuditDenialStream.subjectPrefix}.>`], max_msgs: 1000 });
  const calloutNc = await server.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
  const ckvm = new Kvm(calloutNc);
  const cusers = await ckvm.open("users", { allow_direct: false });
  const directory = new CountingDirectory(new KvPrincipalDirectory(cusers, await ckvm.open("rooms_by_member", { allow_direct: false })));
  const denialCache = new DenialCache(cacheOptions);
  const watcher: UserChangeWatch | undefined = watch ? invalidateOnUserChanges(cusers, denialCache) : undefined;
  await createAuthCalloutService(calloutNc, { issuer, xkey, directory, denialCache, logger: quiet });
  const connectAs = (key: SigningKey, opts: Record<string, unknown> = {}): Promise<NatsConnection> =>
    server.connect({ authenticator: nkeyAuthenticator(key), inboxPrefix: `_INBOX.${key.principal}`, reconnect: false, timeout: 5000, ...opts });
  /** The newest audit record of `principal` (or of clients that presented none), once one exists. */
  const lastRecord = (principal: string | undefined, what: (r: AuditDenialRecord) => boolean = () => true): Promise<AuditDenialRecord> =>
    eventually(
      async () => {
        const m = await jsm.streams.getMessage(AuditDenialStream.name, { last_by_subj: auditDenialSubject(principal) }).catch(() => null);
        return m === null ? null : m.json<AuditDenialRecord>();
      },
      (r): r is AuditDenialRecord => r !== null && what(r),
      { what: `audit record of ${principal ?? "no principal"}` },
    ) as Promise<AuditDenialRecord>;
  return {
    server,
    users,
    jsm,
    directory,
    denialCache,
    connectAs,
    lastRecord,
    async stop() {
      watcher?.stop();
      await server.stop();
    },
  };
}

type Bus = Awaited<ReturnType<typeof startBus>>;

describe("refused logins are recorded and answered cheaply", () => {
  let bus: Bus;
  const alice = SigningKey.generate();
  const carol = SigningKey.generate(); // revoked
  const since = new Date();

  beforeAll(async () => {
    // A long TTL: only the users-bucket watch can make an ADD visible here.
    bus = await startBus({ ttlMs: 60_000, addressThreshold: 10_000, delayInitialMs: 50, delayMaxMs: 200 }, true);
    await bus.users.put(alice.principal, JSON.stringify(storedUser(alice.principal)));
    await bus.users.put(carol.principal, JSON.stringify(storedUser(carol.principal, "revoked")));
  });
  afterAll(async () => {
    await bus?.stop();
  });

  const expectRecord = (r: AuditDenialRecord, reason: AuditDenialRecord["reason"], principal: string | undefined): void => {
    expect(r.reason).toBe(reason);
    expect(r.principal).toBe(principal);
    expect(r.address).toBe("127.0.0.1");
    expect(r.server.length).toBeGreaterThan(0);
    expect(Date.parse(r.time)).toBeGreaterThanOrEqual(since.getTime() - 1000);
    expect(Date.parse(r.time)).toBeLessThanOrEqual(Date.now());
  };

  it("an unknown principal is recorded as unknown_principal, and the client hears only the generic refusal", async () => {
    const stranger = SigningKey.generate();
    const err = await bus.connectAs(stranger).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/authorization violation/i);
    expect(err?.message).not.toMatch(/allowlist|unknown|revoked/i);
    expectRecord(await bus.lastRecord(stranger.principal), "unknown_principal", stranger.principal);
  });

  it("a revoked principal is recorded as revoked", async () => {
    await expect(bus.connectAs(carol)).rejects.toThrow(/authorization/i);
    expectRecord(await bus.lastRecord(carol.principal), "revoked", carol.principal);
  });

  it("a signature over the wrong nonce is recorded as bad_signature, and does not lock the real key out", async () => {
    const forged = (): { nkey: string; sig: string } => ({ nkey: alice.principal, sig: Buffer.from(alice.sign(Buffer.from("not-the-nonce"))).toString("base64") });
    for (let i = 0; i < 3; i++) await expect(bus.connectAs(alice, { authenticator: forged })).rejects.toThrow(/authorization/i);
    expectRecord(await bus.lastRecord(alice.principal), "bad_signature", alice.principal);
    await (await bus.connectAs(alice)).close();
  });

  it("a connect without a usable nkey is recorded as malformed, with no principal", async () => {
    const lastSeq = (): Promise<number> => bus.jsm.streams.getMessage(AuditDenialStream.name, { last_by_subj: auditDenialSubject(undefined) }).then((m) => m?.seq ?? 0, () => 0);
    const before = await lastSeq();
    await expect(bus.server.connect({ reconnect: false, timeout: 5000 })).rejects.toThrow(/authorization/i);
    const rec = await bus.lastRecord(undefined);
    expectRecord(rec, "malformed", undefined);
    expect(await lastSeq()).toBeGreaterThan(before);
  });

  it("a directory that cannot answer denies (fail closed) and is recorded as directory_unavailable", async () => {
    const dave = SigningKey.generate();
    await bus.users.put(dave.principal, JSON.stringify(storedUser(dave.principal)));
    bus.directory.failing = true;
    try {
      await expect(bus.connectAs(dave)).rejects.toThrow(/authorization/i);
    } finally {
      bus.directory.failing = false;
    }
    expectRecord(await bus.lastRecord(dave.principal), "directory_unavailable", dave.principal);
    // Not cached: the directory is asked again once it is back.
    await (await bus.connectAs(dave)).close();
  });

  it("repeats of a refusal are answered from the cache: no directory read, counted in the metrics", async () => {
    const eve = SigningKey.generate();
    const hitsBefore = await counterValue(calloutMetrics.denialCacheHits);
    const deniedBefore = await counterValue(calloutMetrics.logins, { result: "denied", reason: "unknown_principal" });
    await expect(bus.connectAs(eve)).rejects.toThrow(/authorization/i);
    const reads = bus.directory.reads;
    for (let i = 0; i < 5; i++) await expect(bus.connectAs(eve)).rejects.toThrow(/authorization/i);
    expect(bus.directory.reads).toBe(reads);
    expect(await counterValue(calloutMetrics.denialCacheHits)).toBe(hitsBefore + 5);
    expect(await counterValue(calloutMetrics.logins, { result: "denied", reason: "unknown_principal" })).toBe(deniedBefore + 6);
  });

  it("a repeat offender's refusals are held longer and longer (server-side back-off), up to the ceiling", async () => {
    const ivan = SigningKey.generate();
    await expect(bus.connectAs(ivan)).rejects.toThrow(/authorization/i);
    const took: number[] = [];
    for (let i = 0; i < 4; i++) {
      const t = performance.now();
      await expect(bus.connectAs(ivan)).rejects.toThrow(/authorization/i);
      took.push(performance.now() - t);
    }
    expect(took[0]).toBeGreaterThanOrEqual(45);
    expect(took[1]).toBeGreaterThanOrEqual(95);
    expect(took[2]).toBeGreaterThanOrEqual(195);
    expect(took[3]).toBeGreaterThanOrEqual(195);
    expect(took[3]).toBeLessThan(1_500);
  });

  it("a principal refused as unknown logs in as soon as an admin adds it (the cache never hides an ADD)", async () => {
    const frank = SigningKey.generate();
    await expect(bus.connectAs(frank)).rejects.toThrow(/authorization/i);
    await expect(bus.connectAs(frank)).rejects.toThrow(/authorization/i); // now answered from the 60 s cache
    await bus.users.put(frank.principal, JSON.stringify(storedUser(frank.principal)));
    const added = Date.now();
    const nc = await eventually(
      () => bus.connectAs(frank).catch(() => null),
      (c) => c !== null,
      { timeoutMs: 2_000, what: "login after the add" },
    );
    expect(Date.now() - added).toBeLessThan(2_000);
    await nc?.close();
  });

  it("a revoked member is never admitted again, however often it retries", async () => {
    const gina = SigningKey.generate();
    await bus.users.put(gina.principal, JSON.stringify(storedUser(gina.principal)));
    await (await bus.connectAs(gina)).close();
    await bus.users.put(gina.principal, JSON.stringify(storedUser(gina.principal, "revoked")));
    for (let i = 0; i < 10; i++) await expect(bus.connectAs(gina)).rejects.toThrow(/authorization/i);
    expect((await bus.lastRecord(gina.principal)).reason).toBe("revoked");
  });

  it("allowed logins are counted by result", async () => {
    const before = await counterValue(calloutMetrics.logins, { result: "allowed" });
    await (await bus.connectAs(alice)).close();
    expect(await counterValue(calloutMetrics.logins, { result: "allowed" })).toBe(before + 1);
  });
});

describe("per-address back-off and the cache TTL bound", () => {
  let bus: Bus;
  const member = SigningKey.generate();

  beforeAll(async () => {
    // No users watch: the TTL alone must bound how long an ADD stays hidden.
    bus = await startBus({ ttlMs: 1_000, addressThreshold: 3, addressWindowMs: 60_000 }, false);
    await bus.users.put(member.principal, JSON.stringify(storedUser(member.principal)));
    await (await bus.connectAs(member)).close(); // a recent login exempts it from its address's limit
  });
  afterAll(async () => {
    await bus?.stop();
  });

  it("an address over its refusal budget is refused as rate_limited without a directory read; a member who logged in recently still gets in", async () => {
    for (let i = 0; i < 3; i++) await expect(bus.connectAs(SigningKey.generate())).rejects.toThrow(/authorization/i);
    const reads = bus.directory.reads;
    const next = SigningKey.generate();
    await bus.users.put(next.principal, JSON.stringify(storedUser(next.principal)));
    await expect(bus.connectAs(next)).rejects.toThrow(/authorization/i);
    expect(bus.directory.reads).toBe(reads);
    expect((await bus.lastRecord(next.principal)).reason).toBe("rate_limited");
    await (await bus.connectAs(member)).close();
  });
});

describe("the cache TTL bounds a hidden ADD when no change notice arrives", () => {
  let bus: Bus;
  beforeAll(async () => {
    bus = await startBus({ ttlMs: 1_000, addressThreshold: 10_000 }, false);
  });
  afterAll(async () => {
    await bus?.stop();
  });

  it("a principal refused as unknown logs in within the TTL after it is added", async () => {
    const hank = SigningKey.generate();
    await expect(bus.connectAs(hank)).rejects.toThrow(/authorization/i);
    await bus.users.put(hank.principal, JSON.stringify(storedUser(hank.principal)));
    const added = Date.now();
    await expect(bus.connectAs(hank)).rejects.toThrow(/authorization/i); // still cached: no watch here
    const nc = await eventually(
      () => bus.connectAs(hank).catch(() => null),
      (c) => c !== null,
      { timeoutMs: 3_000, intervalMs: 100, what: "login after the TTL" },
    );
    expect(Date.now() - added).toBeLessThan(1_000 + 1_500);
    await nc?.close();
  });
});

describe("the back-off outlives the cache entry, and never delays a login", () => {
  let bus: Bus;
  beforeAll(async () => {
    // A cache entry outlived by the back-off several times over; a ceiling
    // far above a login's own time, so "not delayed" is measurable.
    bus = await startBus({ ttlMs: 150, addressThreshold: 10_000, delayInitialMs: 50, delayMaxMs: 800 }, true);
  });
  afterAll(async () => {
    await bus?.stop();
  });

  const timed = async (p: () => Promise<unknown>): Promise<number> => {
    const t = performance.now();
    await p().catch(() => undefined);
    return performance.now() - t;
  };

  it("a retry loop stays held at the ceiling across cache expiries, fully checked refusals included, and each is still audited", async () => {
    const mallory = SigningKey.generate();
    await bus.users.put(mallory.principal, JSON.stringify(storedUser(mallory.principal, "revoked")));
    const first = await timed(() => bus.connectAs(mallory));
    // The first refusal is prompt: below the first hold, let alone the ceiling.
    expect(first).toBeLessThan(800);
    const took: number[] = [];
    const fullChecks: number[] = [];
    for (let i = 0; i < 7; i++) {
      const reads = bus.directory.reads;
      took.push(await timed(() => bus.connectAs(mallory)));
      if (bus.directory.reads > reads) fullChecks.push(i);
    }
    // 50, 100, 200, 400, then the ceiling; each hold outlasts the 150 ms
    // entry, so later attempts were fully checked and were held all the same.
    expect(took.slice(0, 4).map((t, i) => t >= 50 * 2 ** i - 5)).toEqual([true, true, true, true]);
    for (const t of took.slice(4)) expect(t).toBeGreaterThanOrEqual(795);
    expect(fullChecks.filter((i) => i >= 4).length).toBeGreaterThan(0);
    const rec = await bus.lastRecord(mallory.principal, (r) => r.cached === undefined && Date.parse(r.time) > Date.now() - 3_000);
    expect(rec.reason).toBe("revoked");
  });

  it("a member refused many times logs in at once when added: a login is never held", async () => {
    const nina = SigningKey.generate();
    for (let i = 0; i < 6; i++) await expect(bus.connectAs(nina)).rejects.toThrow(/authorization/i);
    expect((await bus.lastRecord(nina.principal)).reason).toBe("unknown_principal");
    await bus.users.put(nina.principal, JSON.stringify(storedUser(nina.principal)));
    // The users watch drops the cache entry; the back-off stays remembered, but applies to refusals only.
    const nc = await eventually(
      () => bus.connectAs(nina).catch(() => null),
      (c) => c !== null,
      { timeoutMs: 5_000, intervalMs: 20, what: "login after the add" },
    );
    await nc?.close();
    expect(await timed(() => bus.connectAs(nina).then((c) => c.close()))).toBeLessThan(400);
  });
});
