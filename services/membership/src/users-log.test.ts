import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, StoredBucket, Subjects, UnibusError } from "@unibus/contracts";
import { SigningKey, signEnvelope } from "@unibus/crypto";
import { RoomLogOp, UsersLogErrorReason, UsersLogOp, UsersLogSync, VerifiedRoomLog, connect, roomLogEntry, usersLogEntry, verifyRoomLog, verifyUsersLog } from "@unibus/sdk";
import type { PinnedUsersLog, UnibusClient, UsersLogEntry } from "@unibus/sdk";
import { rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import { UserStatus } from "./store/records.js";
import { UsersLogStore } from "./store/users-log.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

const silent = pino({ level: "silent" });
const encoder = new TextEncoder();

let server: TestServer;
let nc: NatsConnection;
let svc: RunningMembershipService;
const bootKey = SigningKey.generate();
const rootAdminKey = SigningKey.generate();
const adminKey = SigningKey.generate();
const ownerKey = SigningKey.generate();
const memberKey = SigningKey.generate();
let rootAdmin: UnibusClient;
let admin: UnibusClient;
let owner: UnibusClient;
let member: UnibusClient;
let roomId = "";

/** A test-only in-memory pin, like the CLI's file. */
function memoryPin(): { get(): PinnedUsersLog | undefined; set(p: PinnedUsersLog): void; value?: PinnedUsersLog } {
  const box: { value?: PinnedUsersLog; get(): PinnedUsersLog | undefined; set(p: PinnedUsersLog): void } = {
    get: () => box.value,
    set: (p) => {
      box.value = p;
    },
  };
  return box;
}

/** A fetch over a fixed list of entries, as a lying service would answer. */
function serve(entries: readonly UsersLogEntry[], headSeq = entries.length - 1) {
  return (from: number, limit: number) => Promise.resolve({ headSeq, entries: entries.slice(from, from + limit) });
}

/** An entry signed by `key` appended after `entries`, as a forging service would store it. */
function forged(entries: readonly UsersLogEntry[], key: SigningKey, op: "add" | "revoke", body: Record<string, unknown>): UsersLogEntry {
  const bytes = encoder.encode(JSON.stringify(body));
  const subject = op === "add" ? Subjects.membership.usersAdd : Subjects.membership.usersRevoke;
  const log = verifyUsersLog(entries);
  return usersLogEntry({
    after: log,
    op,
    body: bytes,
    envelope: signEnvelope(key, subject, bytes),
    target: body["principal"] as string,
    ...(op === "add" ? { role: body["role"] as "admin" | "member" } : {}),
    at: new Date().toISOString(),
  });
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal });
  const boot = await connect({ url: server.url, identity: bootKey });
  await boot.admin.bootstrap(rootAdminKey.principal, "root");
  await boot.close();
  rootAdmin = await connect({ url: server.url, identity: rootAdminKey });
  await rootAdmin.users.add(adminKey.principal, "second-admin", "admin");
  await rootAdmin.users.add(ownerKey.principal, "owner", "member");
  await rootAdmin.users.add(memberKey.principal, "member", "member");
  admin = await connect({ url: server.url, identity: adminKey });
  owner = await connect({ url: server.url, identity: ownerKey });
  member = await connect({ url: server.url, identity: memberKey });
  ({ room: { id: roomId } } = await owner.rooms.create("ruled", { persist: false, encrypt: true }));
  await owner.rooms.invite(roomId, memberKey.principal);
});

afterAll(async () => {
  await Promise.allSettled([rootAdmin?.close(), admin?.close(), owner?.close(), member?.close()]);
  await svc?.stop();
  await nc?.close();
  await server?.stop();
});

