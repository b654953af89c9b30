import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { createIdentity, toHex } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { createMembershipService, noKicks } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { KeysServiceKeyring, autoRekey, connect, rekeyRoom, waitForRoomKey } from "@unibus/sdk";
import type { AutoRekey, RekeyResult, UnibusClient } from "@unibus/sdk";
import { startTestServer, rejectionOf } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { epochKey } from "@unibus/keys";
import type { EpochRecord } from "@unibus/keys";
import { createKeysService } from "@unibus/keys";
import type { RunningKeysService } from "@unibus/keys";

// A member whose agreement key is registered after the newest epoch (the
// README order: invite, then both run `unibus chat`) must get a key from an
// online owner within 1 s, of an epoch that began at or after its invite.

const silent = pino({ level: "silent" });

const rejection = (p: Promise<unknown>): Promise<UnibusError> => rejectionOf(p, UnibusError);

let server: TestServer;
let nc: NatsConnection;
let membership: RunningMembershipService;
let keys: RunningKeysService;
const [boot, admin, owner, late, offline, waiter, outsider] = Array.from({ length: 7 }, () => createIdentity());
const c: Record<string, UnibusClient> = {};
const stops: AutoRekey[] = [];

const keyring = (name: string, id: Identity): KeysServiceKeyring => new KeysServiceKeyring(c[name]!, id, { currentTtlMs: 0 });

async function epochRecord(roomId: string, epoch: number): Promise<EpochRecord> {
  const e = await keys.buckets.roomKeys.get(epochKey(roomId, epoch));
  if (e === null || e.operation !== "PUT") throw new Error(`no epoch ${epoch}`);
  return e.json<EpochRecord>();
}

/** A room with `member` invited and epoch 1 sealed before it has an agreement key; returns the room and the invite time. */
async function roomWithLateMember(member: Identity): Promise<{ roomId: string; invitedAt: string }> {
  const { room } = await c["owner"]!.rooms.create("late", { persist: false, encrypt: true });
  const { member: m } = await c["owner"]!.rooms.invite(room.id, member.principal);
  expect(await rekeyRoom(c["owner"]!, owner!.signingKey, room.id)).toEqual({ epoch: 1, published: true, withoutShare: [member.principal] });
  return { roomId: room.id, invitedAt: m.addedAt };
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  membership = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: boot!.principal });
  keys = await createKeysService(nc, { logger: silent });
  const names = ["boot", "admin", "owner", "late", "offline", "waiter", "outsider"] as const;
  const ids = [boot!, admin!, owner!, late!, offline!, waiter!, outsider!];
  await Promise.all(ids.map(async (id, i) => (c[names[i]!] = await connect({ url: server.url, identity: id }))));
  await c["boot"]!.admin.bootstrap(admin!.principal, "root");
  for (const [i, id] of ids.entries()) if (i > 1) await c["admin"]!.users.add(id.principal, names[i]!, "member");
  // Only the owner and the outsider have keys at first: the others register late.
  await c["owner"]!.keys.registerAgreementKey(owner!);
  await c["outsider"]!.keys.registerAgreementKey(outsider!);
});

afterAll(async () => {
  for (const s of stops) s.stop();
  await Promise.allSettled(Object.values(c).map((cl) => cl.close()));
  await keys?.stop();
  await membership?.stop();
  await server?.stop();
});

