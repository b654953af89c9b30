import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SigningKey, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { connect, StaticRoomKeys } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { permissionsFor } from "./permissions.js";

// Room history goes through the membership service: the callout's member
// permissions reach no room stream, not even the member's own (the server
// would answer a direct get on any reply subject the member named).
describe("a member's permissions grant no JetStream read of room streams", () => {
  const admin = SigningKey.generate();
  const alice = SigningKey.generate();
  const keys = new StaticRoomKeys().set("mine", 0, randomBytes(32)).set("theirs", 0, randomBytes(32));
  let server: TestServer;
  let adminNc: NatsConnection;
  let member: UnibusClient;

  beforeAll(async () => {
    const p = permissionsFor(
      { kind: "user", user: { principal: alice.principal, handle: "alice", role: "member", status: "active", addedAt: "", addedBy: "" } },
      { principal: alice.principal, rooms: { mine: "member" } },
    );
    server = await startTestServer({
      config: {
        authorization: {
          users: [
            { nkey: admin.principal },
            { nkey: alice.principal, permissions: { publish: { allow: p.pub.allow }, subscribe: { allow: p.sub.allow } } },
          ],
        },
      },
    });
    adminNc = await server.connect({ authenticator: nkeyAuthenticator(admin) });
    const jsm = await jetstreamManager(adminNc);
    for (const r of ["mine", "theirs"]) await jsm.streams.add({ name: `ROOM_${r}`, subjects: [`unibus.room.${r}.>`], allow_direct: true });
    const writer = await connect({ url: server.url, identity: admin });
    // No membership service on this server: live-only rooms, whose frames the streams still capture.
    await Promise.all([writer.room("mine", keys, { liveOnly: true }).publish("for members of mine"), writer.room("theirs", keys, { liveOnly: true }).publish("not for alice")]);
    await writer.nc.flush();
    await writer.close();
    member = await connect({ url: server.url, identity: alice });
  });

  afterAll(async () => {
    await member?.close();
    await server?.stop();
  });

  it("a member's direct get on its own room's stream is refused; the stream itself serves direct gets", async () => {
    const own = await adminNc.request("$JS.API.DIRECT.GET.ROOM_mine", JSON.stringify({ seq: 1 }), { timeout: 3_000 });
    expect(own.headers?.get("Nats-Sequence")).toBe("1");
    for (const stream of ["ROOM_mine", "ROOM_theirs"]) {
      await expect(member.nc.request(`$JS.API.DIRECT.GET.${stream}`, JSON.stringify({ seq: 1, batch: 1 }), { timeout: 3_000 }), stream).rejects.toThrow(/Permissions Violation/);
    }
  });

  it("the SDK's history never falls back to JetStream: without the membership service it fails", async () => {
    const read = async (): Promise<string[]> => {
      const got: string[] = [];
      for await (const m of member.room("mine", keys).history({ timeoutMs: 1_000 })) got.push(m.string());
      return got;
    };
    await expect(read()).rejects.toThrow();
  });
});
