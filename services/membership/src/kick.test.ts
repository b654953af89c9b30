import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection, Status } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { Subjects } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { KvPrincipalDirectory, calloutServerConfig, createAuthCalloutService, servicePermissions } from "@unibus/auth-callout";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { MembershipBucket } from "./records.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

const silent = pino({ level: "silent" });

/** Resolves with the time (ms since `since`) of the next status of `type`, or rejects after `timeoutMs`. */
function nextStatus(client: UnibusClient, type: Status["type"], timeoutMs: number, since = performance.now()): Promise<number> {
  const it = client.nc.status();
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      (it as unknown as { stop(): void }).stop();
      reject(new Error(`no ${type} within ${timeoutMs} ms`));
    }, timeoutMs);
    void (async () => {
      for await (const s of it) {
        if (s.type === type) {
          clearTimeout(timer);
          (it as unknown as { stop(): void }).stop();
          resolve(performance.now() - since);
          return;
        }
      }
    })();
  });
}

/** True if the server reports a permission violation for `subject` after `action`, within `ms`. */
async function violates(nc: NatsConnection, subject: string, action: () => void, ms = 1_000): Promise<boolean> {
  const status = nc.status();
  const seen = (async () => {
    for await (const s of status) {
      if (s.type === "error" && s.error.name === "PermissionViolationError" && (s.error as { subject?: string }).subject === subject) return true;
    }
    return false;
  })();
  action();
  await nc.flush().catch(() => undefined);
  const result = await Promise.race([seen, new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  (status as unknown as { stop(): void }).stop();
  return result;
}

/** Resolves with the first message on `subject` received by `nc`, or null after `ms`. */
async function receives(nc: NatsConnection, subject: string, publish: () => void, ms = 1_000): Promise<string | null> {
  const sub = nc.subscribe(subject, { max: 1 });
  await nc.flush();
  publish();
  const got = (async () => {
    for await (const m of sub) return m.string();
    return null;
  })();
  const result = await Promise.race([got, new Promise<null>((r) => setTimeout(() => r(null), ms))]);
  sub.unsubscribe();
  return result;
}

describe("kicks on a callout-protected server", () => {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const serviceUser = SigningKey.generate();
  const sysUser = SigningKey.generate();
  const bootKey = SigningKey.generate();
  const adminKey = SigningKey.generate();
  const ownerKey = SigningKey.generate();
  const bobKey = SigningKey.generate();
  const buckets = [...Object.values(MembershipBucket), "nonces"];

  let server: TestServer;
  let svc: RunningMembershipService;
  let admin: UnibusClient;
  let owner: UnibusClient;
  const clients: UnibusClient[] = [];
  const client = async (key: SigningKey): Promise<UnibusClient> => {
    const c = await connect({ url: server.url, identity: key });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        systemUserPublic: sysUser.principal,
        serviceUsers: [
          {
            service: "membership",
            nkey: serviceUser.principal,
            permissions: servicePermissions({
              service: "membership",
              kvBuckets: buckets,
              publish: ["$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.INFO.*", "unibus.room.*.membership"],
            }),
          },
          {
            // The internal bootstrap identity: this one subject and its inbox, nothing else.
            service: "bootstrap",
            nkey: bootKey.principal,
            permissions: { publish: { allow: [Subjects.membership.adminBootstrap] }, subscribe: { allow: [`_INBOX.${bootKey.principal}.>`] } },
          },
        ],
      }),
    });
    const nc = await server.connect({ authenticator: nkeyAuthenticator(serviceUser) });
    const sys = await server.connect({ authenticator: nkeyAuthenticator(sysUser) });
    svc = await createMembershipService(nc, { logger: silent, sys, bootstrapPrincipal: bootKey.principal });

    const calloutNc = await server.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
    const kvm = new Kvm(calloutNc);
    const directory = new KvPrincipalDirectory(await kvm.open(MembershipBucket.users), await kvm.open(MembershipBucket.roomsByMember));
    await createAuthCalloutService(calloutNc, { issuer, directory, logger: silent });

    const boot = await client(bootKey);
    await boot.admin.bootstrap(adminKey.principal, "root");
    admin = await client(adminKey);
    await admin.users.add(ownerKey.principal, "owner", "member");
    await admin.users.add(bobKey.principal, "bob", "member");
    owner = await client(ownerKey);
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await svc?.stop();
    await server?.stop();
  });

  it("the bootstrap identity can reach nothing but admin.bootstrap", async () => {
    const boot = clients[0]!;
    expect(await violates(boot.nc, Subjects.membership.usersList, () => boot.nc.publish(Subjects.membership.usersList))).toBe(true);
  });

  it("a revoked user's live connection is closed within 1 s and its reconnect is denied", async () => {
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "soon-gone", "member");
    const victim = await client(k);
    const t0 = performance.now();
    const disconnected = nextStatus(victim, "disconnect", 2_000, t0);
    const reply = await admin.users.revoke(k.principal);
    expect(reply.kick).toEqual({ connections: 1, kicked: 1, failed: 0 });
    expect(await disconnected).toBeLessThan(1_000);
    // The SDK keeps retrying; every attempt goes through the callout, which denies.
    await expect(nextStatus(victim, "reconnect", 1_500)).rejects.toThrow();
    await expect(natsConnect({ servers: server.url, authenticator: nkeyAuthenticator(k), reconnect: false })).rejects.toThrow();
  });

  it("a member added to or removed from a room is kicked and reconnects with the new room permissions", async () => {
    const bob = await client(bobKey);
    const ownerBack = nextStatus(owner, "reconnect", 3_000);
    const { room } = await owner.rooms.create("ops", { persist: false, encrypt: true });
    await ownerBack; // the creator is kicked after its reply, to gain the room's subjects
    const subject = `${room.subject}.frames`;
    expect(await violates(bob.nc, subject, () => bob.nc.publish(subject, "x"))).toBe(true);

    const bobBack = nextStatus(bob, "reconnect", 3_000);
    const invited = await owner.rooms.invite(room.id, bobKey.principal);
    expect(invited.kick).toEqual({ connections: 1, kicked: 1, failed: 0 });
    await bobBack;
    expect(await receives(bob.nc, subject, () => owner.nc.publish(subject, "hello"))).toBe("hello");

    const bobBackAgain = nextStatus(bob, "reconnect", 3_000);
    const removed = await owner.rooms.remove(room.id, bobKey.principal);
    expect(removed.kick).toEqual({ connections: 1, kicked: 1, failed: 0 });
    await bobBackAgain;
    expect(await violates(bob.nc, subject, () => bob.nc.publish(subject, "x"))).toBe(true);
    // The owner still has the room.
    expect(await receives(owner.nc, subject, () => owner.nc.publish(subject, "still"))).toBe("still");
  });

  it("a kick reaches every live connection of the principal", async () => {
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "two-devices", "member");
    const [a, b] = await Promise.all([client(k), client(k)]);
    const both = Promise.all([nextStatus(a, "disconnect", 2_000), nextStatus(b, "disconnect", 2_000)]);
    const reply = await admin.users.revoke(k.principal);
    expect(reply.kick).toEqual({ connections: 2, kicked: 2, failed: 0 });
    await both;
  });
});