describe("users log", () => {
  it("is rooted at the bootstrap identity's signed request and verifies from entry 0 for any member", async () => {
    const log = await member.usersLog.sync();
    expect(log.headSeq).toBe(3);
    const { entries } = await member.users.log(0);
    expect(entries[0]).toMatchObject({ seq: 0, op: UsersLogOp.bootstrap, signer: bootKey.principal, target: rootAdminKey.principal, role: "admin" });
    expect(entries.slice(1).map((e) => [e.op, e.signer, e.target, e.role])).toEqual([
      ["add", rootAdminKey.principal, adminKey.principal, "admin"],
      ["add", rootAdminKey.principal, ownerKey.principal, "member"],
      ["add", rootAdminKey.principal, memberKey.principal, "member"],
    ]);
    expect(log.isAdmin(adminKey.principal)).toBe(true);
    expect(log.isAdmin(ownerKey.principal)).toBe(false);
    // The configured root: the bootstrap principal or entry 0's hash; anything else is refused.
    expect(verifyUsersLog(entries, { trustedRoot: bootKey.principal }).headSeq).toBe(3);
    expect(verifyUsersLog(entries, { trustedRoot: log.rootHash! }).headSeq).toBe(3);
    expect((await rejectionOf(Promise.resolve().then(() => verifyUsersLog(entries, { trustedRoot: SigningKey.generate().principal })), UnibusError)).reason).toBe("log_root_mismatch");
  });

  it("refuses an entry signed by a non-admin, even one the service stored", async () => {
    const { entries } = await member.users.log(0);
    const forgedAdd = forged(entries, ownerKey, "add", { principal: SigningKey.generate().principal, handle: "evil", role: "admin" });
    const err = await rejectionOf(Promise.resolve().then(() => verifyUsersLog([...entries, forgedAdd])), UnibusError);
    expect([err.reason, err.code]).toEqual(["log_unauthorized", ErrorCode.Conflict]);
    // A second bootstrap by the root identity later in the log is refused too.
    const bytes = encoder.encode(JSON.stringify({ principal: ownerKey.principal, handle: "again" }));
    const again = usersLogEntry({ after: verifyUsersLog(entries), op: "bootstrap", body: bytes, envelope: signEnvelope(bootKey, Subjects.membership.adminBootstrap, bytes), target: ownerKey.principal, role: "admin", at: new Date().toISOString() });
    expect((await rejectionOf(Promise.resolve().then(() => verifyUsersLog([...entries, again])), UnibusError)).reason).toBe("log_unauthorized");
  });

  it("an admin's client checks the entries it signed by signing them again, and still refuses one whose signature was swapped", async () => {
    const { entries } = await member.users.log(0);
    // A fresh statement: nothing in this process verified it yet.
    const added = forged(entries, rootAdminKey, "add", { principal: SigningKey.generate().principal, handle: "fresh", role: "member" });
    const spy = vi.spyOn(rootAdminKey, "isOwnSignature");
    try {
      expect((await new UsersLogSync(serve([...entries, added]), { own: rootAdminKey }).sync()).headSeq).toBe(4);
      expect(spy.mock.results.map((r) => r.value as boolean)).toContain(true);
      const swapped = { ...added, signature: entries[3]!.signature };
      expect((await rejectionOf(new UsersLogSync(serve([...entries, swapped]), { own: rootAdminKey }).sync(), UnibusError)).reason).toBe(UsersLogErrorReason.badSignature);
    } finally {
      spy.mockRestore();
    }
  });

  it("refuses a fork, a rollback, a gap and another root than the pinned one", async () => {
    const { entries } = await member.users.log(0);
    const pin = memoryPin();
    expect((await new UsersLogSync(serve(entries), { pin }).sync()).headSeq).toBe(3);
    expect(pin.value?.seq).toBe(3);
    // Page by page, and again incrementally after more entries.
    const paged = new UsersLogSync(serve(entries.slice(0, 2)), { pageSize: 1 });
    expect((await paged.sync()).headSeq).toBe(1);
    const small = new UsersLogSync((f, l) => serve(entries)(f, Math.min(l, 2)), { pageSize: 2 });
    expect((await small.sync()).headSeq).toBe(3);
    // Rollback: a later process is shown a shorter log.
    expect((await rejectionOf(new UsersLogSync(serve(entries.slice(0, 3)), { pin }).sync(), UnibusError)).reason).toBe("log_rollback");
    // Fork: entry 3 replaced by another validly signed one.
    const other = forged(entries.slice(0, 3), rootAdminKey, "add", { principal: SigningKey.generate().principal, handle: "other", role: "member" });
    expect((await rejectionOf(new UsersLogSync(serve([...entries.slice(0, 3), other]), { pin }).sync(), UnibusError)).reason).toBe("log_fork");
    // Gap: a head claimed but an entry skipped.
    expect((await rejectionOf(new UsersLogSync(serve([...entries.slice(0, 2), entries[3]!], 3)).sync(), UnibusError)).reason).toBe("log_gap");
    // Another root (a whole second log, properly signed by another bootstrap identity).
    const bytes = encoder.encode(JSON.stringify({ principal: rootAdminKey.principal, handle: "root" }));
    const fakeRoot = usersLogEntry({ after: { length: 0, headHash: new Uint8Array(32) }, op: "bootstrap", body: bytes, envelope: signEnvelope(SigningKey.generate(), Subjects.membership.adminBootstrap, bytes), target: rootAdminKey.principal, role: "admin", at: new Date().toISOString() });
    expect((await rejectionOf(new UsersLogSync(serve([fakeRoot]), { pin }).sync(), UnibusError)).reason).toBe("log_root_mismatch");
    // Same client, incremental: the service later changes the verified head entry.
    let shown: readonly UsersLogEntry[] = entries;
    const sync = new UsersLogSync((from, limit) => serve(shown)(from, limit));
    await sync.sync();
    shown = [...entries.slice(0, 3), other];
    expect((await rejectionOf(sync.sync(), UnibusError)).reason).toBe("log_fork");
  });

  it("the service refuses what its log's rules refuse: an admin by record only, a second bootstrap", async () => {
    // An admin record written behind the log's back (as a compromised or buggy writer would).
    const rogueKey = SigningKey.generate();
    await svc.store.createUser({ principal: rogueKey.principal, handle: "rogue", role: "admin", status: UserStatus.active, addedAt: new Date().toISOString(), addedBy: rootAdminKey.principal });
    const rogue = await connect({ url: server.url, identity: rogueKey });
    try {
      const target = SigningKey.generate().principal;
      const err = await rejectionOf(rogue.users.add(target, "via-rogue", "admin"), UnibusError);
      expect([err.code, err.reason]).toEqual([ErrorCode.Conflict, "log_unauthorized"]);
      expect(await svc.store.getUser(target)).toBeNull();
      expect((await member.users.log(0)).headSeq).toBe(3);
    } finally {
      await rogue.close();
      await svc.store.updateUser(rogueKey.principal, (u) => ({ ...u!, status: UserStatus.revoked }));
    }
    // With no active admin on record, the bootstrap identity still cannot root a second admin #0: the log has its root.
    const admins = [rootAdminKey.principal, adminKey.principal];
    for (const p of admins) await svc.store.updateUser(p, (u) => ({ ...u!, status: UserStatus.revoked }));
    const boot = await connect({ url: server.url, identity: bootKey });
    try {
      const second = SigningKey.generate().principal;
      const err = await rejectionOf(boot.admin.bootstrap(second, "second-root"), UnibusError);
      expect([err.code, err.reason]).toEqual([ErrorCode.Conflict, "already_bootstrapped"]);
      expect(await svc.store.getUser(second)).toBeNull();
    } finally {
      await boot.close();
      for (const p of admins) await svc.store.updateUser(p, (u) => ({ ...u!, status: UserStatus.active }));
    }
  });
  it("concurrent loads on one replica that read the same new entries verify them once, not as a gap", async () => {
    // A fresh store starts from an empty verified log: every load walks the whole stored log at once.
    const kv = await new Kvm(nc).open(StoredBucket.membership.usersLog);
    const fresh = new UsersLogStore(kv);
    const logs = await Promise.all([fresh.load(), fresh.load(), fresh.load()]);
    const stored = (await new UsersLogStore(kv).load()).length;
    expect(stored).toBeGreaterThan(3);
    expect(logs.map((l) => l.length)).toEqual([stored, stored, stored]);
  });
});

