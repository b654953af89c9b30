import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, Subjects, UnibusError, decodeReply } from "@unibus/contracts";
import { EnvelopeHeader, createIdentity, envelopeToHeaders, randomBytes, sealTo, signEnvelope, toBase64Url, toHex } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { createMembershipService, noKicks } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { EPOCH_ROLLBACK, FileEpochStore, KeysServiceKeyring, UntrustedShareError, UntrustedShareReason, autoRekey, connect, epochStatementBytes, merkleRoot, prepareNextEpoch, principalsHash, rekeyRoom, shareLeaf } from "@unibus/sdk";
import type { AutoRekey, KeyringClient, UnibusClient } from "@unibus/sdk";
import { roomMembers } from "@unibus/kit";
import { startTestServer, rejectionOf, eventually as eventuallyHolds } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import packageJson from "@unibus/keys/package.json" with { type: "json" };
import { KeysBucket, epochKey } from "@unibus/keys";
import type { EpochRecord } from "@unibus/keys";
import { createKeysService } from "@unibus/keys";
import type { RunningKeysService } from "@unibus/keys";

const silent = pino({ level: "silent" });

/** Kicks are covered by test/services/membership/kick.test.ts; here they only have to succeed. */
const rejection = (p: Promise<unknown>): Promise<UnibusError> => rejectionOf(p, UnibusError);

/** Generous: the machine is shared, and a rekey is several round trips plus sealing. */
const eventually = <T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> =>
  eventuallyHolds(read, ok, { timeoutMs: ms, intervalMs: 50, what: `rekeys ${String(rekeyOutcomes)}` });

let server: TestServer;
let nc: NatsConnection;
let membership: RunningMembershipService;
let keys: RunningKeysService;
const [boot, admin, owner, alice, bob, carol] = Array.from({ length: 6 }, () => createIdentity());
const c: Record<string, UnibusClient> = {};
const clients: UnibusClient[] = [];
const stops: AutoRekey[] = [];
/** Every room key this suite saw in plaintext, to look for in the bucket. */
const knownKeys: Uint8Array[] = [];
/** What the owner's auto-rekey reported (shown when a wait fails). */
const rekeyOutcomes: unknown[] = [];

async function client(id: Identity): Promise<UnibusClient> {
  const cl = await connect({ url: server.url, identity: id });
  clients.push(cl);
  return cl;
}

const keyring = (name: string, id: Identity): KeysServiceKeyring => new KeysServiceKeyring(c[name]!, id, { currentTtlMs: 0 });

async function epochRecord(roomId: string, epoch: number): Promise<EpochRecord | null> {
  const e = await keys.buckets.roomKeys.get(epochKey(roomId, epoch));
  return e === null || e.operation !== "PUT" ? null : e.json<EpochRecord>();
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  membership = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: boot!.principal });
  keys = await createKeysService(nc, { logger: silent });
  const names = ["boot", "admin", "owner", "alice", "bob", "carol"] as const;
  const ids = [boot!, admin!, owner!, alice!, bob!, carol!];
  await Promise.all(ids.map(async (id, i) => (c[names[i]!] = await client(id))));
  await c["boot"]!.admin.bootstrap(admin!.principal, "root");
  for (const [i, id] of ids.entries()) if (i > 1) await c["admin"]!.users.add(id.principal, names[i]!, "member");
  for (const [i, id] of ids.entries()) if (i > 1) await c[names[i]!]!.keys.registerAgreementKey(id);
});

afterAll(async () => {
  for (const s of stops) s.stop();
  await Promise.allSettled(clients.map((cl) => cl.close()));
  await keys?.stop();
  await membership?.stop();
  await server?.stop();
});

it("registers as the keys micro service, visible in $SRV.INFO with its package version", async () => {
  const info = (await nc.request("$SRV.INFO.keys", undefined, { timeout: 5_000 })).json<Record<string, unknown>>();
  expect(info).toMatchObject({ type: "io.nats.micro.v1.info_response", name: "keys", version: packageJson.version, id: keys.id });
});

