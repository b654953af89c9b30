// Room keys go only to the verified membership log, whatever the services
// say: a rogue responder beside the keys service (it answers first, so every
// agreement_keys request in this file gets its list) names an extra
// principal, a rogue membership responder names a fake owner, and a removed
// member signs frames. Real nats-server, real services.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { pino } from "pino";
import { Subjects, UnibusError } from "@unibus/contracts";
import type { KeysAgreementKeysReply, MembershipRoomsGetReply } from "@unibus/contracts";
import { createIdentity, randomBytes, sealTo, toBase64Url } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { createMembershipService, noKicks } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import {
  KeysServiceKeyring,
  RejectReason,
  StaticRoomKeys,
  UntrustedShareError,
  UntrustedShareReason,
  agreementKeyStatementBytes,
  connect,
  epochStatementBytes,
  merkleRoot,
  principalsHash,
  rekeyRoom,
  shareLeaf,
} from "@unibus/sdk";
import type { RoomReject, UnibusClient } from "@unibus/sdk";
import { rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { epochKey } from "@unibus/keys";
import type { EpochRecord } from "@unibus/keys";
import { createKeysService } from "@unibus/keys";
import type { RunningKeysService } from "@unibus/keys";

const silent = pino({ level: "silent" });
const enc = new TextEncoder();

let server: TestServer;
let nc: NatsConnection;
let membership: RunningMembershipService;
let keys: RunningKeysService;
const [boot, admin, owner, bob, carol, attacker] = Array.from({ length: 6 }, () => createIdentity());
const c: Record<string, UnibusClient> = {};
let roomId = "";
const rogues: Subscription[] = [];

const keyring = (name: string, id: Identity): KeysServiceKeyring => new KeysServiceKeyring(c[name]!, id, { currentTtlMs: 0 });

async function epochRecord(epoch: number): Promise<EpochRecord | null> {
  const e = await keys.buckets.roomKeys.get(epochKey(roomId, epoch));
  return e === null || e.operation !== "PUT" ? null : e.json<EpochRecord>();
}

/** Stores an epoch the way a compromised server could, signed by `signer`, sealed to `recipients`, at the room's verified head. */
async function inject(epoch: number, signer: Identity, recipients: Identity[]): Promise<void> {
  const roomKey = randomBytes(32);
  const sorted = [...recipients].sort((a, b) => (a.principal < b.principal ? -1 : 1));
  const shares = sorted.map((id) => ({ principal: id.principal, sealedShare: toBase64Url(sealTo(id.agreementPublicKey, roomKey)) }));
  const root = merkleRoot(shares.map((s) => shareLeaf(s.principal, Buffer.from(s.sealedShare, "base64url"))));
  const log = await c["owner"]!.roomLogs.sync(roomId);
  const at = { logSeq: log.headSeq, logHead: log.headHash, recipients: principalsHash(shares.map((s) => s.principal)) };
  const signature = toBase64Url(signer.signingKey.sign(epochStatementBytes({ roomId, epoch, distributor: signer.principal, leafCount: shares.length, root, ...at })));
  const record: EpochRecord = { roomId, epoch, distributor: signer.principal, signature, shares, createdAt: new Date().toISOString(), logSeq: at.logSeq, logHead: toBase64Url(at.logHead) };
  await keys.buckets.roomKeys.put(epochKey(roomId, epoch), JSON.stringify(record));
}

/** The UntrustedShareError bob's keyring raises for `epoch`. */
async function refusal(epoch: number): Promise<UntrustedShareError> {
  return rejectionOf(keyring("bob", bob!).get(roomId, epoch), UntrustedShareError);
}

/** The next item of `it` matching `ok`, or undefined after `ms` (a bounded wait on the event itself). */
async function next<T>(it: AsyncIterator<T>, ok: (v: T) => boolean, ms = 5_000): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([it.next(), new Promise<undefined>((res) => (timer = setTimeout(() => res(undefined), left)))]);
    clearTimeout(timer);
    if (r === undefined || r.done === true) return undefined;
    if (ok(r.value)) return r.value;
  }
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  membership = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: boot!.principal });
  keys = await createKeysService(nc, { logger: silent });
  const names = ["boot", "admin", "owner", "bob", "carol", "attacker"] as const;
  const ids = [boot!, admin!, owner!, bob!, carol!, attacker!];
  await Promise.all(ids.map(async (id, i) => (c[names[i]!] = await connect({ url: server.url, identity: id }))));
  await c["boot"]!.admin.bootstrap(admin!.principal, "root");
  for (const [i, id] of ids.entries()) if (i > 1) await c["admin"]!.users.add(id.principal, names[i]!, "member");
  for (const [i, id] of ids.entries()) if (i > 1) await c[names[i]!]!.keys.registerAgreementKey(id);
  ({ room: { id: roomId } } = await c["owner"]!.rooms.create("guarded", { persist: false, encrypt: true }));
  await c["owner"]!.rooms.invite(roomId, bob!.principal);
  await c["owner"]!.rooms.invite(roomId, carol!.principal);
});

afterAll(async () => {
  for (const s of rogues) s.unsubscribe();
  await Promise.allSettled(Object.values(c).map((cl) => cl.close()));
  await keys?.stop();
  await membership?.stop();
  await server?.stop();
});