describe("a member whose agreement key is registered after the newest epoch", () => {
  it("is named to owners (and only owners) as pending once it registers", async () => {
    const { roomId } = await roomWithLateMember(late!);
    expect((await c["owner"]!.keys.epochs(roomId)).current?.pendingShares).toEqual([]);
    await c["late"]!.keys.registerAgreementKey(late!);
    expect((await c["owner"]!.keys.epochs(roomId)).current?.pendingShares).toEqual([late!.principal]);
    const asMember = await c["late"]!.keys.epochs(roomId);
    expect(asMember.current?.epoch).toBe(1);
    expect(asMember.current).not.toHaveProperty("pendingShares");
    expect((await rejection(c["late"]!.keys.getShare(roomId))).reason).toBe("no_share");
  });

  it("gets a key from an online owner within 1 s, of a new epoch that began after its invite, not the old one", async () => {
    const { roomId, invitedAt } = await roomWithLateMember(waiter!);
    const outcomes: (RekeyResult | Error)[] = [];
    stops.push(autoRekey(c["owner"]!, owner!.signingKey, roomId, { onRekey: (o) => outcomes.push(o) }));
    await c["owner"]!.nc.flush();
    await c["waiter"]!.keys.registerAgreementKey(waiter!);
    const ring = keyring("waiter", waiter!);
    let waited = false;
    const t0 = performance.now();
    const got = await waitForRoomKey(c["waiter"]!, ring, roomId, { onWaiting: () => (waited = true) });
    const ms = performance.now() - t0;
    console.info(`late member: key held ${ms.toFixed(0)} ms after it started waiting (owner online)`);
    expect(waited).toBe(true);
    expect(ms).toBeLessThan(1_000);
    expect(got.epoch).toBe(2);
    expect(outcomes).toEqual([{ epoch: 2, published: true, withoutShare: [] }]);
    expect(toHex(got.key)).toBe(toHex((await keyring("owner", owner!).get(roomId, 2))!));
    expect(await ring.get(roomId, 1)).toBeUndefined();
    const record = await epochRecord(roomId, 2);
    expect(Date.parse(record.createdAt)).toBeGreaterThanOrEqual(Date.parse(invitedAt));
    expect((await c["owner"]!.keys.epochs(roomId)).current?.pendingShares).toEqual([]);
  });

  it("with no owner online it keeps waiting; the first owner to come online seals for it", async () => {
    const { roomId, invitedAt } = await roomWithLateMember(offline!);
    await c["offline"]!.keys.registerAgreementKey(offline!);
    const ring = keyring("offline", offline!);
    let waiting!: () => void;
    const isWaiting = new Promise<void>((r) => (waiting = r));
    let resolved = false;
    const got = waitForRoomKey(c["offline"]!, ring, roomId, { onWaiting: waiting, retryMs: 200 }).then((k) => {
      resolved = true;
      return k;
    });
    await isWaiting;
    // Its request went out and nobody answered: still no share, still waiting.
    expect((await rejection(c["offline"]!.keys.getShare(roomId))).reason).toBe("no_share");
    expect(resolved).toBe(false);
    const t0 = performance.now();
    stops.push(autoRekey(c["owner"]!, owner!.signingKey, roomId, { checkOnStart: true }));
    const key = await got;
    const ms = performance.now() - t0;
    console.info(`late member: key held ${ms.toFixed(0)} ms after the first owner came online`);
    expect(ms).toBeLessThan(1_000);
    expect(key.epoch).toBe(2);
    expect(Date.parse((await epochRecord(roomId, 2)).createdAt)).toBeGreaterThanOrEqual(Date.parse(invitedAt));
  });

  it("a non-member gets no share and is never pending, even if it was listed in the epoch before its removal", async () => {
    const removed = createIdentity();
    await c["admin"]!.users.add(removed.principal, "removed", "member");
    const rc = await connect({ url: server.url, identity: removed });
    c["removed"] = rc;
    const { roomId } = await roomWithLateMember(removed);
    await c["owner"]!.rooms.remove(roomId, removed.principal);
    await rc.keys.registerAgreementKey(removed);
    expect((await c["owner"]!.keys.epochs(roomId)).current?.pendingShares).toEqual([]);
    expect((await rejection(rc.keys.getShare(roomId))).code).toBe(ErrorCode.Forbidden);
    expect((await rejection(rc.keys.epochs(roomId))).code).toBe(ErrorCode.Forbidden);
    expect((await rejection(c["outsider"]!.keys.getShare(roomId))).code).toBe(ErrorCode.Forbidden);
    expect(await keyring("outsider", outsider!).get(roomId, 1)).toBeUndefined();
  });

  it("an owner's client checks again after a reconnect, so a key registered meanwhile gets an epoch", async () => {
    const reconnecting = createIdentity();
    await c["admin"]!.users.add(reconnecting.principal, "reconnecting", "member");
    const rc = await connect({ url: server.url, identity: reconnecting });
    c["reconnecting"] = rc;
    const { roomId } = await roomWithLateMember(reconnecting);
    let upToDate!: () => void;
    const firstCheck = new Promise<void>((r) => (upToDate = r));
    let rekeyed!: (o: RekeyResult | Error) => void;
    const rekey = new Promise<RekeyResult | Error>((r) => (rekeyed = r));
    stops.push(autoRekey(c["owner"]!, owner!.signingKey, roomId, { checkOnStart: true, onUpToDate: upToDate, onRekey: rekeyed }));
    await firstCheck;
    // Registered without asking (no notice): only the reconnect makes the owner look again.
    await rc.keys.registerAgreementKey(reconnecting);
    await c["owner"]!.nc.reconnect();
    expect(await rekey).toEqual({ epoch: 2, published: true, withoutShare: [] });
    expect((await keyring("reconnecting", reconnecting).current(roomId)).epoch).toBe(2);
  });
});
