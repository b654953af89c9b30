// An application author's path, on the public SDK only: one awaited call
// gets a member from "invited" to "holds the key", saying what it waits for.
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import { loadIdentityFile, toBase64Url, writeIdentityFile } from "@unibus/crypto";
import { ErrorCode, KeysServiceKeyring, RoomReadyStage, UnibusError, UntrustedShareError, readyRoom, rekeyRoom } from "@unibus/sdk";
import type { ReadyRoom, RoomMessage } from "@unibus/sdk";
import type { TestBusMember } from "@unibus/testbus";
import { recordingIo } from "@unibus/cli/test-io";
import { startE2eBus } from "./bus-with-services.js";
import type { E2eBus } from "./bus-with-services.js";

describe("readyRoom: key preparation in the SDK", () => {
  let e2e: E2eBus;
  let owner: TestBusMember;
  let bob: TestBusMember;
  let carol: TestBusMember;
  const ready: ReadyRoom[] = [];

  beforeAll(async () => {
    e2e = await startE2eBus();
    // Plain members: no agreement key registered yet, as a new application would start.
    [owner, bob, carol] = await Promise.all([e2e.bus.addMember("owner"), e2e.bus.addMember("bob"), e2e.bus.addMember("carol")]);
  });

  afterAll(async () => {
    await Promise.allSettled(ready.map((r) => r.room.close()));
    await e2e?.stop();
  });

  it("a member waits, saying so, until the owner's readyRoom starts the first epoch; then both talk", async () => {
    const {
      room: { id: roomId },
    } = await owner.client.rooms.create("ready", { persist: false, encrypt: true });
    await owner.client.rooms.invite(roomId, bob.principal);
    const bobStages: RoomReadyStage[] = [];
    const bobReady = readyRoom(bob.client, bob.identity, roomId, { timeoutMs: 20_000, onStage: (s) => bobStages.push(s) });
    // The owner starts only once bob is waiting for an epoch, so bob's wait is observed, not assumed.
    await expect.poll(() => bobStages.includes(RoomReadyStage.waitingForEpoch), { timeout: 15_000 }).toBe(true);
    const ownerStages: RoomReadyStage[] = [];
    const o = await readyRoom(owner.client, owner.identity, roomId, { onStage: (s) => ownerStages.push(s) });
    ready.push(o);
    expect(o).toMatchObject({ role: "owner", registered: true, rekeyedTo: 1, key: { epoch: 1 } });
    expect(ownerStages).toEqual([RoomReadyStage.checkingMembership, RoomReadyStage.waitingForAccess, RoomReadyStage.registeringAgreementKey, RoomReadyStage.startingFirstEpoch, RoomReadyStage.ready]);
    const b = await bobReady;
    ready.push(b);
    expect(b).toMatchObject({ role: "member", registered: true, rekeyedTo: undefined, key: { epoch: 1 } });
    expect(bobStages).toEqual([RoomReadyStage.checkingMembership, RoomReadyStage.waitingForAccess, RoomReadyStage.registeringAgreementKey, RoomReadyStage.waitingForEpoch, RoomReadyStage.ready]);

    const got: RoomMessage[] = [];
    const sub = o.room.subscribe((m) => got.push(m));
    await owner.client.nc.flush();
    await b.room.publish("from bob, via readyRoom");
    await b.room.flush();
    await expect.poll(() => got.map((m) => m.string()), { timeout: 5_000 }).toEqual(["from bob, via readyRoom"]);
    expect(got[0]).toMatchObject({ sender: bob.principal, epoch: 1 });
    sub.stop();
  });

  it("with no owner online to seal a share, it fails with room_not_ready naming what it waited for", async () => {
    const {
      room: { id: roomId },
    } = await owner.client.rooms.create("no-owner", { persist: false, encrypt: true });
    await owner.client.rooms.invite(roomId, carol.principal);
    const err = await readyRoom(carol.client, carol.identity, roomId, { timeoutMs: 3_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnibusError);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, reason: "room_not_ready" });
    expect((err as Error).message).toMatch(/waiting for an owner of the room to seal a key epoch/);
  });

  it("a non-member is told so, with a coded error", async () => {
    const {
      room: { id: roomId },
    } = await owner.client.rooms.create("closed", { persist: false, encrypt: true });
    await expect(readyRoom(carol.client, carol.identity, roomId, { timeoutMs: 3_000 })).rejects.toMatchObject({ code: ErrorCode.Forbidden });
  });

  it("unibus identity rotate-agreement-key: a new key in the 0600 file and at the keys service; the next epoch is sealed to it, the old share no longer opens", async () => {
    const dir = await mkdtemp(join(tmpdir(), "unibus-rotate-"));
    try {
      const {
        room: { id: roomId },
      } = await owner.client.rooms.create("rotate", { persist: false, encrypt: true });
      await owner.client.rooms.invite(roomId, bob.principal);
      const o = await readyRoom(owner.client, owner.identity, roomId);
      ready.push(o);
      const before = await readyRoom(bob.client, bob.identity, roomId);
      ready.push(before);
      const path = join(dir, "bob.id");
      await writeIdentityFile(path, bob.identity);
      const io = recordingIo({ env: { UNIBUS_URL: e2e.bus.url, UNIBUS_IDENTITY: path }, cwd: dir });
      expect(await runCli(["identity", "rotate-agreement-key"], io), io.all()).toBe(ExitCode.ok);
      const rotated = await loadIdentityFile(path);
      expect(rotated.principal).toBe(bob.principal);
      expect(toBase64Url(rotated.agreementPublicKey)).not.toBe(toBase64Url(bob.identity.agreementPublicKey));
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(io.all()).not.toContain(JSON.parse(await readFile(path, "utf8")).agreementSecretKey as string);
      const listed = (await owner.client.keys.agreementKeys(roomId)).members.find((m) => m.principal === bob.principal);
      expect(listed?.agreementKey).toBe(toBase64Url(rotated.agreementPublicKey));

      const ring = new KeysServiceKeyring(bob.client, rotated);
      // The current epoch was sealed to the old key, which the file no longer holds.
      await expect(ring.get(roomId, before.key.epoch)).rejects.toBeInstanceOf(UntrustedShareError);
      const next = await rekeyRoom(owner.client, owner.identity.signingKey, roomId);
      expect(next.withoutShare).toEqual([]);
      expect(await ring.get(roomId, next.epoch)).toBeDefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
