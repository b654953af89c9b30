import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SigningKey, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { connect, StaticRoomKeys } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { permissionsFor } from "./permissions.js";

describe("a member's JetStream grants for room history", () => {
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
    await Promise.all([writer.room("mine", keys).publish("for members of mine"), writer.room("theirs", keys).publish("not for alice")]);
    await writer.nc.flush();
    await writer.close();
    member = await connect({ url: server.url, identity: alice });
  });

  afterAll(async () => {
    await member?.close();
    await server?.stop();
  });

  it("a member reads its own room's stream with direct get", async () => {
    const got: string[] = [];
    for await (const m of member.room("mine", keys).history()) got.push(m.string());
    expect(got).toEqual(["for members of mine"]);
  });

  it("a member cannot read another room's stream", async () => {
    const read = async (): Promise<string[]> => {
      const got: string[] = [];
      for await (const m of member.room("theirs", keys).history({ timeoutMs: 1_000 })) got.push(m.string());
      return got;
    };
    await expect(read()).rejects.toThrow();
  });
});
