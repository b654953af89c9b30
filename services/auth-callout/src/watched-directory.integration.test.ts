import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import { controllableKv, eventually, startTestServer, storedRooms, storedUser } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { DenialCache } from "./denial-cache.js";
import { invalidateOnUserChanges } from "./store/directory.js";
import type { DirectoryEntry } from "./store/directory.js";
import { DirectoryError } from "./errors.js";
import { createAuthCalloutService } from "./service.js";
import { WatchedDirectory } from "./store/watched-directory.js";

const logger = pino({ level: "silent" });

describe("the watched directory on nats-server: an acknowledged write is never followed by an admission with the old rights", () => {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membershipUser = SigningKey.generate();
  const alice = SigningKey.generate();
  let server: TestServer;
  let admin: NatsConnection;
  let calloutNc: NatsConnection;
  let users: KV;
  let rooms: KV;
  let calloutUsers: KV;
  let calloutRooms: KV;

  beforeAll(async () => {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        serviceUsers: [{ service: "membership", nkey: membershipUser.principal, permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"] }) }],
      }),
    });
    admin = await server.connect({ authenticator: nkeyAuthenticator(membershipUser) });
    const kvm = new Kvm(admin);
    users = await kvm.create("users", { allow_direct: false });
    rooms = await kvm.create("rooms_by_member", { allow_direct: false });
    await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "active")));
    await rooms.put(alice.principal, JSON.stringify(storedRooms(alice.principal, { r1: "owner", r2: "member" })));
    calloutNc = await server.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
    const ckvm = new Kvm(calloutNc);
    calloutUsers = await ckvm.open("users", { allow_direct: false });
    calloutRooms = await ckvm.open("rooms_by_member", { allow_direct: false });
  });

  afterAll(async () => {
    await server?.stop();
  });

  // The watches deliver each entry late, as a lagging replica would: on one
  // server the watch is otherwise applied before the writer sees its ack,
  // and an unfenced copy would pass these tests by luck.
  // Logins take longer than lookups to reach the directory (connect, callout
  // request), so the login storm's watches lag more; both stay under the
  // kit's catch-up bound, so the fenced copy keeps answering.
  const LAG_MS = 100;
  const LOGIN_LAG_MS = 300;

  it("a revoke under a concurrent login storm: no login started after the revoke's ack is admitted", async () => {
    const directory = await WatchedDirectory.start(controllableKv(calloutUsers, LOGIN_LAG_MS).kv, controllableKv(calloutRooms, LOGIN_LAG_MS).kv, { logger });
    const denialCache = new DenialCache();
    const watch = invalidateOnUserChanges(calloutUsers, denialCache);
    const service = await createAuthCalloutService(calloutNc, { issuer, directory, denialCache, logger });
    const attempts: Array<{ started: number; admitted: boolean }> = [];
    let storming = true;
    const worker = async (): Promise<void> => {
      while (storming) {
        const started = performance.now();
        const attempt = { started, admitted: false };
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
    const storm = Promise.all(Array.from({ length: 16 }, worker));
    try {
      for (let round = 0; round < 3; round++) {
        await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "active")));
        const activeAt = performance.now();
        await eventually(() => attempts.filter((a) => a.started > activeAt && a.admitted).length, (n) => n >= 20, { timeoutMs: 15_000, what: "logins admitted while active" });
        await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "revoked")));
        const ackAt = performance.now();
        // The storm goes on past the ack: wait until 40 logins started after it have been decided.
        await eventually(() => attempts.filter((a) => a.started > ackAt).length, (n) => n >= 40, { timeoutMs: 15_000, what: "logins after the revoke" });
        const readmitted = attempts.filter((a) => a.started > ackAt && a.admitted);
        expect(readmitted).toEqual([]);
      }
    } finally {
      storming = false;
      await storm;
      await service.stop();
      watch.stop();
      directory.stop();
    }
    // The storm went through the fenced copy, many logins per fence.
    expect(directory.stats.fromMemory).toBeGreaterThan(0);
    expect(directory.stats.fences).toBeLessThan(directory.stats.fromMemory + directory.stats.behind);
  }, 90_000);

  it("a room removal under a concurrent lookup storm: no lookup started after the removal's ack grants the room", async () => {
    const directory = await WatchedDirectory.start(controllableKv(calloutUsers, LAG_MS).kv, controllableKv(calloutRooms, LAG_MS).kv, { logger });
    await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "active")));
    const lookups: Array<{ started: number; entry?: DirectoryEntry | null }> = [];
    let storming = true;
    const worker = async (): Promise<void> => {
      while (storming) {
        const l: { started: number; entry?: DirectoryEntry | null } = { started: performance.now() };
        lookups.push(l);
        l.entry = await directory.lookup(alice.principal);
      }
    };
    const storm = Promise.all(Array.from({ length: 32 }, worker));
    try {
      for (let round = 0; round < 5; round++) {
        await rooms.put(alice.principal, JSON.stringify(storedRooms(alice.principal, { r1: "owner", r2: "member" })));
        const grantedAt = performance.now();
        await eventually(() => lookups.filter((l) => l.started > grantedAt && l.entry?.rooms?.rooms["r1"] !== undefined).length, (n) => n >= 32, { what: "lookups granting r1" });
        await rooms.put(alice.principal, JSON.stringify(storedRooms(alice.principal, { r2: "member" })));
        const ackAt = performance.now();
        await eventually(() => lookups.filter((l) => l.started > ackAt && l.entry !== undefined).length, (n) => n >= 200, { what: "lookups after the removal" });
        const stale = lookups.filter((l) => l.started > ackAt && l.entry !== undefined && l.entry?.rooms?.rooms["r1"] !== undefined);
        expect(stale).toEqual([]);
      }
    } finally {
      storming = false;
      await storm;
      directory.stop();
    }
    expect(directory.stats.fromMemory).toBeGreaterThan(0);
  }, 60_000);

  it("a stalled watch: the revoke its copy has not applied is refused, never answered from the copy, and answered once it catches up", async () => {
    const u = controllableKv(calloutUsers);
    const directory = await WatchedDirectory.start(u.kv, calloutRooms, { logger, stallMs: 60_000 });
    try {
      await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "active")));
      await eventually(() => directory.lookup(alice.principal), (e) => e?.user.status === "active", { what: "alice active in the copy" });
      const before = { ...directory.stats };
      u.stall();
      await users.put(alice.principal, JSON.stringify(storedUser(alice.principal, "revoked")));
      // No per-login leader read behind a stalled copy: a node just resumed
      // from a pause can answer such a read with the old record.
      const err = await directory.lookup(alice.principal).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(DirectoryError);
      expect(directory.stats.behind).toBe(before.behind + 1);
      expect(directory.stats.fromMemory).toBe(before.fromMemory);

      // Released, the copy catches up and answers again.
      u.release();
      await eventually(
        async () => ({ entry: await directory.lookup(alice.principal), fromMemory: directory.stats.fromMemory }),
        (r) => r.entry?.user.status === "revoked" && r.fromMemory > before.fromMemory,
        { what: "the copy answering the revoke" },
      );
    } finally {
      u.release();
      directory.stop();
    }
  }, 30_000);
});