describe("room-key epochs in one room, as owners' SDKs rekey on membership changes", () => {
  let roomId = "";

  it("a newcomer gets the current epoch, and the epochs before it joined stay unreadable", async () => {
    ({ room: { id: roomId } } = await c["owner"]!.rooms.create("e2e", { persist: false, encrypt: true }));
    await c["owner"]!.rooms.invite(roomId, alice!.principal);
    expect(await rekeyRoom(c["owner"]!, owner!.signingKey, roomId)).toEqual({ epoch: 1, published: true, withoutShare: [] });
    const ownerKey1 = await keyring("owner", owner!).current(roomId);
    const aliceKey1 = await keyring("alice", alice!).current(roomId);
    expect(aliceKey1.epoch).toBe(1);
    expect(toHex(aliceKey1.key)).toBe(toHex(ownerKey1.key));
    knownKeys.push(ownerKey1.key);

    stops.push(autoRekey(c["owner"]!, owner!.signingKey, roomId, { jitterMs: 50, onRekey: (o) => rekeyOutcomes.push(o) }));
    await c["owner"]!.nc.flush();
    await c["owner"]!.rooms.invite(roomId, bob!.principal);
    await eventually(() => c["owner"]!.keys.epochs(roomId), (r) => r.epochs.length === 2);
    const bobRing = keyring("bob", bob!);
    const bobCurrent = await bobRing.current(roomId);
    expect(bobCurrent.epoch).toBe(2);
    expect(toHex(bobCurrent.key)).toBe(toHex((await keyring("alice", alice!).current(roomId)).key));
    expect(toHex(bobCurrent.key)).not.toBe(toHex(ownerKey1.key));
    knownKeys.push(bobCurrent.key);
    expect(await bobRing.get(roomId, 1)).toBeUndefined();
    expect((await rejection(c["bob"]!.keys.getShare(roomId, 1))).code).toBe(ErrorCode.NotFound);
  });

  it("a removed member gets no share of the rekeyed epoch: shares.get is 403 and the stored set holds nothing for it", async () => {
    const aliceRing = keyring("alice", alice!);
    expect(await aliceRing.get(roomId, 2)).toBeDefined();
    await c["owner"]!.rooms.remove(roomId, alice!.principal);
    const { epochs } = await eventually(() => c["owner"]!.keys.epochs(roomId), (r) => r.epochs.length === 3);
    expect(epochs).toEqual([1, 2, 3]);
    expect((await rejection(c["alice"]!.keys.getShare(roomId, 3))).code).toBe(ErrorCode.Forbidden);
    expect((await rejection(c["alice"]!.keys.getShare(roomId))).code).toBe(ErrorCode.Forbidden);
    expect(await aliceRing.get(roomId, 3)).toBeUndefined();
    const record = await epochRecord(roomId, 3);
    expect(record?.shares.map((s) => s.principal)).toEqual([owner!.principal, bob!.principal].sort());
    // Even with the whole record, none of the sealed shares opens with alice's key.
    const bobKey3 = await keyring("bob", bob!).get(roomId, 3);
    expect(bobKey3).toBeDefined();
    knownKeys.push(bobKey3!);
    expect(toHex(bobKey3!)).not.toBe(toHex((await aliceRing.get(roomId, 2))!));
  });

  it("a member (not an owner) cannot publish an epoch: 403", async () => {
    expect((await rejection(rekeyRoom(c["bob"]!, bob!.signingKey, roomId))).code).toBe(ErrorCode.Forbidden);
  });

  it("a share set that is not the current membership exactly is refused with 409", async () => {
    const epoch = (await c["owner"]!.keys.epochs(roomId)).epochs.length + 1;
    const log = await c["owner"]!.roomLogs.sync(roomId);
    const publish = (principals: string[]): Promise<unknown> => {
      const sorted = [...principals].sort();
      const shares = sorted.map((principal) => ({ principal, sealedShare: toBase64Url(sealTo(owner!.agreementPublicKey, randomBytes(32))) }));
      const root = merkleRoot(shares.map((s) => shareLeaf(s.principal, Buffer.from(s.sealedShare, "base64url"))));
      const at = { logSeq: log.headSeq, logHead: log.headHash, recipients: principalsHash(sorted) };
      const signature = toBase64Url(owner!.signingKey.sign(epochStatementBytes({ roomId, epoch, distributor: owner!.principal, leafCount: shares.length, root, ...at })));
      return c["owner"]!.keys.publishEpoch({ roomId, epoch, shares: shares as [(typeof shares)[number]], signature, logSeq: at.logSeq, logHead: toBase64Url(at.logHead) });
    };
    expect(await rejection(publish([owner!.principal]))).toMatchObject({ code: ErrorCode.Conflict, reason: "member_set_mismatch" });
    expect(await rejection(publish([owner!.principal, bob!.principal, alice!.principal]))).toMatchObject({ code: ErrorCode.Conflict, reason: "member_set_mismatch" });
  });

  it("of two owners rekeying concurrently exactly one epoch is stored; the other learns the winner", async () => {
    await c["owner"]!.rooms.invite(roomId, carol!.principal, "owner");
    await eventually(() => c["owner"]!.keys.epochs(roomId), (r) => r.epochs.length === 4);
    const results = await Promise.all([rekeyRoom(c["owner"]!, owner!.signingKey, roomId), rekeyRoom(c["carol"]!, carol!.signingKey, roomId)]);
    const after = await c["owner"]!.keys.epochs(roomId);
    expect(after.epochs).toEqual([1, 2, 3, 4, 5]);
    expect(results.filter((r) => r.published)).toHaveLength(1);
    expect(results.map((r) => r.epoch)).toEqual([5, 5]);
    const k5 = await keyring("bob", bob!).get(roomId, 5);
    knownKeys.push(k5!, (await keyring("bob", bob!).get(roomId, 4))!);
  });

  it("a key prepared in advance is published once: the next rekey draws a new one", async () => {
    for (const s of stops) s.stop();
    await prepareNextEpoch(c["owner"]!, roomId);
    const first = await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
    const second = await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
    expect([first.published, second.published, second.epoch]).toEqual([true, true, first.epoch + 1]);
    const ring = keyring("bob", bob!);
    const [k1, k2] = [await ring.get(roomId, first.epoch), await ring.get(roomId, second.epoch)];
    expect(toHex(k1!)).not.toBe(toHex(k2!));
    knownKeys.push(k1!, k2!);
  });

  it("the room_keys bucket never holds a room key in plaintext, in any encoding", async () => {
    expect(knownKeys.length).toBeGreaterThanOrEqual(4);
    const haystack: string[] = [];
    for await (const key of await keys.buckets.roomKeys.keys()) {
      const e = await keys.buckets.roomKeys.get(key);
      if (e !== null) haystack.push(Buffer.from(e.value).toString("latin1"), e.string());
    }
    const all = haystack.join("\n");
    for (const k of knownKeys) {
      const b = Buffer.from(k);
      for (const needle of [b.toString("latin1"), b.toString("hex"), b.toString("base64"), b.toString("base64url")]) expect(all.includes(needle)).toBe(false);
    }
  });
});

