import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection, Status } from "@nats-io/transport-node";
import { Subjects } from "@unibus/contracts";
import { nkeyAuthenticator } from "@unibus/crypto";
import type { UnibusClient } from "@unibus/sdk";
import { pino } from "pino";
import { startTestBus } from "@unibus/testbus";
import { SystemConnectionKicker } from "@unibus/membership";
import type { TestBus, TestBusMember } from "@unibus/testbus";

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

describe("kicks on a callout-protected server (production ACLs)", () => {
  let bus: TestBus;
  let admin: UnibusClient;
  let owner: UnibusClient;
  let bob: TestBusMember;

  beforeAll(async () => {
    bus = await startTestBus();
    admin = bus.admin;
    owner = (await bus.addMember("owner")).client;
    bob = await bus.addMember("bob");
  });

  afterAll(async () => {
    await bus?.stop();
  });

  it("the bootstrap identity can reach nothing but admin.bootstrap", async () => {
    const boot = bus.bootstrap;
    expect(await violates(boot.nc, Subjects.membership.usersList, () => boot.nc.publish(Subjects.membership.usersList))).toBe(true);
  });

  it("a revoked user's live connection is closed within 1 s and its reconnect is denied", async () => {
    const { identity, client: victim } = await bus.addMember("soon-gone");
    const t0 = performance.now();
    const disconnected = nextStatus(victim, "disconnect", 2_000, t0);
    const reply = await admin.users.revoke(identity.principal);
    expect(reply.kick).toEqual({ connections: 1, kicked: 1, failed: 0 });
    expect(await disconnected).toBeLessThan(1_000);
    // The SDK keeps retrying; every attempt goes through the callout, which denies.
    await expect(nextStatus(victim, "reconnect", 1_500)).rejects.toThrow();
    await expect(natsConnect({ servers: bus.url, authenticator: nkeyAuthenticator(identity.signingKey), reconnect: false })).rejects.toThrow();
  });

  it("a member added to or removed from a room is kicked and reconnects with the new room permissions", async () => {
    const ownerBack = nextStatus(owner, "reconnect", 3_000);
    const { room } = await owner.rooms.create("ops", { persist: false, encrypt: true });
    await ownerBack; // the creator is kicked after its reply, to gain the room's subjects
    const subject = `${room.subject}.frames`;
    expect(await violates(bob.client.nc, subject, () => bob.client.nc.publish(subject, "x"))).toBe(true);

    const bobBack = nextStatus(bob.client, "reconnect", 3_000);
    const invited = await owner.rooms.invite(room.id, bob.principal);
    expect(invited.kick).toEqual({ connections: 1, kicked: 1, failed: 0 });
    await bobBack;
    expect(await receives(bob.client.nc, subject, () => owner.nc.publish(subject, "hello"))).toBe("hello");

    const bobBackAgain = nextStatus(bob.client, "reconnect", 3_000);
    const removed = await owner.rooms.remove(room.id, bob.principal);
    expect(removed.kick).toEqual({ connections: 1, kicked: 1, failed: 0 });
    await bobBackAgain;
    expect(await violates(bob.client.nc, subject, () => bob.client.nc.publish(subject, "x"))).toBe(true);
    // The owner still has the room.
    expect(await receives(owner.nc, subject, () => owner.nc.publish(subject, "still"))).toBe("still");
  });

  it("a kick reaches every live connection of the principal", async () => {
    const { identity, client: a } = await bus.addMember("two-devices");
    const b = await bus.connectAs(identity);
    const both = Promise.all([nextStatus(a, "disconnect", 2_000), nextStatus(b, "disconnect", 2_000)]);
    const reply = await admin.users.revoke(identity.principal);
    expect(reply.kick).toEqual({ connections: 2, kicked: 2, failed: 0 });
    await both;
  });
});

describe("the kick's connection lookup waits for the servers known to exist", () => {
  let bus: TestBus;
  const silent = pino({ level: "silent" });

  beforeAll(async () => {
    bus = await startTestBus();
  });

  afterAll(async () => {
    await bus?.stop();
  });

  async function timedKick(kicker: SystemConnectionKicker, principal: string): Promise<{ ms: number; outcome: Awaited<ReturnType<SystemConnectionKicker["kick"]>> }> {
    const t0 = performance.now();
    const outcome = await kicker.kick(principal);
    return { ms: performance.now() - t0, outcome };
  }

  it("with every expected server answered, it kicks without waiting out the stall", async () => {
    const { principal, client } = await bus.addMember("fast-lookup");
    // One node, one expected server; a 20 s stall would dominate if it were waited for.
    const kicker = new SystemConnectionKicker(bus.system, { logger: silent, expectedServers: 1, stallMs: 20_000, gatherMs: 20_000, resweepMs: 0 });
    const gone = nextStatus(client, "disconnect", 5_000);
    const { ms, outcome } = await timedKick(kicker, principal);
    expect(outcome).toEqual({ connections: 1, kicked: 1, failed: 0 });
    expect(ms).toBeLessThan(5_000);
    await gone;
    kicker.close();
  });

  it("with a server still missing, the stall stays the upper bound and the kick still completes", async () => {
    const { principal } = await bus.addMember("missing-server");
    // Two expected, one exists: the lookup ends at the stall, not before.
    const kicker = new SystemConnectionKicker(bus.system, { logger: silent, expectedServers: 2, stallMs: 400, gatherMs: 5_000, resweepMs: 0 });
    const { ms, outcome } = await timedKick(kicker, principal);
    expect(outcome).toEqual({ connections: 1, kicked: 1, failed: 0 });
    expect(ms).toBeGreaterThanOrEqual(400);
    kicker.close();
  });

  it("learns the servers from its first full lookup, then stops once they answered", async () => {
    const first = await bus.addMember("learn-1");
    const second = await bus.addMember("learn-2");
    const kicker = new SystemConnectionKicker(bus.system, { logger: silent, stallMs: 1_500, gatherMs: 20_000, resweepMs: 0 });
    // Nothing known yet: the first lookup waits out the stall.
    const learning = await timedKick(kicker, first.principal);
    expect(learning.outcome).toEqual({ connections: 1, kicked: 1, failed: 0 });
    expect(learning.ms).toBeGreaterThanOrEqual(1_500);
    // Now the one server is known: the next lookup ends when it answered.
    const known = await timedKick(kicker, second.principal);
    expect(known.outcome).toEqual({ connections: 1, kicked: 1, failed: 0 });
    expect(known.ms).toBeLessThan(1_500);
    kicker.close();
  });
});
