import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { StoredBucket } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { lazyUsersRoleResolver } from "./membership-view.js";

let server: TestServer;
let nc: NatsConnection;
const admin = SigningKey.generate().principal;
const member = SigningKey.generate().principal;
const revoked = SigningKey.generate().principal;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("lazyUsersRoleResolver", () => {
  it("throws while users does not exist (fail closed), then resolves once membership has created it", async () => {
    const resolve = lazyUsersRoleResolver(nc);
    await expect(resolve(admin)).rejects.toThrow();
    const users = await new Kvm(nc).create(StoredBucket.membership.users);
    const record = (principal: string, role: string, status: string): string => JSON.stringify({ principal, handle: "h", role, status, addedAt: new Date().toISOString(), addedBy: admin });
    await users.put(admin, record(admin, "admin", "active"));
    await users.put(member, record(member, "member", "active"));
    await users.put(revoked, record(revoked, "admin", "revoked"));
    expect(await resolve(admin)).toBe("admin");
    expect(await resolve(member)).toBe("member");
    // A revoked admin, an unknown principal and a deleted record have no role: admin endpoints deny them.
    expect(await resolve(revoked)).toBeNull();
    expect(await resolve(SigningKey.generate().principal)).toBeNull();
    await users.delete(member);
    expect(await resolve(member)).toBeNull();
  });
});
