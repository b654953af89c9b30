import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { pino } from "pino";
import { ErrorCode, Subjects, UnibusError, decodeReply } from "@unibus/contracts";
import { EnvelopeHeader, SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer, rejectionOf } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import packageJson from "../package.json" with { type: "json" };
import type { ConnectionKicker, KickOutcome } from "./kick.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

const silent = pino({ level: "silent" });

/** Records who would have been kicked; kicks against a live server are in test/services/membership/kick.test.ts. */
class RecordingKicker implements ConnectionKicker {
  readonly kicked: string[] = [];
  async kick(principal: string): Promise<KickOutcome> {
    this.kicked.push(principal);
    return { connections: 0, kicked: 0, failed: 0 };
  }
  kickLater(principal: string): KickOutcome {
    this.kicked.push(principal);
    return { connections: 0, kicked: 0, failed: 0, deferred: true };
  }
  close(): void {}
}

const rejection = (p: Promise<unknown>): Promise<UnibusError> => rejectionOf(p, UnibusError);

let server: TestServer;
let nc: NatsConnection;
let svc: RunningMembershipService;
const kicker = new RecordingKicker();
const bootKey = SigningKey.generate();
const adminKey = SigningKey.generate();
const memberKey = SigningKey.generate();
let boot: UnibusClient;
let admin: UnibusClient;
let member: UnibusClient;
const clients: UnibusClient[] = [];

async function client(key: SigningKey): Promise<UnibusClient> {
  const c = await connect({ url: server.url, identity: key });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  svc = await createMembershipService(nc, { logger: silent, kicker, bootstrapPrincipal: bootKey.principal });
  [boot, admin, member] = await Promise.all([client(bootKey), client(adminKey), client(memberKey)]);
  await boot.admin.bootstrap(adminKey.principal, "root");
  await admin.users.add(memberKey.principal, "mia", "member");
});

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await svc?.stop();
  await server?.stop();
});

it("registers as the membership micro service, visible in $SRV.INFO with its package version", async () => {
  const info = (await nc.request("$SRV.INFO.membership", undefined, { timeout: 5_000 })).json<Record<string, unknown>>();
  expect(info).toMatchObject({ type: "io.nats.micro.v1.info_response", name: "membership", version: packageJson.version, id: svc.id });
});

describe("admin bootstrap", () => {
  it("is refused to any identity other than the bootstrap identity, admins included", async () => {
    expect((await rejection(admin.admin.bootstrap(memberKey.principal, "x"))).code).toBe(ErrorCode.Forbidden);
    expect((await rejection(member.admin.bootstrap(memberKey.principal, "x"))).code).toBe(ErrorCode.Forbidden);
  });

  it("is idempotent: with an active admin it returns that admin and creates nobody", async () => {
    const other = SigningKey.generate();
    const reply = await boot.admin.bootstrap(other.principal, "second");
    expect(reply).toMatchObject({ created: false, user: { principal: adminKey.principal, role: "admin", status: "active" } });
    expect(await svc.store.getUser(other.principal)).toBeNull();
  });
});

