import { describe, expect, it } from "vitest";
import { createIdentity, generateAgreementKeyPair, openSealed, signEnvelope, toBase64Url, fromBase64Url } from "@unibus/crypto";
import type { Identity, SigningKey } from "@unibus/crypto";
import type { KeysPublishEpochRequest } from "@unibus/contracts";
import { RoomLogOp, RoomLogOpSubject, RoomLogs, VerifiedRoomLog, deriveRoomId, roomLogEntry } from "../rooms/membership-log.js";
import type { RoomLogEntry } from "../rooms/membership-log.js";
import type { KeysApi } from "./api.js";
import { prepareNextEpoch, rekeyRoom } from "./rekey.js";
import type { RekeyClient } from "./rekey.js";
import { agreementKeyStatementBytes } from "./share-set.js";

/**
 * A cold rekey of a room large enough that its binding and log-signature
 * checks go through the worker pool (batches of 64 and more). The keys
 * service and the membership log service are stand-ins answering what a
 * compromised service could: the point is which agreement keys get a share.
 */
const N = 150;
const enc = new TextEncoder();

function signedLog(owner: Identity, members: Identity[]): { roomId: string; entries: RoomLogEntry[] } {
  const at = new Date().toISOString();
  const entries: RoomLogEntry[] = [];
  let roomId = "";
  let log: VerifiedRoomLog | undefined;
  const append = (actor: SigningKey, op: RoomLogOp, body: object, target: string, role?: "owner" | "member"): void => {
    const bytes = enc.encode(JSON.stringify(body));
    const envelope = signEnvelope(actor, RoomLogOpSubject[op], bytes);
    if (op === RoomLogOp.create) roomId = deriveRoomId(envelope.signature);
    log ??= new VerifiedRoomLog(roomId);
    const entry = roomLogEntry({ after: log, roomId, op, body: bytes, envelope, target, ...(role === undefined ? {} : { role }), at });
    log.append([entry]);
    entries.push(entry);
  };
  append(owner.signingKey, RoomLogOp.create, { name: "big", policy: { persist: false, encrypt: true } }, owner.principal, "owner");
  for (const m of members) append(owner.signingKey, RoomLogOp.invite, { roomId, principal: m.principal }, m.principal, "member");
  return { roomId, entries };
}

function binding(id: Identity, key = id.agreementPublicKey, signer = id): { principal: string; agreementKey: string; signature: string } {
  return { principal: id.principal, agreementKey: toBase64Url(key), signature: toBase64Url(signer.signingKey.sign(agreementKeyStatementBytes(id.principal, key))) };
}

function client(owner: Identity, roomId: string, entries: RoomLogEntry[], bindings: object[], published: KeysPublishEpochRequest[], pageSize = 100): RekeyClient {
  const keys = {
    epochs: async () => ({ roomId, epochs: [] }),
    agreementKeys: async () => ({ roomId, members: bindings }),
    publishEpoch: async (req: KeysPublishEpochRequest) => {
      published.push(req);
      return { roomId, epoch: req.epoch };
    },
  } as unknown as KeysApi;
  const roomLogs = new RoomLogs(async (_room, from, limit) => ({ roomId, headSeq: entries.length - 1, entries: entries.slice(from, from + limit) }), { pageSize });
  return { principal: owner.principal, keys, roomLogs };
}

