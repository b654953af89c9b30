// The whole end-to-end path on the production callout ACLs: membership,
// agreement keys, signed epochs, frames, automatic rekey, history, blobs,
// and what ends up on disk.
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, RejectReason, RoomAccessTimeoutError, UnibusError, autoRekey, getBlob, putBlob, rekeyRoom, waitForRoomAccess } from "@unibus/sdk";
import type { AutoRekey, RekeyResult, Room, RoomMessage, RoomReject } from "@unibus/sdk";
import { eventually } from "@unibus/testing";
import { keyedMember, nextMatching, recordMessages, recordRejects, startE2eBus } from "./bus-with-services.js";
import type { E2eBus, KeyedMember } from "./bus-with-services.js";

const text = (m: RoomMessage): string => m.string();

describe("end-to-end encrypted rooms on the production ACLs", () => {
  let e2e: E2eBus;
  let owner: KeyedMember;
  let bob: KeyedMember;
  let carol: KeyedMember;
  let roomId: string;
  let ownerRoom: Room;
  let ownerRejects: RoomReject[];
  let auto: AutoRekey | undefined;
  const rekeys: (RekeyResult | Error)[] = [];
  const plaintexts: string[] = [];
  const rooms: Room[] = [];

  const nextRekey = async (epoch: number): Promise<void> => {
    await eventually(
      () => rekeys.map((r) => (r instanceof Error ? r.message : r.epoch)),
      (seen) => seen.some((e) => typeof e === "number" && e >= epoch),
      { timeoutMs: 10_000, intervalMs: 50, what: `a rekey to epoch ${epoch} (rekeys seen)` },
    );
  };

  beforeAll(async () => {
    e2e = await startE2eBus();
    [owner, bob, carol] = await Promise.all([keyedMember(e2e.bus, "owner"), keyedMember(e2e.bus, "bob"), keyedMember(e2e.bus, "carol")]);
    ({
      room: { id: roomId },
    } = await owner.client.rooms.create("e2e", { persist: true, encrypt: true }));
    await waitForRoomAccess(owner.client, roomId);
    await owner.client.rooms.invite(roomId, bob.principal);
    await waitForRoomAccess(bob.client, roomId);
    ownerRoom = owner.client.room(roomId, owner.keyring);
    rooms.push(ownerRoom);
    ownerRejects = recordRejects(ownerRoom.rejects());
  });

  afterAll(async () => {
    auto?.stop();
    await Promise.allSettled(rooms.map((r) => r.close()));
    await e2e?.stop();
  });

  it("(a) two members exchange messages both ways, decrypted, once the owner has rekeyed", async () => {
    expect(await rekeyRoom(owner.client, owner.identity.signingKey, roomId)).toMatchObject({ epoch: 1, published: true, withoutShare: [] });
    const bobRoom = bob.client.room(roomId, bob.keyring);
    rooms.push(bobRoom);
    const ownerSub = ownerRoom.subscribe()[Symbol.asyncIterator]();
    const bobSub = bobRoom.subscribe()[Symbol.asyncIterator]();
    await Promise.all([owner.client.nc.flush(), bob.client.nc.flush()]);

    plaintexts.push("hello bob, epoch one", "hi owner from bob");
    await ownerRoom.publish("hello bob, epoch one");
    const atBob = await nextMatching(bobSub, (m) => text(m) === "hello bob, epoch one", 5_000);
    expect(atBob).toMatchObject({ sender: owner.principal, epoch: 1 });

    await bobRoom.publish({ text: "hi owner from bob" });
    const atOwner = await nextMatching(ownerSub, (m) => m.sender === bob.principal, 5_000);
    expect(atOwner?.json()).toEqual({ text: "hi owner from bob" });
    expect(atOwner?.epoch).toBe(1);
    expect(ownerRejects).toEqual([]);
  });

  it("(b) a removed member gets no key for the automatic new epoch and no plaintext; a newcomer gets the current epoch", async () => {
    auto = autoRekey(owner.client, owner.identity.signingKey, roomId, { jitterMs: 50, onRekey: (o) => rekeys.push(o) });
    await owner.client.nc.flush();
    // Bob keeps a live room subscription, as a client that does not know it was removed would.
    const bobRoom = bob.client.room(roomId, bob.keyring);
    rooms.push(bobRoom);
    const bobSeen = recordMessages(bobRoom.subscribe());
    const bobRejects = recordRejects(bobRoom.rejects());

    await owner.client.rooms.remove(roomId, bob.principal);
    await nextRekey(2);
    const after = await owner.client.keys.epochs(roomId);
    expect(after.epochs.at(-1)).toBe(2);

    // The keys service refuses a former member even the list of epochs, let alone a share.
    await expect(bob.client.keys.getShare(roomId, 2)).rejects.toSatisfy((e: unknown) => e instanceof UnibusError && e.code === ErrorCode.Forbidden);
    expect(await bob.keyring.get(roomId, 2)).toBeUndefined();
    // After the kick its connection holds no grant for the room's subjects at all.
    await expect(waitForRoomAccess(bob.client, roomId, { timeoutMs: 1_500 })).rejects.toBeInstanceOf(RoomAccessTimeoutError);

    const ownerSub = ownerRoom.subscribe()[Symbol.asyncIterator]();
    await owner.client.nc.flush();
    // The owner's keyring reuses the newest epoch for ≤ 1 s; wait until it has moved on.
    await eventually(async () => (await owner.keyring.current(roomId)).epoch, (e) => e >= 2, { timeoutMs: 5_000, intervalMs: 100, what: "the owner's keyring on epoch 2" });
    plaintexts.push("secret after bob left");
    await ownerRoom.publish("secret after bob left");
    expect(await nextMatching(ownerSub, (m) => text(m) === "secret after bob left", 5_000)).toMatchObject({ epoch: 2 });
    // Positive control: the owner got the frame, so the server has already fanned it out; a
    // round trip on bob's connection after that would carry any copy of it to bob first.
    await bob.client.nc.flush();
    await new Promise((r) => setImmediate(r));
    expect(bobSeen.map(text)).not.toContain("secret after bob left");
    expect(bobSeen.every((m) => m.epoch < 2)).toBe(true);
    expect(bobRejects.filter((r) => r.reason !== RejectReason.unknownEpoch)).toEqual([]);

    // Carol joins: another automatic epoch, which she holds; the one before her is not hers.
    await owner.client.rooms.invite(roomId, carol.principal);
    await nextRekey(3);
    await waitForRoomAccess(carol.client, roomId);
    expect((await carol.keyring.current(roomId)).epoch).toBe(3);
    expect(await carol.keyring.get(roomId, 2)).toBeUndefined();
    const carolRoom = carol.client.room(roomId, carol.keyring);
    rooms.push(carolRoom);
    const carolSub = carolRoom.subscribe()[Symbol.asyncIterator]();
    await carol.client.nc.flush();
    await eventually(async () => (await owner.keyring.current(roomId)).epoch, (e) => e >= 3, { timeoutMs: 10_000, intervalMs: 100, what: "the owner's keyring on epoch 3" });
    plaintexts.push("welcome carol");
    await ownerRoom.publish("welcome carol");
    expect(await nextMatching(carolSub, (m) => text(m) === "welcome carol", 5_000)).toMatchObject({ epoch: 3, sender: owner.principal });
  });

  it("(c) a blob put by one member is read by another; a non-member gets 403", async () => {
    const secret = new TextEncoder().encode("blob plaintext that must never hit the disk ".repeat(2_000));
    plaintexts.push("blob plaintext that must never hit the disk");
    const put = await putBlob(owner.client, roomId, secret);
    expect(put.created).toBe(true);
    expect(Buffer.from(await getBlob(carol.client, roomId, put.blobId, put.key)).equals(Buffer.from(secret))).toBe(true);
    // Bob was removed in (b): the service checks membership on every get.
    await expect(getBlob(bob.client, roomId, put.blobId, put.key)).rejects.toSatisfy((e: unknown) => e instanceof UnibusError && e.code === ErrorCode.Forbidden);
  });

  it("(d) history decrypts every epoch its reader holds and skips the membership events stored with the frames", async () => {
    const history = owner.client.room(roomId, owner.keyring);
    rooms.push(history);
    const historyRejects = recordRejects(history.rejects());
    const got: string[] = [];
    for await (const m of history.history()) got.push(text(m));
    expect(got).toEqual(["hello bob, epoch one", '{"text":"hi owner from bob"}', "secret after bob left", "welcome carol"]);

    // Carol holds epoch 3 only: the older frames are unknown_epoch, never malformed.
    const carolHistory = carol.client.room(roomId, carol.keyring);
    rooms.push(carolHistory);
    const carolRejects = recordRejects(carolHistory.rejects());
    const carolGot: string[] = [];
    for await (const m of carolHistory.history()) carolGot.push(text(m));
    expect(carolGot).toEqual(["welcome carol"]);
    await new Promise((r) => setImmediate(r));
    expect(carolRejects.map((r) => r.reason)).toEqual([RejectReason.unknownEpoch, RejectReason.unknownEpoch, RejectReason.unknownEpoch]);
    expect(historyRejects).toEqual([]);

    // A membership event as the stream's newest message must not stall the read.
    const dave = await e2e.bus.addMember("dave");
    await owner.client.rooms.invite(roomId, dave.principal);
    await nextRekey(4);
    const again: string[] = [];
    for await (const m of history.history()) again.push(text(m));
    expect(again).toEqual(got);
  });

  it("(e) no known plaintext appears anywhere in the JetStream store (streams, KV, object chunks)", async () => {
    const dir = join(e2e.bus.server.dir, "jetstream");
    const store = async (): Promise<{ path: string; bytes: Buffer }[]> => {
      const out: { path: string; bytes: Buffer }[] = [];
      for (const f of (await readdir(dir, { recursive: true })).map((f) => join(dir, f))) if ((await stat(f)).isFile()) out.push({ path: f, bytes: await readFile(f) });
      return out;
    };
    // Positive control before the negative check: the file store writes its blocks out
    // asynchronously, so wait until the stored frames are on disk (their header names
    // the room in clear), which proves the grep below reads them.
    const stored = await eventually(store, (all) => all.some((f) => f.bytes.includes(roomId)), { timeoutMs: 10_000, what: "room frames on disk" });
    const files = stored.map((f) => f.path);
    let roomIdSeen = false;
    for (const { path: f, bytes } of stored) {
      if (bytes.includes(roomId)) roomIdSeen = true;
      for (const p of plaintexts) expect(bytes.includes(p), `${f} holds "${p}"`).toBe(false);
    }
    expect(files.some((f) => f.includes("ROOM_"))).toBe(true);
    expect(files.some((f) => f.includes("OBJ_blobs"))).toBe(true);
    expect(roomIdSeen).toBe(true);
  });
});