describe("users allowlist", () => {
  it("a non-admin gets 403 on every users endpoint", async () => {
    const p = SigningKey.generate().principal;
    for (const call of [() => member.users.add(p, "x", "admin"), () => member.users.list(), () => member.users.get(adminKey.principal), () => member.users.revoke(adminKey.principal)]) {
      expect((await rejection(call())).code).toBe(ErrorCode.Forbidden);
    }
    expect(await svc.store.getUser(p)).toBeNull();
  });

  it("an identity not on the allowlist gets 403 on every users endpoint", async () => {
    const stranger = await client(SigningKey.generate());
    for (const call of [() => stranger.users.add(stranger.principal, "me", "admin"), () => stranger.users.list(), () => stranger.users.get(adminKey.principal), () => stranger.users.revoke(adminKey.principal)]) {
      expect((await rejection(call())).code).toBe(ErrorCode.Forbidden);
    }
  });

  it("re-adding an existing principal is 409 and never flips its role", async () => {
    const err = await rejection(admin.users.add(memberKey.principal, "mia-again", "admin"));
    expect(err.code).toBe(ErrorCode.Conflict);
    expect((await admin.users.get(memberKey.principal)).user).toMatchObject({ role: "member", handle: "mia" });
  });

  it("accepts a principal given as 64-hex and stores the canonical U… form", async () => {
    const k = SigningKey.generate();
    const reply = await admin.users.add(Buffer.from(k.publicKey).toString("hex"), "hexy", "member");
    expect(reply.user.principal).toBe(k.principal);
  });

  it("revoke flips status with revokedAt/revokedBy, keeps the record, kicks, and a second revoke is 409", async () => {
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "temp", "member");
    const reply = await admin.users.revoke(k.principal);
    expect(reply.user).toMatchObject({ principal: k.principal, status: "revoked", revokedBy: adminKey.principal, role: "member" });
    expect(typeof reply.user.revokedAt).toBe("string");
    expect(kicker.kicked).toContain(k.principal);
    expect((await svc.store.getUser(k.principal))?.value.status).toBe("revoked");
    expect((await rejection(admin.users.revoke(k.principal))).code).toBe(ErrorCode.Conflict);
    expect((await admin.users.list()).users.map((u) => u.principal)).toContain(k.principal);
    // A revoked user is no longer a caller: admin role or not.
    expect((await rejection(admin.users.add(k.principal, "back", "member"))).code).toBe(ErrorCode.Conflict);
  });

  it("a revoked admin is denied like a stranger", async () => {
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "ex-admin", "admin");
    const exAdmin = await client(k);
    await exAdmin.users.list();
    await admin.users.revoke(k.principal);
    expect((await rejection(exAdmin.users.list())).code).toBe(ErrorCode.Forbidden);
  });

  it("get of an unknown principal is 404", async () => {
    expect((await rejection(admin.users.get(SigningKey.generate().principal))).code).toBe(ErrorCode.NotFound);
  });
});

