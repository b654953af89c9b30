import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import type { RunningService } from "@unibus/kit";
import { startTestServer, storedRooms, storedUser } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import {
  CalloutXkey,
  KvPrincipalDirectory,
  createAuthCalloutService,
} from "./index.js";

import packageJson from "../package.json" with { type: "json" };

const quiet = pino({ level: "silent" });

/** The same suite runs over each server configuration (callout.go style). */
const CONFIGS = [
  { name: "plain", encrypted: false },
  { name: "xkey", encrypted: true },
] as const;

// Records as membership stores them (storedUser, storedRooms): the callout refuses any other shape as damaged.

/** Resolves with the permission violation the server reports for `subject`, or null within `ms`. */
async function violationFor(nc: NatsConnection, subject: string, action: () => void, ms = 1500): Promise<string | null> {
  const status = nc.status();
  const seen = (async () => {
    for await (const s of status) {
      if (s.type === "error" && s.error.name === "PermissionViolationError" && (s.error as { subject?: string }).subject === subject) {
        return (s.error as { operation?: string }).operation ?? "unknown";
      }
    }
    return null;
  })();
  action();
  await nc.flush().catch(() => undefined);
  const timer = new Promise<null>((resolve) => setTimeout(() => resolve(null), ms));
  const result = await Promise.race([seen, timer]);
  (status as unknown as { stop(): void }).stop();
  return result;
}