describe("keys.epochs pages", () => {
  const EPOCHS = 25;
  let roomId = "";
  beforeAll(async () => {
    ({ room: { id: roomId } } = await c["owner"]!.rooms.create("many-epochs", { persist: false, encrypt: true }));
    // Written straight into the bucket: the listing reads only keys and the
    // newest record, and 25 real rekeys would test rekeying, not paging. The
    // records have the stored shape (the reader checks it); their signatures
    // are random, which only a member verifying a share would notice.
    for (let epoch = 1; epoch <= EPOCHS; epoch++) {
      const record: EpochRecord = {
        roomId,
        epoch,
        distributor: owner!.principal,
        signature: toBase64Url(randomBytes(64)),
        shares: [{ principal: owner!.principal, sealedShare: toBase64Url(randomBytes(120)) }],
        createdAt: new Date().toISOString(),
        logSeq: 0,
        logHead: toBase64Url(randomBytes(32)),
      };
      await keys.buckets.roomKeys.put(epochKey(roomId, epoch), JSON.stringify(record));
    }
  });

  it("pages by epoch with a cursor, each page ascending, the newest summarised on every page", async () => {
    const seen: number[] = [];
    let cursor: string | undefined;
    let pageCount = 0;
    do {
      const page = await c["owner"]!.keys.epochsPage(roomId, { limit: 10, ...(cursor === undefined ? {} : { cursor }) });
      pageCount++;
      expect(page.epochs.length).toBeLessThanOrEqual(10);
      expect(page.current?.epoch).toBe(EPOCHS);
      seen.push(...page.epochs);
      cursor = page.next_cursor;
    } while (cursor !== undefined);
    expect(pageCount).toBe(3);
    expect(seen).toEqual(Array.from({ length: EPOCHS }, (_, i) => i + 1));
  });

  it("the SDK pages transparently: epochs() holds every epoch, newest last, with no cursor left", async () => {
    const all = await c["owner"]!.keys.epochs(roomId, { pageLimit: 7 });
    expect(all.epochs).toEqual(Array.from({ length: EPOCHS }, (_, i) => i + 1));
    expect(all.epochs.at(-1)).toBe(EPOCHS);
    expect(all.current?.epoch).toBe(EPOCHS);
    expect(all.next_cursor).toBeUndefined();
    // The default page holds them all at once.
    expect((await c["owner"]!.keys.epochsPage(roomId)).next_cursor).toBeUndefined();
  });

  it("a cursor the endpoint did not issue is 400 invalid_cursor; a page above the bound is a schema violation", async () => {
    for (const cursor of ["s10", "e0", "e-1", "e99999999999999999"]) {
      const err = await rejection(c["owner"]!.keys.epochsPage(roomId, { cursor }));
      expect([err.code, err.reason]).toEqual([ErrorCode.BadRequest, "invalid_cursor"]);
    }
    expect((await rejection(c["owner"]!.keys.epochsPage(roomId, { limit: 20_001 }))).reason).toBe("schema_violation");
  });

  it("a non-member learns nothing from any page", async () => {
    expect((await rejection(c["carol"]!.keys.epochsPage(roomId, { cursor: "e10" }))).code).toBe(ErrorCode.Forbidden);
  });
});