describe("cold rekey of a large room: batched verification", () => {
  const owner = createIdentity();
  const members = Array.from({ length: N - 1 }, () => createIdentity());
  const attacker = createIdentity();
  const { roomId, entries } = signedLog(owner, members);

  it("seals only to agreement keys whose self-signature verified; a substituted or forged binding, or one for a non-member, gets no share", async () => {
    const swapped = members[10]!; // the service's key, with the member's signature over its real key
    const forged = members[70]!; // the service's key, signed by the service's identity
    const bare = members[120]!; // no binding at all
    const bindings = [owner, ...members].flatMap((m) => {
      if (m === bare) return [];
      if (m === swapped) return [{ ...binding(m), agreementKey: toBase64Url(attacker.agreementPublicKey) }];
      if (m === forged) return [binding(m, attacker.agreementPublicKey, attacker)];
      return [binding(m)];
    });
    // A principal the service lists but the log does not hold, with a binding that verifies: sealed to (the pool seals before the log is known), never sent.
    bindings.push(binding(attacker));
    const published: KeysPublishEpochRequest[] = [];
    const r = await rekeyRoom(client(owner, roomId, entries, bindings, published), owner.signingKey, roomId);
    expect(r.published).toBe(true);
    expect(new Set(r.withoutShare)).toEqual(new Set([swapped.principal, forged.principal, bare.principal]));
    const shares = new Map(published[0]!.shares.map((s) => [s.principal, "sealedShare" in s ? s.sealedShare : undefined]));
    expect(shares.size).toBe(N);
    expect(shares.has(attacker.principal)).toBe(false);
    for (const m of [swapped, forged, bare]) expect(shares.get(m.principal)).toBeUndefined();
    // Every other member opens the same room key with its own agreement secret.
    const opened = new Set([owner, ...members].filter((m) => shares.get(m.principal) !== undefined).map((m) => toBase64Url(openSealed(m.agreementSecretKey, fromBase64Url(shares.get(m.principal)!)))));
    expect(opened.size).toBe(1);
  });

  it("a box prepared in advance is sent only to the very key it was sealed to: a rotated key gets a new box, a substituted one none", async () => {
    const bindings = [owner, ...members].map((m) => binding(m));
    const published: KeysPublishEpochRequest[] = [];
    const c = client(owner, roomId, entries, bindings, published);
    await prepareNextEpoch(c, roomId);
    // Between the preparation and the rekey: one member rotates its agreement key, and the service substitutes another's.
    const rotated = members[5]!;
    const next = generateAgreementKeyPair();
    bindings[1 + 5] = binding(rotated, next.publicKey);
    const substituted = members[40]!;
    bindings[1 + 40] = binding(substituted, attacker.agreementPublicKey, attacker);
    const r = await rekeyRoom(c, owner.signingKey, roomId);
    expect(r.withoutShare).toEqual([substituted.principal]);
    const shares = new Map(published[0]!.shares.map((s) => [s.principal, "sealedShare" in s && s.sealedShare !== undefined ? fromBase64Url(s.sealedShare) : undefined]));
    const roomKey = toBase64Url(openSealed(owner.agreementSecretKey, shares.get(owner.principal)!));
    expect(toBase64Url(openSealed(next.secretKey, shares.get(rotated.principal)!))).toBe(roomKey);
    expect(() => openSealed(rotated.agreementSecretKey, shares.get(rotated.principal)!)).toThrow();
    expect(shares.get(substituted.principal)).toBeUndefined();
    for (const m of members.filter((m) => m !== rotated && m !== substituted)) expect(toBase64Url(openSealed(m.agreementSecretKey, shares.get(m.principal)!))).toBe(roomKey);
  });

  it("a log entry whose signature fails refuses the sync, although the batch check ran first", async () => {
    const bad = entries.map((e, i) => (i === 90 ? { ...e, signature: entries[91]!.signature } : e));
    const published: KeysPublishEpochRequest[] = [];
    await expect(rekeyRoom(client(owner, roomId, bad, [binding(owner)], published), owner.signingKey, roomId)).rejects.toMatchObject({ reason: "log_bad_signature", seq: 90 });
    expect(published).toEqual([]);
  });

  it("a bad signature in a later slice of one page: the slices before it stay verified, nothing from it on", async () => {
    const { roomId: big, entries: all } = signedLog(owner, Array.from({ length: 299 }, () => createIdentity()));
    const bad = all.map((e, i) => (i === 200 ? { ...e, signature: all[201]!.signature } : e));
    const c = client(owner, big, bad, [binding(owner)], [], 512);
    await expect(c.roomLogs.sync(big)).rejects.toMatchObject({ reason: "log_bad_signature", seq: 200 });
    expect(c.roomLogs.cached(big)?.headSeq).toBe(199);
  });
});
