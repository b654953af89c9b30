// The grant rule (docs/design.md "What a grant lets the server do"): a
// client permission never lets the server, or a service, act on the
// client's behalf toward a subject the client could not publish to itself.
// One test per grant family whose rule holds, on the production ACLs; the
// reply subject is where every family could break it, so each test names a
// record of the allowlist bucket as its reply and checks nothing was written.
import { eventually } from "@unibus/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { createBlobsService } from "@unibus/blobs";
import { Subjects, UnibusError } from "@unibus/contracts";
import { envelopeToHeaders, randomBytes, signEnvelope } from "@unibus/crypto";
import { createKeysService } from "@unibus/keys";
import type { RunningService } from "@unibus/kit";
import { waitForRoomAccess } from "@unibus/sdk";
import { startTestBus } from "@unibus/testbus";
import type { TestBus, TestBusMember } from "@unibus/testbus";

/** Messages on `subject`, as the unrestricted operator sees them. */
function watch(nc: NatsConnection, subject: string): { seen: string[]; stop(): void } {
  const seen: string[] = [];
  const sub = nc.subscribe(subject, { callback: (_e, m) => void seen.push(m.subject) });
  return { seen, stop: () => sub.unsubscribe() };
}

describe("a grant never makes the server or a service publish where the client may not", () => {
  let bus: TestBus;
  let operator: NatsConnection;
  let users: KV;
  let mallory: TestBusMember;
  let roomId: string;
  const services: RunningService[] = [];
  /** The admin's allowlist record: where a forged or reflected write would do the most harm. */
  let target: string;

  /** The target record's KV revision; a reflected write would raise it. */
  const targetRevision = async (): Promise<number> => (await users.get(bus.adminIdentity.principal))?.revision ?? 0;

  /** The admin can still log in and act as admin: its record is intact. */
  const adminIntact = async (): Promise<void> => {
    const again = await bus.connectAs(bus.adminIdentity);
    expect((await again.users.get(bus.adminIdentity.principal)).user).toMatchObject({ role: "admin", status: "active" });
  };

  /** Messages stored in the allowlist bucket's stream; a reflected purge or write would change it. */
  const usersStored = async (): Promise<{ messages: number; lastSeq: number }> => {
    const info = (await operator.request("$JS.API.STREAM.INFO.KV_users", "", { timeout: 3_000 })).json<{ state: { messages: number; last_seq: number } }>();
    return { messages: info.state.messages, lastSeq: info.state.last_seq };
  };

  /** Messages stored in mallory's room's stream. */
  const roomStored = async (): Promise<number> =>
    (await operator.request(`$JS.API.STREAM.INFO.ROOM_${roomId}`, "", { timeout: 3_000 })).json<{ state: { messages: number } }>().state.messages;

  beforeAll(async () => {
    bus = await startTestBus({ operator: true });
    const logger = pino({ level: "silent" });
    services.push(await createKeysService(await bus.serviceConnection("keys"), { logger }));
    services.push(await createBlobsService(await bus.serviceConnection("blobs"), { logger, maxBlobBytes: 1024 * 1024 }));
    operator = await bus.operatorConnection();
    users = await new Kvm(operator).open("users");
    target = `$KV.users.${bus.adminIdentity.principal}`;
    mallory = await bus.addMember("mallory");
    ({
      room: { id: roomId },
    } = await mallory.client.rooms.create("mallory's", { persist: true, encrypt: true }));
    await waitForRoomAccess(mallory.client, roomId);
  });

  afterAll(async () => {
    await Promise.allSettled(services.map((r) => r.stop()));
    await bus?.stop();
  });

  // Each service, one endpoint each: a reply subject naming the admin's
  // record or the admin's inbox gets nothing, signed or not.
  const endpoints = (): [string, string, unknown][] => [
    ["membership", Subjects.membership.roomsList, {}],
    ["membership", Subjects.membership.roomsHistory, { roomId }],
    ["keys", Subjects.keys.epochsList, { roomId }],
    ["blobs", Subjects.blobs.getBegin, { roomId, blobId: "ab".repeat(32) }],
  ];

  it("control-plane requests: a service answers only the requester's own inbox; an allowlist record or another principal's inbox gets nothing, signed or not", async () => {
    const before = await targetRevision();
    const nc = mallory.client.nc;
    const adminInbox = `_INBOX.${bus.adminIdentity.principal}`;
    const toKv = watch(operator, target);
    const toAdmin = watch(operator, `${adminInbox}.>`);
    await operator.flush();
    for (const [svc, subject, body] of endpoints()) {
      const data = new TextEncoder().encode(JSON.stringify(body));
      for (const reply of [target, `${adminInbox}.x`]) {
        // Unsigned: even the cheapest path (an error reply) must not be reflected.
        nc.publish(subject, data, { reply });
        const h = natsHeaders();
        for (const [k, v] of Object.entries(envelopeToHeaders(signEnvelope(mallory.identity.signingKey, subject, data)))) h.set(k, v);
        nc.publish(subject, data, { reply, headers: h });
      }
      // Positive control: the same request to mallory's own inbox is answered
      // (a result or a coded error, never a timeout). A service handles
      // requests in arrival order and drops before any work, so the hostile
      // ones above are done with by now.
      const answered = await mallory.client.request(subject, body).then(
        () => "ok",
        (err: unknown) => (err instanceof UnibusError ? "coded error" : String(err)),
      );
      expect(["ok", "coded error"], `${svc} ${subject} answered mallory`).toContain(answered);
    }
    // Anything the services sent before those answers has reached the operator after this round trip.
    await operator.flush();
    toKv.stop();
    toAdmin.stop();
    expect(toKv.seen).toEqual([]);
    expect(toAdmin.seen).toEqual([]);
    expect(await targetRevision()).toBe(before);
    await adminIntact();
  });

  it("direct get: a member may not direct-get its own room's stream, so a reply naming $JS.API.STREAM.PURGE.KV_users purges nothing", async () => {
    const nc = mallory.client.nc;
    nc.publish(`unibus.room.${roomId}.m`, "history");
    const stored = await eventually(roomStored, (n) => n > 0);
    expect(stored).toBeGreaterThan(0);
    const before = await usersStored();
    expect(before.messages).toBeGreaterThan(0);
    // The stream serves direct gets (the operator's own is answered): the refusal below is the grant, not the stream.
    const own = await operator.request(`$JS.API.DIRECT.GET.ROOM_${roomId}`, JSON.stringify({ seq: 1 }), { timeout: 3_000 });
    expect(own.headers?.get("Nats-Sequence")).toBe("1");
    await expect(nc.request(`$JS.API.DIRECT.GET.ROOM_${roomId}`, JSON.stringify({ seq: 1, batch: 1 }), { timeout: 3_000 })).rejects.toThrow(/Permissions Violation/);
    nc.publish(`$JS.API.DIRECT.GET.ROOM_${roomId}`, JSON.stringify({ seq: 1, batch: 1 }), { reply: "$JS.API.STREAM.PURGE.KV_users" });
    await nc.flush();
    // A control-plane round trip after the publish: had it been served, the purge would be done by now.
    await mallory.client.rooms.list();
    expect(await usersStored()).toEqual(before);
    await adminIntact();
  });

  it("direct get: a forged admin record stored in mallory's own room cannot be sent to $KV.users.<mallory>; she stays a member", async () => {
    const nc = mallory.client.nc;
    const own = `$KV.users.${mallory.principal}`;
    const mine = await users.get(mallory.principal);
    expect(mine?.json<{ role: string }>().role).toBe("member");
    const forged = JSON.stringify({ principal: mallory.principal, handle: "mallory", role: "admin", status: "active", addedAt: new Date().toISOString(), addedBy: mallory.principal });
    const storedBefore = await roomStored();
    nc.publish(`unibus.room.${roomId}.m`, forged);
    const seq = await eventually(roomStored, (n) => n > storedBefore);
    expect(seq).toBe(storedBefore + 1);
    nc.publish(`$JS.API.DIRECT.GET.ROOM_${roomId}`, JSON.stringify({ seq, batch: 1 }), { reply: own });
    nc.publish(`$JS.API.DIRECT.GET.ROOM_${roomId}.unibus.room.${roomId}.m`, "", { reply: own });
    await nc.flush();
    await mallory.client.rooms.list();
    const after = await users.get(mallory.principal);
    expect(after?.revision).toBe(mine?.revision);
    expect(after?.json<{ role: string }>().role).toBe("member");
    // A fresh login is still a member: admin-only requests are refused.
    const again = await bus.connectAs(mallory.identity);
    await expect(again.users.list()).rejects.toMatchObject({ code: 403 });
  });

  it("room subjects: a room stream sends no ack, so a publish naming an allowlist record as reply writes nothing there", async () => {
    const before = await targetRevision();
    const nc = mallory.client.nc;
    const storedBefore = await roomStored();
    const marker = Buffer.from(randomBytes(8)).toString("hex");
    nc.publish(`unibus.room.${roomId}.m`, marker, { reply: target });
    // And none to its own inbox either: no ack is sent at all.
    const ownInbox = `_INBOX.${mallory.principal}.ack`;
    const acks: string[] = [];
    const sub = nc.subscribe(ownInbox, { callback: (_e, m) => void acks.push(m.string()) });
    nc.publish(`unibus.room.${roomId}.m`, marker, { reply: ownInbox });
    await nc.flush();
    // The stream ingests in order: once the marker is stored twice, both publishes were handled.
    const deadline = Date.now() + 5_000;
    let stored = storedBefore;
    while (stored < storedBefore + 2 && Date.now() < deadline) {
      const info = (await operator.request(`$JS.API.STREAM.INFO.ROOM_${roomId}`, "", { timeout: 3_000 })).json<{ state: { messages: number } }>();
      stored = info.state.messages;
    }
    expect(stored).toBe(storedBefore + 2);
    await nc.flush();
    sub.unsubscribe();
    expect(acks).toEqual([]);
    expect(await targetRevision()).toBe(before);
    await adminIntact();
  });

  it("inbox: the grant is subscribe-only; a member cannot publish into another principal's inbox", async () => {
    await expect(mallory.client.nc.request(`_INBOX.${bus.adminIdentity.principal}.x`, "hi", { timeout: 3_000 })).rejects.toThrow(/Permissions Violation/);
  });

  it("bootstrap: the bootstrap identity's one request is answered only on its own inbox", async () => {
    const before = await targetRevision();
    const nc = bus.bootstrap.nc;
    const subject = Subjects.membership.adminBootstrap;
    const body = { principal: bus.adminIdentity.principal, handle: "admin" };
    const data = new TextEncoder().encode(JSON.stringify(body));
    const toKv = watch(operator, target);
    await operator.flush();
    nc.publish(subject, data, { reply: target });
    // Its key's signature is only in its client; a claimed signer with the target as reply is dropped the same way.
    const h = natsHeaders();
    h.set("Unibus-Signer", bus.bootstrap.principal);
    nc.publish(subject, data, { reply: target, headers: h });
    // Positive control on its own inbox: an admin exists, so nothing changes.
    expect(await bus.bootstrap.admin.bootstrap(body.principal, body.handle)).toMatchObject({ created: false });
    await operator.flush();
    toKv.stop();
    expect(toKv.seen).toEqual([]);
    expect(await targetRevision()).toBe(before);
    await adminIntact();
  });
});
