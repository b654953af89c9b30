import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SigningKey } from "@unibus/crypto";
import { membershipCopy, openBuckets } from "@unibus/kit";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { currentMembers } from "./access.js";

let server: TestServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
});

afterAll(async () => {
  await server?.stop();
});

// Records as membership stores them: readers check each against its stored-data schema.
const [alice, bob, carol, dave] = [0, 1, 2, 3].map(() => SigningKey.generate().principal) as [string, string, string, string];
function member(roomId: string, principal: string, role: "owner" | "member"): string {
  return JSON.stringify({ roomId, principal, role, addedAt: new Date().toISOString(), addedBy: alice });
}

describe("currentMembers", () => {
  it("lists the room from the fenced copy of members in one fenced read: no listing consumer, no get, a removed member not listed", async () => {
    const { users, members } = await openBuckets(jetstream(nc), [{ name: "users" }, { name: "members" }], { budgetMs: 5_000 });
    await members.put(`roomone01.${bob}`, member("roomone01", bob, "member"));
    await members.put(`roomone01.${alice}`, member("roomone01", alice, "owner"));
    await members.put(`roomone01.${carol}`, member("roomone01", carol, "member"));
    await members.delete(`roomone01.${carol}`);
    await members.put(`roomtwo02.${dave}`, member("roomtwo02", dave, "owner"));

    // The copy's own watch is made first: it is the one watch of the bucket.
    await membershipCopy(members).start();
    const seen = { direct: 0, leader: 0, consumers: 0 };
    const subs = [
      nc.subscribe("$JS.API.CONSUMER.CREATE.KV_members.>", { callback: () => void seen.consumers++ }),
      nc.subscribe("$JS.API.DIRECT.GET.KV_members.>", { callback: () => void seen.direct++ }),
      nc.subscribe("$JS.API.DIRECT.GET.KV_members", { callback: () => void seen.direct++ }),
      nc.subscribe("$JS.API.STREAM.MSG.GET.KV_members", { callback: () => void seen.leader++ }),
    ];
    try {
      await nc.flush();
      expect(await currentMembers({ users, members }, "roomone01")).toEqual([alice, bob].sort());
      await nc.flush();
    } finally {
      for (const s of subs) s.unsubscribe();
    }
    // One read from the fenced copy: no ordered consumer over the room's keys
    // (which any replica may serve, lagging), no get, which a stale leader
    // could answer, and none direct.
    expect(seen).toEqual({ direct: 0, leader: 0, consumers: 0 });
    expect(membershipCopy(members).stats.fromMemory).toBe(1);
    membershipCopy(members).stop();
  });
});
