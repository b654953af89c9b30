// A member creates no state on the server and reaches no JetStream API: on
// the production callout ACLs room history goes through the membership
// service (`rooms.history`), and removal leaves it no route to the room's data.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { randomBytes } from "@unibus/crypto";
import { createMembershipService } from "@unibus/membership";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { RoomAccessTimeoutError, StaticRoomKeys, waitForRoomAccess } from "@unibus/sdk";
import type { RoomMessage } from "@unibus/sdk";
import { eventually } from "@unibus/testing";
import { startTestBus } from "@unibus/testbus";
import type { TestBus, TestBusMember } from "@unibus/testbus";
import { recordMessages } from "./bus-with-services.js";

const text = (m: RoomMessage): string => m.string();
const encode = (v: unknown): string => JSON.stringify(v);

/** A JetStream API request as a client sends it; rejects when the server refuses the publish. */
function jsApi(nc: NatsConnection, subject: string, body: unknown = ""): Promise<unknown> {
  return nc.request(subject, typeof body === "string" ? body : encode(body), { timeout: 3_000 }).then((m) => m.json());
}

/** A durable push consumer as a member could make one before members lost the consumer grant. */
function leftoverConsumer(nc: NatsConnection, stream: string, name: string, deliver: string): Promise<unknown> {
  return jsApi(nc, `$JS.API.CONSUMER.CREATE.${stream}.${name}`, {
    stream_name: stream,
    config: { name, durable_name: name, deliver_subject: deliver, ack_policy: "none", deliver_policy: "new" },
  });
}

/**
 * Returns once room `roomId`'s stream has stored everything published to it
 * before this call: room streams send no acks, so a marker is published
 * after those messages and the stream (which ingests in order) is polled
 * until the marker is its newest message on the marker subject.
 */
async function storedUpTo(nc: NatsConnection, roomId: string): Promise<void> {
  const marker = Buffer.from(randomBytes(8)).toString("hex");
  const subject = `unibus.room.${roomId}.sync`;
  nc.publish(subject, marker);
  await nc.flush();
  await eventually(
    async () => {
      const m = await nc.request(`$JS.API.DIRECT.GET.ROOM_${roomId}.${subject}`, "", { timeout: 3_000 });
      return (m.headers?.code ?? 0) === 0 && m.string() === marker;
    },
    Boolean,
    { what: `room ${roomId}: marker stored` },
  );
}

/** Consumer names on `stream`, as a connection allowed to list them sees them. */
async function consumerNames(nc: NatsConnection, stream: string): Promise<string[]> {
  const r = (await jsApi(nc, `$JS.API.CONSUMER.NAMES.${stream}`, {})) as { consumers: string[] | null };
  return r.consumers ?? [];
}

