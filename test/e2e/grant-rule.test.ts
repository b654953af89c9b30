// The grant rule (docs/design.md "What a grant lets the server do"): a
// client permission never lets the server, or a service, act on the
// client's behalf toward a subject the client could not publish to itself.
// One test per grant family whose rule holds, on the production ACLs; the
// reply subject is where every family could break it, so each test names a
// record of the allowlist bucket as its reply and checks nothing was written.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { randomBytes } from "@unibus/crypto";
import { waitForRoomAccess } from "@unibus/sdk";
import { startTestBus } from "@unibus/testbus";
import type { TestBus, TestBusMember } from "@unibus/testbus";

describe("a grant never makes the server or a service publish where the client may not", () => {
  let bus: TestBus;
  let operator: NatsConnection;
  let users: KV;
  let mallory: TestBusMember;
  let roomId: string;
  /** The admin's allowlist record: where a forged or reflected write would do the most harm. */
  let target: string;

  /** The target record's KV revision; a reflected write would raise it. */
  const targetRevision = async (): Promise<number> => (await users.get(bus.adminIdentity.principal))?.revision ?? 0;

  /** The admin can still log in and act as admin: its record is intact. */
  const adminIntact = async (): Promise<void> => {
    const again = await bus.connectAs(bus.adminIdentity);
    expect((await again.users.get(bus.adminIdentity.principal)).user).toMatchObject({ role: "admin", status: "active" });
  };

  beforeAll(async () => {
    bus = await startTestBus({ operator: true });
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
    await bus?.stop();
  });

  it("control-plane requests: a service answers only an inbox, so a reply subject naming an allowlist record writes nothing", async () => {
    const before = await targetRevision();
    const nc = mallory.client.nc;
    // Unsigned on purpose: even the cheapest path (an error reply) must not be reflected.
    nc.publish("unibus.v1.membership.rooms.list", "{}", { reply: target });
    // The same request to mallory's own inbox is answered; the service handles
    // requests in arrival order, so the first one has been dropped by now.
    const answered = await nc.request("unibus.v1.membership.rooms.list", "{}", { timeout: 5_000 });
    expect(answered.headers?.get("Nats-Service-Error-Code")).toBe("401");
    expect(await targetRevision()).toBe(before);
    await adminIntact();
  });

  it("room subjects: a room stream sends no ack, so a publish naming an allowlist record as reply writes nothing there", async () => {
    const before = await targetRevision();
    const nc = mallory.client.nc;
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
    let stored = 0;
    while (stored < 2 && Date.now() < deadline) {
      const info = (await operator.request(`$JS.API.STREAM.INFO.ROOM_${roomId}`, "", { timeout: 3_000 })).json<{ state: { messages: number } }>();
      stored = info.state.messages;
    }
    expect(stored).toBe(2);
    await nc.flush();
    sub.unsubscribe();
    expect(acks).toEqual([]);
    expect(await targetRevision()).toBe(before);
    await adminIntact();
  });

  it("inbox: the grant is subscribe-only; a member cannot publish into another principal's inbox", async () => {
    await expect(mallory.client.nc.request(`_INBOX.${bus.adminIdentity.principal}.x`, "hi", { timeout: 3_000 })).rejects.toThrow(/Permissions Violation/);
  });

  it("bootstrap: the bootstrap identity's one request is answered only on an inbox", async () => {
    const before = await targetRevision();
    const nc = bus.bootstrap.nc;
    nc.publish("unibus.v1.membership.admin.bootstrap", "{}", { reply: target });
    const answered = await nc.request("unibus.v1.membership.admin.bootstrap", "{}", { timeout: 5_000 });
    expect(answered.headers?.get("Nats-Service-Error-Code")).toMatch(/^4\d\d$/);
    expect(await targetRevision()).toBe(before);
    await adminIntact();
  });
});