describe("rooms", () => {
  it("create makes the caller owner, writes rooms/members/rooms_by_member, and a persisted room gets ROOM_<id>", async () => {
    const { room, revision, kick } = await member.rooms.create("ops", { persist: true, encrypt: true });
    expect(room).toMatchObject({ name: "ops", subject: `unibus.room.${room.id}`, createdBy: memberKey.principal, policy: { persist: true, encrypt: true } });
    expect(kick.deferred).toBe(true);
    const grants = await svc.store.getRoomsByMember(memberKey.principal);
    expect(grants?.value.rooms[room.id]).toBe("owner");
    expect(grants?.revision).toBe(revision);
    expect((await svc.store.getMember(room.id, memberKey.principal))?.value.role).toBe("owner");
    const info = await (await jetstreamManager(nc)).streams.info(`ROOM_${room.id}`);
    expect(info.config).toMatchObject({ subjects: [`unibus.room.${room.id}.>`], storage: "file" });
  });

  it("an ephemeral room has no stream", async () => {
    const { room } = await member.rooms.create("chat", { persist: false, encrypt: true });
    await expect((await jetstreamManager(nc)).streams.info(`ROOM_${room.id}`)).rejects.toThrow();
  });

  it("invite/remove/leave keep members and rooms_by_member in step and kick the affected principal", async () => {
    const { room } = await member.rooms.create("team", { persist: false, encrypt: true });
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "invitee", "member");
    const invitee = await client(k);
    expect((await rejection(invitee.rooms.get(room.id))).code).toBe(ErrorCode.Forbidden);

    const inv = await member.rooms.invite(room.id, k.principal);
    expect(inv.member).toMatchObject({ roomId: room.id, principal: k.principal, role: "member", addedBy: memberKey.principal });
    expect(kicker.kicked.at(-1)).toBe(k.principal);
    expect((await rejection(member.rooms.invite(room.id, k.principal))).code).toBe(ErrorCode.Conflict);
    expect((await invitee.rooms.get(room.id)).members.map((m) => m.principal).sort()).toEqual([k.principal, memberKey.principal].sort());
    expect((await invitee.rooms.list()).rooms).toEqual([{ room, role: "member" }]);
    // A plain member cannot manage the room.
    expect((await rejection(invitee.rooms.remove(room.id, memberKey.principal))).code).toBe(ErrorCode.Forbidden);

    const removed = await member.rooms.remove(room.id, k.principal);
    expect(removed.revision).toBeGreaterThan(inv.revision);
    expect(await svc.store.getMember(room.id, k.principal)).toBeNull();
    expect((await svc.store.getRoomsByMember(k.principal))?.value.rooms).toEqual({});
    // Right after the removal's ack, the removed member's own list no longer holds the room.
    expect((await invitee.rooms.list()).rooms).toEqual([]);
    expect((await rejection(member.rooms.remove(room.id, k.principal))).code).toBe(ErrorCode.NotFound);

    await admin.rooms.invite(room.id, k.principal);
    expect((await invitee.rooms.list()).rooms).toEqual([{ room, role: "member" }]);
    const left = await invitee.rooms.leave(room.id);
    expect(left.kick.deferred).toBe(true);
    expect(await svc.store.getMember(room.id, k.principal)).toBeNull();
    expect((await invitee.rooms.list()).rooms).toEqual([]);
    expect((await rejection(invitee.rooms.leave(room.id))).code).toBe(ErrorCode.NotFound);
  });

  it("only active users can be invited", async () => {
    const { room } = await member.rooms.create("closed", { persist: false, encrypt: true });
    expect((await rejection(member.rooms.invite(room.id, SigningKey.generate().principal))).code).toBe(ErrorCode.NotFound);
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "gone", "member");
    await admin.users.revoke(k.principal);
    expect((await rejection(member.rooms.invite(room.id, k.principal))).code).toBe(ErrorCode.Conflict);
  });

  it("list shows only the caller's rooms; all: true is for admins", async () => {
    const mine = (await member.rooms.list()).rooms.map((r) => r.room.id);
    const all = (await admin.rooms.list({ all: true })).rooms.map((r) => r.room.id);
    expect(all.length).toBeGreaterThanOrEqual(mine.length);
    for (const id of mine) expect(all).toContain(id);
    expect((await admin.rooms.list()).rooms).toEqual([]);
    expect((await rejection(member.rooms.list({ all: true }))).code).toBe(ErrorCode.Forbidden);
  });

  it("two service replicas under concurrent invites lose no update", async () => {
    const nc2 = await server.connect();
    const replica2 = await createMembershipService(nc2, { logger: silent, kicker });
    try {
      const rooms = await Promise.all([member.rooms.create("busy-1", { persist: false, encrypt: false }), member.rooms.create("busy-2", { persist: false, encrypt: false })]);
      const invitees = Array.from({ length: 12 }, () => SigningKey.generate());
      await Promise.all(invitees.map((k, i) => admin.users.add(k.principal, `i${i}`, "member")));
      // Every invitee joins both rooms at once: each rooms_by_member key sees
      // two racing writers, spread over the two replicas by the queue group.
      await Promise.all(invitees.flatMap((k) => rooms.map(({ room }) => member.rooms.invite(room.id, k.principal))));
      for (const k of invitees) {
        const grants = await svc.store.getRoomsByMember(k.principal);
        for (const { room } of rooms) {
          expect(grants?.value.rooms[room.id]).toBe("member");
          expect((await svc.store.getMember(room.id, k.principal))?.value.role).toBe("member");
        }
      }
      for (const { room } of rooms) expect((await member.rooms.get(room.id)).members).toHaveLength(invitees.length + 1);
      // Removals acknowledged by either replica: each removed invitee's own
      // list, answered by either replica, no longer holds the room.
      const [gone, kept] = rooms.map(({ room }) => room) as [(typeof rooms)[number]["room"], (typeof rooms)[number]["room"]];
      const removed = invitees.slice(0, 6);
      await Promise.all(removed.map((k) => member.rooms.remove(gone.id, k.principal)));
      for (const k of removed) {
        const c = await client(k);
        for (let i = 0; i < 4; i++) expect((await c.rooms.list()).rooms).toEqual([{ room: kept, role: "member" }]);
      }
    } finally {
      await replica2.stop();
    }
  });
});