describe("rekey seals only to the verified membership", () => {
  it("an extra principal a rogue keys responder lists gets no share", async () => {
    const genuine = await c["owner"]!.keys.agreementKeys(roomId);
    const extra = { principal: attacker!.principal, agreementKey: toBase64Url(attacker!.agreementPublicKey), signature: toBase64Url(attacker!.signingKey.sign(agreementKeyStatementBytes(attacker!.principal, attacker!.agreementPublicKey))) };
    let answered = 0;
    // Answers from memory at once, beside the real service (which must read
    // its buckets first), so the client takes this reply.
    rogues.push(
      nc.subscribe(Subjects.keys.agreementKeysList, {
        callback: (_err, msg) => {
          answered++;
          const reply: KeysAgreementKeysReply = { roomId, members: [...genuine.members, extra].sort((a, b) => (a.principal < b.principal ? -1 : 1)) };
          msg.respond(enc.encode(JSON.stringify(reply)));
        },
      }),
    );
    // Two responders race; under load the real one can win a round, so the rogue's answer is polled for.
    await expect.poll(async () => (await c["owner"]!.keys.agreementKeys(roomId)).members.map((m) => m.principal), { timeout: 5_000 }).toContain(attacker!.principal);
    const outcome = await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
    expect(answered).toBeGreaterThanOrEqual(2);
    expect(outcome.withoutShare).toEqual([]);
    const record = await epochRecord(outcome.epoch);
    expect(record?.shares.map((s) => s.principal)).toEqual([owner!, bob!, carol!].map((i) => i.principal).sort());
    // The genuine set opens for a member.
    expect(await keyring("bob", bob!).get(roomId, outcome.epoch)).toHaveLength(32);
  });

  it("members reject an epoch sealed to that extra principal, even one an owner signed", async () => {
    const epoch = (await c["owner"]!.keys.epochs(roomId)).epochs.length + 1;
    await inject(epoch, owner!, [owner!, bob!, carol!, attacker!]);
    expect((await refusal(epoch)).reason).toBe(UntrustedShareReason.recipientsMismatch);
  });

  it("a fake owner named by a rogue rooms.get is ignored: its epoch is rejected and it cannot rekey", async () => {
    const genuine = await c["bob"]!.rooms.get(roomId);
    const fake = { ...genuine.members[0]!, principal: attacker!.principal, role: "owner" as const };
    rogues.push(
      nc.subscribe(Subjects.membership.roomsGet, {
        callback: (_err, msg) => {
          const reply: MembershipRoomsGetReply = { ...genuine, members: [...genuine.members, fake] };
          msg.respond(enc.encode(JSON.stringify(reply)));
        },
      }),
    );
    await expect.poll(async () => (await c["bob"]!.rooms.get(roomId)).members, { timeout: 5_000 }).toContainEqual(fake);
    const epoch = (await c["owner"]!.keys.epochs(roomId)).epochs.length + 1;
    await inject(epoch, attacker!, [owner!, bob!, carol!]);
    expect((await refusal(epoch)).reason).toBe(UntrustedShareReason.distributorNotOwner);
    // A member told it owns the room still cannot distribute: ownership is the log's.
    expect(await rejectionOf(rekeyRoom(c["bob"]!, bob!.signingKey, roomId), UnibusError)).toMatchObject({ reason: "not_owner_in_log" });
  });

  it("an epoch naming a log head the log does not have is rejected", async () => {
    const epoch = (await c["owner"]!.keys.epochs(roomId)).epochs.length + 1;
    await inject(epoch, owner!, [owner!, bob!, carol!]);
    const record = (await epochRecord(epoch))!;
    await keys.buckets.roomKeys.put(epochKey(roomId, epoch), JSON.stringify({ ...record, logHead: toBase64Url(randomBytes(32)) }));
    expect((await refusal(epoch)).reason).toBe(UntrustedShareReason.logMismatch);
  });
});

describe("readers accept frames only from the epoch's verified members", () => {
  it("a frame signed by a removed member is dropped; an owner's is delivered", async () => {
    for (const s of rogues.splice(0)) s.unsubscribe();
    await c["owner"]!.rooms.remove(roomId, carol!.principal);
    const { epoch } = await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
    const key = (await keyring("owner", owner!).get(roomId, epoch))!;
    const bobRoom = c["bob"]!.room(roomId, keyring("bob", bob!), { liveOnly: true });
    const sub = bobRoom.subscribe();
    const rejects = bobRoom.rejects()[Symbol.asyncIterator]();
    const messages = sub[Symbol.asyncIterator]();
    // Carol holds the new key somehow (a colluding member, a leak): readers still refuse her frames.
    const carolRoom = c["carol"]!.room(roomId, new StaticRoomKeys().set(roomId, epoch, key), { liveOnly: true });
    const ownerRoom = c["owner"]!.room(roomId, keyring("owner", owner!), { liveOnly: true });
    try {
      await c["bob"]!.nc.flush();
      await carolRoom.publish(enc.encode("still here"));
      const dropped = await next<RoomReject>(rejects, (r) => r.sender === carol!.principal);
      expect(dropped).toMatchObject({ reason: RejectReason.senderNotMember, epoch });
      await ownerRoom.publish(enc.encode("hello"));
      const got = await next(messages, () => true);
      expect(got?.sender).toBe(owner!.principal);
      expect(new TextDecoder().decode(got?.data)).toBe("hello");
    } finally {
      sub.stop();
      await Promise.all([bobRoom.close(), carolRoom.close(), ownerRoom.close()]);
    }
  });
});