describe.each(CONFIGS)("auth callout on nats-server ($name)", ({ encrypted }) => {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membershipUser = SigningKey.generate();
  const xkey = encrypted ? CalloutXkey.generate() : undefined;
  const alice = SigningKey.generate();
  const bob = SigningKey.generate();
  const carol = SigningKey.generate(); // revoked
  const stranger = SigningKey.generate();
  const dave = SigningKey.generate(); // revoked during the run

  let server: TestServer;
  let admin: NatsConnection; // the membership service's connection (config-level user)
  let users: KV;
  let rooms: KV;
  let service: RunningService;

  const connectAs = (key: SigningKey, opts: Record<string, unknown> = {}): Promise<NatsConnection> =>
    server.connect({
      authenticator: nkeyAuthenticator(key),
      inboxPrefix: `_INBOX.${key.principal}`,
      reconnect: false,
      timeout: 5000,
      ...opts,
    });

  beforeAll(async () => {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        ...(xkey !== undefined ? { xkeyPublic: xkey.publicKey } : {}),
        serviceUsers: [
          {
            service: "membership",
            nkey: membershipUser.principal,
            permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"] }),
          },
        ],
      }),
    });
    admin = await server.connect({ authenticator: nkeyAuthenticator(membershipUser) });
    const kvm = new Kvm(admin);
    // As membership makes them: leader reads only (no service may direct-get a KV bucket).
    users = await kvm.create("users", { allow_direct: false });
    rooms = await kvm.create("rooms_by_member", { allow_direct: false });
    await users.put(alice.principal, JSON.stringify(storedUser(alice.principal)));
    await users.put(bob.principal, JSON.stringify(storedUser(bob.principal)));
    await users.put(dave.principal, JSON.stringify(storedUser(dave.principal)));
    await users.put(carol.principal, JSON.stringify(storedUser(carol.principal, "revoked")));
    await rooms.put(alice.principal, JSON.stringify(storedRooms(alice.principal, { r1: "owner" })));
    await rooms.put(bob.principal, JSON.stringify(storedRooms(bob.principal, { r2: "owner" })));
    // The membership service's own endpoint, so members' requests have someone to answer.
    admin.subscribe("unibus.v1.membership.ping", {
      callback: (_err, m) => {
        m.respond("pong");
      },
    });

    const calloutNc = await server.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
    const ckvm = new Kvm(calloutNc);
    const [u, r] = [await ckvm.open("users"), await ckvm.open("rooms_by_member")];
    const directory = new KvPrincipalDirectory(u, r);
    service = await createAuthCalloutService(calloutNc, { issuer, ...(xkey !== undefined ? { xkey } : {}), directory, logger: quiet });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it("a known active member connects, uses its room and gets replies in its own inbox", async () => {
    const nc = await connectAs(alice);
    const sub = nc.subscribe("unibus.room.r1.chat", { max: 1 });
    await nc.flush();
    nc.publish("unibus.room.r1.chat", "hello");
    for await (const m of sub) expect(m.string()).toBe("hello");
    const reply = await nc.request("unibus.v1.membership.ping", "", { timeout: 2000 });
    expect(reply.string()).toBe("pong");
    await nc.close();
  });

  it("registers as a micro service with its package's version", () => {
    expect(service.service.info()).toMatchObject({ name: "auth-callout", version: packageJson.version });
  });

  it("its $SRV.STATS entry carries last_error and the real processing time, as micro clients expect", async () => {
    const nc = await connectAs(alice);
    await nc.close();
    const [ep] = (await service.service.stats()).endpoints as unknown as Array<Record<string, unknown>>;
    expect(ep).toMatchObject({ name: "AUTH", last_error: "", num_errors: 0 });
    expect(ep?.["num_requests"]).toBeGreaterThan(0);
    expect(ep?.["processing_time"]).toBeGreaterThan(0);
  });

  it("a granted connection is named after the principal and lands in the app account", async () => {
    const nc = await connectAs(alice, { name: "alice-conn" });
    const res = await fetch(`http://127.0.0.1:${server.monitorPort}/connz?auth=true&subs=true`);
    const connz = (await res.json()) as { connections: { name?: string; authorized_user?: string; account?: string }[] };
    const conn = connz.connections.find((c) => c.name === "alice-conn");
    expect(conn?.authorized_user).toBe(alice.principal);
    expect(conn?.account).toBe("UNIBUS");
    await nc.close();
  });

  it("an unknown key is denied", async () => {
    await expect(connectAs(stranger)).rejects.toThrow(/authorization/i);
  });

  it("a revoked key is denied", async () => {
    await expect(connectAs(carol)).rejects.toThrow(/authorization/i);
  });

  it("a client that signs a different nonce is denied", async () => {
    const forged = (): { nkey: string; sig: string } => ({
      nkey: alice.principal,
      sig: Buffer.from(alice.sign(Buffer.from("not-the-server-nonce"))).toString("base64"),
    });
    await expect(connectAs(alice, { authenticator: forged })).rejects.toThrow(/authorization/i);
  });

  it("a client presenting a member's key with someone else's signature is denied", async () => {
    const forged = (nonce?: string): { nkey: string; sig: string } => ({
      nkey: alice.principal,
      sig: Buffer.from(stranger.sign(Buffer.from(nonce ?? ""))).toString("base64"),
    });
    await expect(connectAs(alice, { authenticator: forged })).rejects.toThrow(/authorization/i);
  });

  it("a member revoked a moment ago is denied on its very next connect", async () => {
    (await connectAs(dave)).close().catch(() => undefined);
    await users.put(dave.principal, JSON.stringify(storedUser(dave.principal, "revoked")));
    await expect(connectAs(dave)).rejects.toThrow(/authorization/i);
  });

  it("a member added to a room gets that room on its next connect", async () => {
    const before = await connectAs(bob);
    expect(await violationFor(before, "unibus.room.r3.>", () => before.subscribe("unibus.room.r3.>"))).toBe("subscription");
    await before.close();
    await rooms.put(bob.principal, JSON.stringify(storedRooms(bob.principal, { r2: "owner", r3: "member" })));
    const after = await connectAs(bob);
    expect(await violationFor(after, "unibus.room.r3.>", () => after.subscribe("unibus.room.r3.>"), 500)).toBeNull();
    await after.close();
  });

  it("a member removed from a room loses it on its next connect, though its earlier grant set was cached", async () => {
    const ivy = SigningKey.generate();
    await users.put(ivy.principal, JSON.stringify(storedUser(ivy.principal)));
    await rooms.put(ivy.principal, JSON.stringify(storedRooms(ivy.principal, { r4: "member", r5: "member" })));
    // Two logins: the second is answered from the callout's cached set and serialised claims.
    for (let i = 0; i < 2; i++) {
      const nc = await connectAs(ivy);
      expect(await violationFor(nc, "unibus.room.r5.>", () => nc.subscribe("unibus.room.r5.>"), 500)).toBeNull();
      await nc.close();
    }
    await rooms.put(ivy.principal, JSON.stringify(storedRooms(ivy.principal, { r4: "member" })));
    const after = await connectAs(ivy);
    expect(await violationFor(after, "unibus.room.r5.>", () => after.subscribe("unibus.room.r5.>"))).toBe("subscription");
    expect(await violationFor(after, "unibus.room.r5.chat", () => after.publish("unibus.room.r5.chat", "x"))).toBe("publish");
    expect(await violationFor(after, "unibus.room.r4.>", () => after.subscribe("unibus.room.r4.>"), 500)).toBeNull();
    await after.close();
  });

  it("a member in 1,000 rooms gets each of them and no room that differs by one character", async () => {
    const jay = SigningKey.generate();
    const ids = Array.from({ length: 1_000 }, (_, i) => `${i.toString(16).padStart(4, "0")}${"a".repeat(20)}`);
    await users.put(jay.principal, JSON.stringify(storedUser(jay.principal)));
    await rooms.put(jay.principal, JSON.stringify(storedRooms(jay.principal, Object.fromEntries(ids.map((id) => [id, "member" as const])))));
    const nc = await connectAs(jay);
    for (const id of [ids[0]!, ids[999]!]) {
      expect(await violationFor(nc, `unibus.room.${id}.>`, () => nc.subscribe(`unibus.room.${id}.>`), 500)).toBeNull();
    }
    // Neighbours of a granted id: one character shorter, longer, or changed.
    for (const other of [ids[0]!.slice(0, -1), `${ids[0]!}a`, `${ids[0]!.slice(0, -1)}b`]) {
      expect(await violationFor(nc, `unibus.room.${other}.>`, () => nc.subscribe(`unibus.room.${other}.>`))).toBe("subscription");
      expect(await violationFor(nc, `unibus.room.${other}.chat`, () => nc.publish(`unibus.room.${other}.chat`, "x"))).toBe("publish");
    }
    await nc.close();
  });

  it("a user added a moment ago can connect at once", async () => {
    const erin = SigningKey.generate();
    await users.put(erin.principal, JSON.stringify(storedUser(erin.principal)));
    await (await connectAs(erin)).close();
  });

  it("a users record that fails its stored-data schema denies the login; the sound record then admits it", async () => {
    // Each shape on a fresh principal, so no cached denial stands in for the check.
    for (const damage of [{ addedBy: "someone" }, { handle: "" }, { extra: true }]) {
      const frank = SigningKey.generate();
      await users.put(frank.principal, JSON.stringify({ ...storedUser(frank.principal), ...damage }));
      await expect(connectAs(frank)).rejects.toThrow(/authorization/i);
    }
    const sound = SigningKey.generate();
    await users.put(sound.principal, JSON.stringify(storedUser(sound.principal)));
    await (await connectAs(sound)).close();
  });

  it("a rooms_by_member record that fails its schema denies the login", async () => {
    const gail = SigningKey.generate();
    await users.put(gail.principal, JSON.stringify(storedUser(gail.principal)));
    await rooms.put(gail.principal, JSON.stringify({ principal: gail.principal, rooms: { "r1.>": "owner" } }));
    await expect(connectAs(gail)).rejects.toThrow(/authorization/i);
    const hank = SigningKey.generate();
    await users.put(hank.principal, JSON.stringify(storedUser(hank.principal)));
    await rooms.put(hank.principal, JSON.stringify(storedRooms(hank.principal, { r1: "member" })));
    await (await connectAs(hank)).close();
  });

  it("a connect without an nkey is denied", async () => {
    await expect(server.connect({ reconnect: false, timeout: 5000 })).rejects.toThrow(/authorization/i);
  });

  describe("a member cannot escape its permissions", () => {
    let nc: NatsConnection;
    beforeAll(async () => {
      nc = await connectAs(alice);
    });
    afterAll(async () => {
      await nc.close();
    });

    it.each([
      ["another principal's inbox", () => `_INBOX.${bob.principal}.>`],
      ["the JetStream API", () => "$JS.API.>"],
      ["KV subjects", () => "$KV.>"],
      ["system subjects", () => "$SYS.>"],
      ["a room it is not in", () => "unibus.room.r2.>"],
      ["every inbox", () => "_INBOX.>"],
    ])("cannot subscribe to %s", async (_what, subject) => {
      const s = subject();
      const received: string[] = [];
      const op = await violationFor(nc, s, () => {
        nc.subscribe(s, { callback: (e, m) => {
          if (e === null) received.push(m.subject);
        } });
      });
      expect(op).toBe("subscription");
      if (s === "unibus.room.r2.>") {
        const bobNc = await connectAs(bob);
        // Positive control: bob, the room's owner, receives his own message,
        // so the server has fanned it out; a round trip on alice's connection
        // after that would bring any copy meant for her first.
        const own = bobNc.subscribe("unibus.room.r2.chat", { max: 1 });
        await bobNc.flush();
        bobNc.publish("unibus.room.r2.chat", "secret");
        for await (const m of own) expect(m.string()).toBe("secret");
        await nc.flush();
        await bobNc.close();
        expect(received).toEqual([]);
      }
    });

    it("cannot publish into a KV bucket's subjects", async () => {
      expect(await violationFor(nc, "$KV.users.x", () => nc.publish("$KV.users.x", JSON.stringify({ role: "admin" })))).toBe("publish");
      expect(await users.get("x")).toBeNull();
    });

    it("cannot call the JetStream API", async () => {
      expect(await violationFor(nc, "$JS.API.INFO", () => nc.publish("$JS.API.INFO", "", { reply: `_INBOX.${alice.principal}.x` }))).toBe("publish");
    });

    it("cannot publish to a room it is not in", async () => {
      expect(await violationFor(nc, "unibus.room.r2.chat", () => nc.publish("unibus.room.r2.chat", "x"))).toBe("publish");
    });
  });

  // Last: stops the callout for this server.
  it("with the callout service stopped, every connect is denied", async () => {
    await service.stop();
    await expect(connectAs(alice)).rejects.toThrow(/authorization|timeout/i);
  });
});