describe("bad input on every endpoint: a clear error reply, no crash, no state change", () => {
  const endpoints = Object.entries(Subjects.membership).filter(([name]) => name !== "all");
  const valid: Record<string, unknown> = {
    usersAdd: { principal: SigningKey.generate().principal, handle: "h", role: "member" },
    usersList: {},
    usersGet: { principal: adminKey.principal },
    usersRevoke: { principal: SigningKey.generate().principal },
    roomsCreate: { name: "n", policy: { persist: false, encrypt: true } },
    roomsGet: { roomId: "aaaaaaaaaaaa" },
    roomsList: {},
    roomsInvite: { roomId: "aaaaaaaaaaaa", principal: memberKey.principal },
    roomsRemove: { roomId: "aaaaaaaaaaaa", principal: memberKey.principal },
    roomsLeave: { roomId: "aaaaaaaaaaaa" },
    roomsHistory: { roomId: "aaaaaaaaaaaa" },
    roomsLog: { roomId: "aaaaaaaaaaaa" },
    usersLog: {},
    adminBootstrap: { principal: SigningKey.generate().principal, handle: "h" },
    auditDenials: { since: new Date().toISOString() },
  };

  async function raw(subject: string, data: Uint8Array, sign: (subject: string, data: Uint8Array) => Record<string, string> | undefined): Promise<UnibusError> {
    const h = headers();
    for (const [k, v] of Object.entries(sign(subject, data) ?? {})) h.set(k, v);
    // The kit answers only the claimed signer's own inbox.
    const msg = await nc.request(subject, data, { headers: h, timeout: 5_000, noMux: true, reply: createInbox(`_INBOX.${h.get(EnvelopeHeader.signer)}`) });
    try {
      decodeReply(msg);
    } catch (err) {
      return err as UnibusError;
    }
    throw new Error("expected an error reply");
  }
  const signed = (s: string, d: Uint8Array): Record<string, string> => envelopeToHeaders(signEnvelope(adminKey, s, d));
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

  it.each(endpoints)("%s rejects malformed JSON, schema violations, oversize bodies and bad or missing signatures", async (name, subject) => {
    const before = (await svc.store.listUsers()).length;
    expect((await raw(subject, new TextEncoder().encode("{not json"), signed)).code).toBe(ErrorCode.BadRequest);
    expect((await raw(subject, enc({ ...(valid[name] as object), extra: 1 }), signed)).code).toBe(ErrorCode.BadRequest);
    expect((await raw(subject, enc({ pad: "x".repeat(70_000) }), signed)).code).toBe(ErrorCode.PayloadTooLarge);
    expect((await raw(subject, enc(valid[name]), () => ({ [EnvelopeHeader.signer]: adminKey.principal }))).code).toBe(ErrorCode.Unauthorized);
    const forged = (s: string, _d: Uint8Array): Record<string, string> => envelopeToHeaders(signEnvelope(adminKey, s, enc({ other: true })));
    expect((await raw(subject, enc(valid[name]), forged)).code).toBe(ErrorCode.Unauthorized);
    const stale = (s: string, d: Uint8Array): Record<string, string> => envelopeToHeaders(signEnvelope(adminKey, s, d, Date.now() - 60_000));
    expect((await raw(subject, enc(valid[name]), stale)).code).toBe(ErrorCode.Unauthorized);
    expect((await svc.store.listUsers()).length).toBe(before);
  });

  it("a replayed mutating request changes nothing: the same signed bytes get the first reply, other bytes under that nonce are refused", async () => {
    const k = SigningKey.generate();
    const data = enc({ principal: k.principal, handle: "once", role: "member" });
    const envelope = envelopeToHeaders(signEnvelope(adminKey, Subjects.membership.usersAdd, data));
    const h = headers();
    for (const [n, v] of Object.entries(envelope)) h.set(n, v);
    const send = async (): Promise<unknown> => decodeReply(await nc.request(Subjects.membership.usersAdd, data, { headers: h, timeout: 5_000, noMux: true, reply: createInbox(`_INBOX.${adminKey.principal}`) }));
    const first = await send();
    await svc.store.updateUser(k.principal, (u) => ({ ...u!, handle: "changed" }));
    // The signer's own retry (same nonce, same signed bytes) is answered from the record, not run again.
    expect(await send()).toEqual(first);
    // Anything else under that nonce is a replay: here the signature no longer matches the other body.
    const err = await raw(Subjects.membership.usersAdd, enc({ principal: k.principal, handle: "twice", role: "member" }), () => envelope);
    expect(err).toMatchObject({ code: ErrorCode.Unauthorized });
    expect((await svc.store.getUser(k.principal))?.value.handle).toBe("changed");
  });
});