describe("a member's JetStream access on the production ACLs", () => {
  let bus: TestBus;
  let operator: NatsConnection;
  let alice: TestBusMember;
  let bob: TestBusMember;
  let roomId: string;
  let otherRoomId: string;
  let stream: string;
  const keys = new StaticRoomKeys();

  /** Publishes room messages as alice and returns once the room stream has stored them. */
  const publishStored = async (...messages: string[]): Promise<void> => {
    const room = alice.client.room(roomId, keys);
    await Promise.all(messages.map((m) => room.publish(m)));
    await room.close();
    await alice.client.nc.flush();
    await storedUpTo(operator, roomId);
  };

  beforeAll(async () => {
    bus = await startTestBus({ operator: true });
    operator = await bus.operatorConnection();
    [alice, bob] = await Promise.all([bus.addMember("alice"), bus.addMember("bob")]);
    ({
      room: { id: roomId },
    } = await alice.client.rooms.create("kept", { persist: true, encrypt: true }));
    ({
      room: { id: otherRoomId },
    } = await bus.admin.rooms.create("not-theirs", { persist: true, encrypt: true }));
    stream = `ROOM_${roomId}`;
    keys.set(roomId, 0, randomBytes(32)).set(otherRoomId, 0, randomBytes(32));
    await waitForRoomAccess(alice.client, roomId);
    await alice.client.rooms.invite(roomId, bob.principal);
    await waitForRoomAccess(bob.client, roomId);
    await publishStored("one", "two", "three");
  });

  afterAll(async () => {
    await bus?.stop();
  });

  it("a member reads its room's history through the SDK (rooms.history, no consumer, no JetStream grant)", async () => {
    const got: string[] = [];
    for await (const m of bob.client.room(roomId, keys).history()) got.push(text(m));
    expect(got).toEqual(["one", "two", "three"]);
    expect(await consumerNames(operator, stream)).toEqual([]);
  });

  it("rooms.history pages: bounded pages that chain by nextSeq, frames the SDK decrypts", async () => {
    // Three more frames, one per publish (awaited one by one, so not coalesced).
    const room = alice.client.room(roomId, keys);
    for (const m of ["p1", "p2", "p3"]) await room.publish(m);
    await room.close();
    await alice.client.nc.flush();
    await storedUpTo(operator, roomId);
    const seqs: number[] = [];
    let pages = 0;
    let startSeq = 1;
    for (;;) {
      const page = await bob.client.rooms.history({ roomId, startSeq, limit: 2 });
      pages++;
      expect(page.messages.length).toBeLessThanOrEqual(2);
      for (const m of page.messages) expect(m.subject).toBe(`unibus.room.${roomId}.m`);
      seqs.push(...page.messages.map((m) => m.seq));
      if (page.nextSeq === undefined) break;
      expect(page.nextSeq).toBeLessThanOrEqual(page.lastSeq);
      startSeq = page.nextSeq;
    }
    // The first three messages share one frame; each later publish is its own.
    expect(seqs).toHaveLength(4);
    expect(pages).toBe(2);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    const got: string[] = [];
    for await (const m of bob.client.room(roomId, keys).history()) got.push(text(m));
    expect(got).toEqual(["one", "two", "three", "p1", "p2", "p3"]);
  });

  it("rooms.history by a user who is not a member of the room is 403 and returns no data", async () => {
    const err = await bob.client.rooms.history({ roomId: otherRoomId }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnibusError);
    expect(err).toMatchObject({ code: ErrorCode.Forbidden });
  });

  it("a member's push consumer create is refused, whatever its deliver subject", async () => {
    for (const deliver of [`_INBOX.${alice.principal}.stolen`, `_INBOX.${bob.principal}.mine`]) {
      const config = { deliver_subject: deliver, ack_policy: "none", deliver_policy: "all" };
      await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.CREATE.${stream}`, { stream_name: stream, config })).rejects.toThrow(/Permissions Violation/);
      await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.CREATE.${stream}.push1`, { stream_name: stream, config: { ...config, name: "push1" } })).rejects.toThrow(/Permissions Violation/);
    }
    expect(await consumerNames(operator, stream)).toEqual([]);
  });

  it("a member's durable consumer create is refused, by every create subject", async () => {
    const config = { durable_name: "keep", ack_policy: "explicit", deliver_policy: "all" };
    await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.CREATE.${stream}.keep`, { stream_name: stream, config })).rejects.toThrow(/Permissions Violation/);
    await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.CREATE.${stream}.keep.unibus.room.${roomId}.m`, { stream_name: stream, config })).rejects.toThrow(/Permissions Violation/);
    await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.keep`, { stream_name: stream, config })).rejects.toThrow(/Permissions Violation/);
    expect(await consumerNames(operator, stream)).toEqual([]);
  });

  it("a member's ephemeral or ordered consumer create is refused", async () => {
    // What nats.js sends for an ordered consumer: ephemeral, ack none, memory storage.
    const config = { ack_policy: "none", deliver_policy: "all", mem_storage: true, inactive_threshold: 5_000_000_000, num_replicas: 1 };
    await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.CREATE.${stream}`, { stream_name: stream, config })).rejects.toThrow(/Permissions Violation/);
    await expect(jsApi(bob.client.nc, `$JS.API.CONSUMER.CREATE.${stream}.ord_1`, { stream_name: stream, config: { ...config, name: "ord_1" } })).rejects.toThrow(/Permissions Violation/);
    expect(await consumerNames(operator, stream)).toEqual([]);
  });

  it("every JetStream API call is refused, direct get on its own room's stream included", async () => {
    const calls: [string, unknown][] = [
      [`$JS.API.DIRECT.GET.${stream}`, { seq: 1, batch: 10 }],
      ["$JS.API.INFO", ""],
      [`$JS.API.STREAM.INFO.${stream}`, ""],
      ["$JS.API.STREAM.NAMES", {}],
      ["$JS.API.STREAM.LIST", {}],
      [`$JS.API.STREAM.MSG.GET.${stream}`, { seq: 1 }],
      [`$JS.API.STREAM.UPDATE.${stream}`, { name: stream }],
      [`$JS.API.STREAM.PURGE.${stream}`, {}],
      [`$JS.API.STREAM.DELETE.${stream}`, ""],
      [`$JS.API.STREAM.MSG.DELETE.${stream}`, { seq: 1 }],
      [`$JS.API.CONSUMER.NAMES.${stream}`, {}],
      [`$JS.API.CONSUMER.LIST.${stream}`, {}],
      [`$JS.API.CONSUMER.MSG.NEXT.${stream}.any`, { batch: 1 }],
      [`$JS.API.CONSUMER.DELETE.${stream}.any`, ""],
      // Last-by-subject direct get: a subject form the grant leaves out.
      [`$JS.API.DIRECT.GET.${stream}.unibus.room.${roomId}.m`, ""],
      [`$JS.API.DIRECT.GET.KV_users.$KV.users.${bob.principal}`, ""],
      [`$JS.API.DIRECT.GET.ROOM_${otherRoomId}`, { seq: 1, batch: 1 }],
    ];
    for (const [subject, body] of calls) await expect(jsApi(bob.client.nc, subject, body), subject).rejects.toThrow(/Permissions Violation/);
  });

  it("another room's history is refused through the SDK", async () => {
    const read = async (): Promise<string[]> => {
      const got: string[] = [];
      for await (const m of bob.client.room(otherRoomId, keys).history({ timeoutMs: 1_000 })) got.push(text(m));
      return got;
    };
    await expect(read()).rejects.toMatchObject({ code: ErrorCode.Forbidden });
  });

  it("after removal the principal, still a user, receives nothing from the room: no subscription, no direct get, no leftover consumer", async () => {
    // A consumer bob could make before members lost the consumer grant:
    // durable, pushing every frame to his inbox, made here by the operator.
    const leftover = `_INBOX.${bob.principal}.leftover`;
    const viaLeftover: string[] = [];
    const leftoverSub = bob.client.nc.subscribe(leftover, { callback: (_e, m) => void viaLeftover.push(m.subject) });
    await bob.client.nc.flush();
    await leftoverConsumer(operator, stream, "bob_leftover", leftover);
    expect(await consumerNames(operator, stream)).toEqual(["bob_leftover"]);
    // It works while bob is a member: the precondition that makes the rest mean something.
    await publishStored("while a member");
    const deadline = Date.now() + 5_000;
    while (viaLeftover.length === 0 && Date.now() < deadline) await bob.client.nc.flush();
    expect(viaLeftover.length).toBeGreaterThan(0);
    const bobLive = recordMessages(bob.client.room(roomId, keys).subscribe());
    await bob.client.nc.flush();

    await alice.client.rooms.remove(roomId, bob.principal);

    // The removal deleted the consumer; the kick took the room grants away.
    expect(await consumerNames(operator, stream)).toEqual([]);
    await expect(waitForRoomAccess(bob.client, roomId, { timeoutMs: 1_500 })).rejects.toBeInstanceOf(RoomAccessTimeoutError);
    expect((await bob.client.rooms.list()).rooms).toEqual([]);

    const deliveredBefore = viaLeftover.length;
    const aliceLive = alice.client.room(roomId, keys).subscribe()[Symbol.asyncIterator]();
    await alice.client.nc.flush();
    await publishStored("after bob left");
    expect(await aliceLive.next()).toMatchObject({ value: { sender: alice.principal } });
    // A message routed to bob before this round trip would have reached him before its reply.
    await bob.client.nc.flush();
    expect(bobLive.map(text)).not.toContain("after bob left");
    expect(viaLeftover.length).toBe(deliveredBefore);
    await expect(jsApi(bob.client.nc, `$JS.API.DIRECT.GET.${stream}`, { seq: 1, batch: 10 })).rejects.toThrow(/Permissions Violation/);
    const read = async (): Promise<string[]> => {
      const got: string[] = [];
      for await (const m of bob.client.room(roomId, keys).history({ timeoutMs: 1_000 })) got.push(text(m));
      return got;
    };
    await expect(read()).rejects.toMatchObject({ code: ErrorCode.Forbidden });
    leftoverSub.unsubscribe();
  });

  it("revoking a user deletes the consumers on the streams of its rooms", async () => {
    const carol = await bus.addMember("carol");
    await alice.client.rooms.invite(roomId, carol.principal);
    await leftoverConsumer(operator, stream, "carol_leftover", `_INBOX.${carol.principal}.leftover`);
    expect(await consumerNames(operator, stream)).toEqual(["carol_leftover"]);
    await bus.admin.users.revoke(carol.principal);
    expect(await consumerNames(operator, stream)).toEqual([]);
  });

  it("on start, membership turns on direct get (for rooms.history) and no-ack on an older room stream and deletes its leftover consumers", async () => {
    const {
      room: { id },
    } = await alice.client.rooms.create("older", { persist: true, encrypt: true });
    const older = `ROOM_${id}`;
    // As a stream made before room history moved to direct get.
    const { config } = (await jsApi(operator, `$JS.API.STREAM.INFO.${older}`)) as { config: Record<string, unknown> };
    await jsApi(operator, `$JS.API.STREAM.UPDATE.${older}`, { ...config, allow_direct: false, no_ack: false });
    await leftoverConsumer(operator, older, "older_leftover", `_INBOX.${alice.principal}.leftover`);
    const made = (await jsApi(operator, `$JS.API.STREAM.INFO.${older}`)) as { config: { allow_direct?: boolean; no_ack?: boolean } };
    expect([made.config.allow_direct ?? false, made.config.no_ack ?? false]).toEqual([false, false]);

    // A second instance on the production membership permissions, as after a deploy.
    const restarted = await createMembershipService(await bus.serviceConnection("membership"), { logger: pino({ level: "silent" }) });
    await restarted.stop();

    expect((await jsApi(operator, `$JS.API.STREAM.INFO.${older}`)) as object).toMatchObject({ config: { allow_direct: true, no_ack: true, deny_delete: true, deny_purge: true } });
    expect(await consumerNames(operator, older)).toEqual([]);
    await waitForRoomAccess(alice.client, id);
    const olderKeys = new StaticRoomKeys().set(id, 0, randomBytes(32));
    const room = alice.client.room(id, olderKeys);
    await room.publish("readable again");
    await room.close();
    await alice.client.nc.flush();
    await storedUpTo(operator, id);
    const got: string[] = [];
    for await (const m of alice.client.room(id, olderKeys).history()) got.push(text(m));
    expect(got).toEqual(["readable again"]);
  });
});