describe("shares the server could forge", () => {
  let roomId = "";
  beforeAll(async () => {
    ({ room: { id: roomId } } = await c["owner"]!.rooms.create("forge", { persist: false, encrypt: true }));
    await c["owner"]!.rooms.invite(roomId, bob!.principal);
    await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
  });

  /** Writes an epoch straight into the bucket, as a compromised server could, signed by `signer`. */
  async function inject(epoch: number, signer: Identity, tamper?: (r: EpochRecord) => void): Promise<void> {
    const roomKey = randomBytes(32);
    const principals = [owner!, bob!].sort((a, b) => (a.principal < b.principal ? -1 : 1));
    const shares = principals.map((id) => ({ principal: id.principal, sealedShare: toBase64Url(sealTo(id.agreementPublicKey, roomKey)) }));
    const root = merkleRoot(shares.map((s) => shareLeaf(s.principal, Buffer.from(s.sealedShare, "base64url"))));
    const log = await c["owner"]!.roomLogs.sync(roomId);
    const at = { logSeq: log.headSeq, logHead: log.headHash, recipients: principalsHash(shares.map((s) => s.principal)) };
    const signature = toBase64Url(signer.signingKey.sign(epochStatementBytes({ roomId, epoch, distributor: signer.principal, leafCount: shares.length, root, ...at })));
    const record: EpochRecord = { roomId, epoch, distributor: signer.principal, signature, shares, createdAt: new Date().toISOString(), logSeq: at.logSeq, logHead: toBase64Url(at.logHead) };
    tamper?.(record);
    await keys.buckets.roomKeys.put(epochKey(roomId, epoch), JSON.stringify(record));
  }

  async function refusal(epoch: number): Promise<UntrustedShareError> {
    const err = await keyring("bob", bob!).get(roomId, epoch).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UntrustedShareError);
    return err as UntrustedShareError;
  }

  it("a share set signed by someone who is not an owner (a member, or a key of the server's) is rejected", async () => {
    await inject(2, bob!);
    expect((await refusal(2)).reason).toBe(UntrustedShareReason.distributorNotOwner);
    await inject(3, createIdentity());
    expect((await refusal(3)).reason).toBe(UntrustedShareReason.distributorNotOwner);
  });

  it("a share swapped into an owner-signed set, or a claimed owner signature that is not one, is rejected", async () => {
    await inject(4, owner!, (r) => {
      r.shares = r.shares.map((s) => (s.principal === bob!.principal ? { ...s, sealedShare: toBase64Url(sealTo(bob!.agreementPublicKey, randomBytes(32))) } : s));
    });
    expect((await refusal(4)).reason).toBe(UntrustedShareReason.badSignature);
    await inject(5, createIdentity(), (r) => {
      r.distributor = owner!.principal;
    });
    expect((await refusal(5)).reason).toBe(UntrustedShareReason.badSignature);
  });

  it("an agreement key the server substitutes is never sealed to", async () => {
    const impostor = createIdentity();
    const record = { principal: bob!.principal, agreementKey: toBase64Url(impostor.agreementPublicKey), signature: toBase64Url(impostor.signingKey.sign(new Uint8Array(1))) };
    const { revision } = await keys.buckets.agreementKeys.put(bob!.principal, JSON.stringify(record)).then((r) => ({ revision: r }));
    expect(revision).toBeGreaterThan(0);
    const { room } = await c["owner"]!.rooms.create("subst", { persist: false, encrypt: true });
    await c["owner"]!.rooms.invite(room.id, bob!.principal);
    expect((await rekeyRoom(c["owner"]!, owner!.signingKey, room.id)).withoutShare).toEqual([bob!.principal]);
    expect((await rejection(c["bob"]!.keys.getShare(room.id))).code).toBe(ErrorCode.NotFound);
    await c["bob"]!.keys.registerAgreementKey(bob!);
  });
});