describe("admin authority in room logs from the users log", () => {
  it("an admin's invite verifies for a member with no trustedAdmins pin", async () => {
    const guestKey = SigningKey.generate();
    await rootAdmin.users.add(guestKey.principal, "guest", "member");
    await admin.rooms.invite(roomId, guestKey.principal);
    const log = await member.roomLogs.sync(roomId);
    expect(log.members.get(guestKey.principal)).toBe("member");
    const { entries } = await member.rooms.log(roomId, 0);
    expect(entries.at(-1)).toMatchObject({ op: RoomLogOp.invite, actorRole: "admin", signer: adminKey.principal });
    // Without the users log (and no pin) the same chain is refused: the authority comes from it.
    expect((await rejectionOf(Promise.resolve().then(() => verifyRoomLog(roomId, entries)), UnibusError)).reason).toBe("log_unauthorized");
  });

  it("a revoked admin's later room action is refused; its earlier one still verifies", async () => {
    const before = (await member.rooms.log(roomId, 0)).entries;
    await rootAdmin.users.revoke(adminKey.principal);
    // The service refuses the revoked admin outright.
    const target = SigningKey.generate();
    await rootAdmin.users.add(target.principal, "late", "member");
    expect((await rejectionOf(admin.rooms.invite(roomId, target.principal), UnibusError)).code).toBeGreaterThanOrEqual(400);
    const users = await member.usersLog.sync();
    expect(users.isAdmin(adminKey.principal)).toBe(false);
    expect(verifyRoomLog(roomId, before, { adminAuthority: users }).headSeq).toBe(before.length - 1);
    // A compromised service storing an invite the revoked admin signed after its revocation: clients refuse it.
    const body = encoder.encode(JSON.stringify({ roomId, principal: target.principal }));
    const log = new VerifiedRoomLog(roomId, { adminAuthority: users });
    log.append(before);
    const late = roomLogEntry({ after: log, roomId, op: "invite", body, envelope: signEnvelope(adminKey, Subjects.membership.roomsInvite, body, Date.now() + 1000), target: target.principal, role: "member", asAdmin: true, at: new Date().toISOString() });
    expect((await rejectionOf(Promise.resolve().then(() => log.append([late])), UnibusError)).reason).toBe("log_unauthorized");
  });

  it("a users record lost after its log entry is repaired on start", async () => {
    const { entries } = await member.users.log(0);
    const lost = entries.find((e) => e.target === memberKey.principal)!;
    await svc.store.buckets.users.delete(lost.target);
    await svc.stop();
    svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal });
    expect((await svc.store.getUser(memberKey.principal))?.value).toMatchObject({ role: "member", status: UserStatus.active, handle: "member" });
    expect((await svc.store.getUser(adminKey.principal))?.value.status).toBe(UserStatus.revoked);
  });
});
