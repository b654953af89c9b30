import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { openBuckets } from "@unibus/kit";
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

describe("currentMembers without a watched directory", () => {
  it("confirms every listed member with a leader read, so a lagging listing cannot keep a removed member", async () => {
    const { users, members } = await openBuckets(jetstream(nc), [{ name: "users" }, { name: "members" }], { budgetMs: 5_000 });
    await members.put("r1.bob", JSON.stringify({ role: "member" }));
    await members.put("r1.alice", JSON.stringify({ role: "owner" }));
    await members.put("r1.carol", JSON.stringify({ role: "member" }));
    await members.delete("r1.carol");
    await members.put("r2.dave", JSON.stringify({ role: "owner" }));

    const seen = { direct: 0, leader: 0 };
    const subs = [
      nc.subscribe("$JS.API.DIRECT.GET.KV_members.>", { callback: () => void seen.direct++ }),
      nc.subscribe("$JS.API.DIRECT.GET.KV_members", { callback: () => void seen.direct++ }),
      nc.subscribe("$JS.API.STREAM.MSG.GET.KV_members", { callback: () => void seen.leader++ }),
    ];
    try {
      await nc.flush();
      expect(await currentMembers({ users, members }, "r1")).toEqual(["alice", "bob"]);
      await nc.flush();
    } finally {
      for (const s of subs) s.unsubscribe();
    }
    // One leader read per listed member (the removed one is not listed), none direct.
    expect(seen).toEqual({ direct: 0, leader: 2 });
  });
});