describe("bad input on every endpoint: a clear error reply, no crash, nothing stored", () => {
  const endpoints = Object.entries(Subjects.keys).filter(([name]) => name !== "all");
  const room = "aaaaaaaaaaaa";
  const valid = (): Record<string, unknown> => ({
    agreementKeysRegister: { agreementKey: toBase64Url(alice!.agreementPublicKey), signature: toBase64Url(new Uint8Array(64)) },
    agreementKeysList: { roomId: room },
    epochsPublish: { roomId: room, epoch: 1, shares: [{ principal: alice!.principal }], signature: toBase64Url(new Uint8Array(64)), logSeq: 0, logHead: toBase64Url(new Uint8Array(32)) },
    sharesGet: { roomId: room },
    epochsList: { roomId: room },
  });
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

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
  const signed = (s: string, d: Uint8Array): Record<string, string> => envelopeToHeaders(signEnvelope(alice!.signingKey, s, d));

  it.each(endpoints)("%s rejects malformed JSON, schema violations, oversize bodies and bad or missing signatures", async (name, subject) => {
    const body = valid()[name];
    const stored = (await keys.buckets.roomKeys.status()).values;
    expect((await raw(subject, new TextEncoder().encode("{not json"), signed)).code).toBe(ErrorCode.BadRequest);
    expect((await raw(subject, enc({ ...(body as object), extra: 1 }), signed)).code).toBe(ErrorCode.BadRequest);
    const limit = name === "epochsPublish" ? 1_000_000 : 64 * 1024;
    expect((await raw(subject, enc({ pad: "x".repeat(limit + 1_000) }), signed)).code).toBe(ErrorCode.PayloadTooLarge);
    expect((await raw(subject, enc(body), () => ({ [EnvelopeHeader.signer]: alice!.principal }))).code).toBe(ErrorCode.Unauthorized);
    const forged = (s: string): Record<string, string> => envelopeToHeaders(signEnvelope(alice!.signingKey, s, enc({ other: true })));
    expect((await raw(subject, enc(body), forged)).code).toBe(ErrorCode.Unauthorized);
    const stale = (s: string, d: Uint8Array): Record<string, string> => envelopeToHeaders(signEnvelope(alice!.signingKey, s, d, Date.now() - 60_000));
    expect((await raw(subject, enc(body), stale)).code).toBe(ErrorCode.Unauthorized);
    expect((await keys.buckets.roomKeys.status()).values).toBe(stored);
  });

  it("an agreement key binding not signed by the caller is refused", async () => {
    expect(await rejection(c["alice"]!.request(Subjects.keys.agreementKeysRegister, valid()["agreementKeysRegister"]))).toMatchObject({ code: ErrorCode.BadRequest, reason: "invalid_agreement_key_signature" });
  });

  it("a epochs.publish sent again stores nothing more: the signer's retry gets the first reply, a replay elsewhere nothing", async () => {
    const { room: r } = await c["owner"]!.rooms.create("replay", { persist: false, encrypt: true });
    const shares = [{ principal: owner!.principal, sealedShare: toBase64Url(sealTo(owner!.agreementPublicKey, randomBytes(32))) }];
    const root = merkleRoot(shares.map((s) => shareLeaf(s.principal, Buffer.from(s.sealedShare, "base64url"))));
    const log = await c["owner"]!.roomLogs.sync(r.id);
    const at = { logSeq: log.headSeq, logHead: log.headHash, recipients: principalsHash([owner!.principal]) };
    const signature = toBase64Url(owner!.signingKey.sign(epochStatementBytes({ roomId: r.id, epoch: 1, distributor: owner!.principal, leafCount: 1, root, ...at })));
    const data = enc({ roomId: r.id, epoch: 1, shares, signature, logSeq: at.logSeq, logHead: toBase64Url(at.logHead) });
    const envelope = envelopeToHeaders(signEnvelope(owner!.signingKey, Subjects.keys.epochsPublish, data));
    const h = headers();
    for (const [n, v] of Object.entries(envelope)) h.set(n, v);
    const send = async (): Promise<unknown> => decodeReply(await nc.request(Subjects.keys.epochsPublish, data, { headers: h, timeout: 5_000, noMux: true, reply: createInbox(`_INBOX.${owner!.principal}`) }));
    const first = await send();
    await keys.buckets.roomKeys.delete(epochKey(r.id, 1));
    // Answered from the nonce record: the handler does not run again, so the deleted epoch stays deleted.
    expect(await send()).toEqual(first);
    expect(await epochRecord(r.id, 1)).toBeNull();
  });

  it("a epochs.publish with an unsorted or malformed share list, or a signature over other shares, is 400", async () => {
    const { room: r } = await c["owner"]!.rooms.create("shape", { persist: false, encrypt: true });
    await c["owner"]!.rooms.invite(r.id, bob!.principal);
    const principals = [owner!.principal, bob!.principal].sort();
    const shares = principals.map((principal) => ({ principal, sealedShare: toBase64Url(sealTo(owner!.agreementPublicKey, randomBytes(32))) }));
    const sig = toBase64Url(owner!.signingKey.sign(new Uint8Array(8)));
    const at = { logSeq: 1, logHead: toBase64Url(new Uint8Array(32)) };
    const send = (body: object): Promise<unknown> => c["owner"]!.request(Subjects.keys.epochsPublish, { ...body, ...at });
    expect(await rejection(send({ roomId: r.id, epoch: 1, shares: [...shares].reverse(), signature: sig }))).toMatchObject({ code: ErrorCode.BadRequest, reason: "shares_not_sorted" });
    expect(await rejection(send({ roomId: r.id, epoch: 1, shares: [shares[0], { ...shares[1], sealedShare: "A".repeat(120) }], signature: sig }))).toMatchObject({ code: ErrorCode.BadRequest, reason: "invalid_sealed_share" });
    expect(await rejection(send({ roomId: r.id, epoch: 1, shares, signature: sig }))).toMatchObject({ code: ErrorCode.BadRequest, reason: "invalid_epoch_signature" });
    expect(KeysBucket.roomKeys).toBe("room_keys");
    expect(await epochRecord(r.id, 1)).toBeNull();
  });
});

