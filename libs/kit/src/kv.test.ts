import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { Unchanged, casUpdate, listKeys, readRecord, readVersioned, recordCheck } from "./kv.js";
import { activeUser, requireMember, roleResolver, roomRole } from "./membership-view.js";
import type { Caller } from "./definition.js";

let server: TestServer;
let nc: NatsConnection;
let kv: KV;
let users: KV;
let members: KV;
const plain = { store: "test" } as const;
const alice = SigningKey.generate().principal;
const bob = SigningKey.generate().principal;
const ROOM = "roomalpha01";

function user(principal: string, over: Record<string, unknown> = {}): string {
  return JSON.stringify({ principal, handle: "h", role: "member", status: "active", addedAt: new Date().toISOString(), addedBy: alice, ...over });
}
function member(roomId: string, principal: string, role = "member"): string {
  return JSON.stringify({ roomId, principal, role, addedAt: new Date().toISOString(), addedBy: alice });
}

async function errorOf(p: Promise<unknown>): Promise<UnibusError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UnibusError);
  return err as UnibusError;
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  const kvm = new Kvm(nc);
  kv = await kvm.create("kit_kv_test", { history: 2 });
  users = await kvm.create("kit_users_test");
  members = await kvm.create("kit_members_test");
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("kit KV access", () => {
  it("reads a JSON record with its revision; a missing or deleted key is null", async () => {
    const revision = await kv.put("a", JSON.stringify({ n: 1 }));
    expect(await readVersioned(kv, "a", plain)).toEqual({ value: { n: 1 }, revision });
    expect(await readRecord(kv, "missing", plain)).toBeNull();
    await kv.put("gone", "{}");
    await kv.delete("gone");
    expect(await readRecord(kv, "gone", plain)).toBeNull();
  });

  it("a value that is not JSON is 500 corrupt_record, never a crash or null", async () => {
    await kv.put("garbage", "{not json");
    const err = await errorOf(readRecord(kv, "garbage", plain));
    expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
    expect(err.message).not.toContain("garbage");
  });

  it("a record that fails its stored-data schema is 500 corrupt_record", async () => {
    const check = recordCheck("membership", "stored.users.record");
    await kv.put("u1", JSON.stringify({ principal: alice, role: "root" }));
    const err = await errorOf(readRecord(kv, "u1", { store: "membership", check }));
    expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
    await kv.put("u2", user(alice));
    expect(await readRecord(kv, "u2", { store: "membership", check })).toMatchObject({ principal: alice, role: "member" });
  });

  it("a store that cannot answer is 503 naming the store, not absent", async () => {
    const other = await server.connect();
    const closedKv = await new Kvm(other).open("kit_kv_test");
    await other.close();
    const err = await errorOf(readRecord(closedKv, "a", plain));
    expect([err.code, err.reason, err.message]).toEqual([ErrorCode.Unavailable, ErrorReason.Unavailable, "test store unavailable"]);
    const listed = await errorOf(listKeys(closedKv, "test"));
    expect(listed.code).toBe(ErrorCode.Unavailable);
  });

  it("lists keys under a filter", async () => {
    await kv.put("list.x", "{}");
    await kv.put("list.y", "{}");
    expect((await listKeys(kv, "test", "list.*")).sort()).toEqual(["list.x", "list.y"]);
  });

  it("compare-and-set: concurrent increments lose no update; Unchanged writes nothing; null deletes", async () => {
    const inc = () => casUpdate<{ n: number }>(kv, "counter", plain, (cur) => ({ n: (cur?.n ?? 0) + 1 }));
    await Promise.all(Array.from({ length: 12 }, inc));
    const after = await readVersioned<{ n: number }>(kv, "counter", plain);
    expect(after?.value).toEqual({ n: 12 });
    expect(await casUpdate(kv, "counter", plain, () => Unchanged)).toEqual(after);
    expect(await casUpdate(kv, "counter", plain, () => null)).toBeNull();
    expect(await readRecord(kv, "counter", plain)).toBeNull();
  });

  it("compare-and-set never overwrites a damaged record: it answers corrupt_record", async () => {
    await kv.put("bad-cas", "[");
    const err = await errorOf(casUpdate(kv, "bad-cas", plain, () => ({ n: 1 })));
    expect(err.reason).toBe(ErrorReason.CorruptRecord);
    expect((await kv.get("bad-cas"))?.string()).toBe("[");
  });
});

describe("kit membership view", () => {
  it("resolves the role of an active user only", async () => {
    await users.put(alice, user(alice, { role: "admin" }));
    await users.put(bob, user(bob, { status: "revoked" }));
    const resolve = roleResolver(users);
    expect(await resolve(alice)).toBe("admin");
    expect(await resolve(bob)).toBeNull();
    expect(await resolve(SigningKey.generate().principal)).toBeNull();
  });

  it("a damaged users record, or one filed under another principal, denies with corrupt_record", async () => {
    const carol = SigningKey.generate().principal;
    await users.put(carol, JSON.stringify({ principal: carol, role: "admin", status: "active" }));
    expect((await errorOf(roleResolver(users)(carol))).reason).toBe(ErrorReason.CorruptRecord);
    const dave = SigningKey.generate().principal;
    await users.put(dave, user(alice, { role: "admin" }));
    expect((await errorOf(roleResolver(users)(dave))).reason).toBe(ErrorReason.CorruptRecord);
  });

  it("room roles: a member, a non-member (403), and a damaged record (500)", async () => {
    await members.put(`${ROOM}.${alice}`, member(ROOM, alice, "owner"));
    expect(await roomRole(members, ROOM, alice)).toBe("owner");
    expect(await requireMember(members, ROOM, alice)).toBe("owner");
    expect(await roomRole(members, ROOM, bob)).toBeNull();
    expect((await errorOf(requireMember(members, ROOM, bob))).code).toBe(ErrorCode.Forbidden);
    await members.put(`${ROOM}.${bob}`, "{}");
    expect((await errorOf(requireMember(members, ROOM, bob))).reason).toBe(ErrorReason.CorruptRecord);
    await members.put(`otherroom01.${bob}`, member(ROOM, bob));
    expect((await errorOf(roomRole(members, "otherroom01", bob))).reason).toBe(ErrorReason.CorruptRecord);
  });

  it("activeUser admits signed admins and members only", () => {
    const base = { anonymous: false as const, principal: alice, publicKey: new Uint8Array(32) };
    const member: Caller = { ...base, role: "member" };
    const anonymous: Caller = { anonymous: true };
    const node: Caller = { ...base, role: "node" };
    const roleless: Caller = { ...base };
    expect(activeUser(member).principal).toBe(alice);
    expect(() => activeUser(anonymous)).toThrow(expect.objectContaining({ code: ErrorCode.Unauthorized }));
    expect(() => activeUser(node)).toThrow(expect.objectContaining({ code: ErrorCode.Forbidden }));
    expect(() => activeUser(roleless)).toThrow(expect.objectContaining({ code: ErrorCode.Forbidden }));
  });
});