it("the in-memory member listing is never stale: a write committed just before a listing is always in it", async () => {
  const members = keys.buckets.membership.members;
  const room = "freshness0000001";
  for (let i = 0; i < 25; i++) {
    const p = createIdentity().principal;
    await members.put(`${room}.${p}`, JSON.stringify({ role: "member" }));
    expect(await roomMembers(members, room)).toContain(p);
    await members.delete(`${room}.${p}`);
    expect(await roomMembers(members, room)).not.toContain(p);
  }
});

describe("epochs only move forward, and unknown epochs are remembered as misses", () => {
  let roomId = "";
  let dir = "";
  beforeAll(async () => {
    ({ room: { id: roomId } } = await c["owner"]!.rooms.create("forward", { persist: false, encrypt: true }));
    await c["owner"]!.rooms.invite(roomId, bob!.principal);
    await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
    await rekeyRoom(c["owner"]!, owner!.signingKey, roomId);
    dir = await mkdtemp(join(tmpdir(), "unibus-epochs-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("an older epoch offered as current (the server hid the newest) is refused with epoch_rollback, also after a restart", async () => {
    const store = new FileEpochStore(join(dir, "epochs.json"));
    const ring = new KeysServiceKeyring(c["bob"]!, bob!, { currentTtlMs: 0, epochStore: store });
    expect((await ring.current(roomId)).epoch).toBe(2);
    expect((await stat(join(dir, "epochs.json"))).mode & 0o777).toBe(0o600);
    // A compromised server hides epoch 2, so epoch 1 (before some removal) looks current.
    await keys.buckets.roomKeys.purge(epochKey(roomId, 2));
    await eventually(() => c["bob"]!.keys.epochs(roomId), (r) => r.epochs.at(-1) === 1);
    expect(await rejection(ring.current(roomId))).toMatchObject({ code: ErrorCode.Conflict, reason: EPOCH_ROLLBACK });
    // A new client process (a new keyring over the same file) remembers epoch 2.
    const restarted = new KeysServiceKeyring(c["bob"]!, bob!, { currentTtlMs: 0, epochStore: new FileEpochStore(join(dir, "epochs.json")) });
    expect(await restarted.highestEpoch(roomId)).toBe(2);
    expect(await rejection(restarted.current(roomId))).toMatchObject({ code: ErrorCode.Conflict, reason: EPOCH_ROLLBACK });
    // Reading frames of the old epoch stays possible: only sending under it is refused.
    expect(await restarted.get(roomId, 1)).toBeDefined();
  });

  it("a member who leaves has its sealed shares deleted from every stored epoch; the others' shares still verify", async () => {
    const { room: r } = await c["owner"]!.rooms.create("leave", { persist: false, encrypt: true });
    await c["owner"]!.rooms.invite(r.id, bob!.principal);
    await c["owner"]!.rooms.invite(r.id, carol!.principal);
    await rekeyRoom(c["owner"]!, owner!.signingKey, r.id);
    await rekeyRoom(c["owner"]!, owner!.signingKey, r.id);
    const bobsShare = (epoch: number) => epochRecord(r.id, epoch).then((rec) => rec?.shares.find((s) => s.principal === bob!.principal));
    expect((await bobsShare(1))?.sealedShare).toBeDefined();
    await c["owner"]!.rooms.remove(r.id, bob!.principal);
    for (const epoch of [1, 2]) {
      const gone = await eventually(() => bobsShare(epoch), (s) => s?.sealedShare === undefined);
      expect(gone?.shareDigest).toMatch(/^[A-Za-z0-9_-]{43}$/);
    }
    // Carol's proofs run through bob's leaf: they still verify against the owner's signature.
    const carolRing = new KeysServiceKeyring(c["carol"]!, carol!);
    expect(await carolRing.get(r.id, 1)).toBeDefined();
    expect(await carolRing.get(r.id, 2)).toBeDefined();
  });

  it("a frame naming an epoch the caller holds no share of costs one shares.get per TTL, not one per frame", async () => {
    let fetches = 0;
    const counting = {
      roomLogs: c["bob"]!.roomLogs,
      keys: {
        getShare: (room: string, epoch?: number) => {
          fetches++;
          return c["bob"]!.keys.getShare(room, epoch);
        },
      },
    } as unknown as KeyringClient;
    const ring = new KeysServiceKeyring(counting, bob!, { missTtlMs: 60_000 });
    const bogus = await Promise.all(Array.from({ length: 20 }, () => ring.get(roomId, 4_000_000)));
    expect(bogus.every((k) => k === undefined)).toBe(true);
    for (let i = 0; i < 20; i++) expect(await ring.get(roomId, 4_000_000)).toBeUndefined();
    expect(fetches).toBe(1);
    // A rekey notice (invalidate) forgets the misses of that room, so a real new epoch is fetched at once.
    ring.invalidate(roomId);
    expect(await ring.get(roomId, 4_000_000)).toBeUndefined();
    expect(fetches).toBe(2);
  });
});
