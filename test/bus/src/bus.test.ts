import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WatchedDirectory } from "@unibus/auth-callout";
import { eventually, retryUntil } from "@unibus/testing";
import { startTestBus } from "./bus.js";
import type { TestBus } from "./bus.js";

describe("the test bus runs the production callout configuration", () => {
  let bus: TestBus;
  beforeAll(async () => {
    bus = await startTestBus();
  });
  afterAll(async () => {
    await bus?.stop();
  });

  it("an added member connects through the callout and uses a room it was invited to", async () => {
    const alice = await bus.addMember("alice");
    const { room } = await bus.admin.rooms.create("design", { persist: false, encrypt: true });
    await bus.admin.rooms.invite(room.id, alice.principal);
    // The invite kicks alice; the SDK reconnects with the new room in its permissions.
    // Until then the subscription is refused or times out: retry the round trip.
    const got = await retryUntil(
      async () => {
        const sub = alice.client.nc.subscribe(`unibus.room.${room.id}.x`, { max: 1, timeout: 300 });
        await alice.client.nc.flush().catch(() => undefined);
        alice.client.nc.publish(`unibus.room.${room.id}.x`, "hi");
        for await (const m of sub) return m.string();
        throw new Error("no frame");
      },
      { timeoutMs: 5_000, intervalMs: 100 },
    );
    expect(got).toBe("hi");
  });

  it("an identity that is not on the allowlist is refused", async () => {
    const { createIdentity } = await import("@unibus/crypto");
    await expect(bus.connectAs(createIdentity())).rejects.toThrow(/authoriz/i);
  });

  it("logins are decided by production's watched directory, from its copy (under the login lease, or behind a fence)", async () => {
    const [dir] = bus.directories;
    expect(dir).toBeInstanceOf(WatchedDirectory);
    const stats = (): number => (dir as WatchedDirectory).stats.fromMemory + (dir as WatchedDirectory).stats.held;
    const before = stats();
    const bob = await bus.addMember("bob");
    await bob.client.close();
    expect(stats()).toBeGreaterThan(before);
  });

  it("the callout holds its login lease, and membership's user add waited for its barrier answer before replying", async () => {
    const [lease] = bus.leases;
    await eventually(() => lease?.keeper.current(), (m) => m !== undefined, { what: "the callout's lease held" });
    const answered = bus.membership.leases.stats.answered;
    const carol = await bus.addMember("carol");
    await carol.client.close();
    expect(bus.membership.leases.stats.answered).toBeGreaterThan(answered);
  });

  it("every directory write of membership waits for the lease holder: room create, invite, removal, leave and revoke", async () => {
    const owner = await bus.addMember("dora");
    const guest = await bus.addMember("erin");
    const answered = (): number => bus.membership.leases.stats.answered;
    const steps: Array<[string, () => Promise<unknown>]> = [];
    let roomId = "";
    steps.push(["create", async () => (roomId = (await owner.client.rooms.create("lease", { persist: false, encrypt: false })).room.id)]);
    steps.push(["invite", () => owner.client.rooms.invite(roomId, guest.principal)]);
    steps.push(["remove", () => owner.client.rooms.remove(roomId, guest.principal)]);
    steps.push(["invite again", () => owner.client.rooms.invite(roomId, guest.principal)]);
    steps.push(["leave", () => guest.client.rooms.leave(roomId)]);
    steps.push(["revoke", () => bus.admin.users.revoke(guest.principal)]);
    for (const [what, step] of steps) {
      const before = answered();
      await step();
      expect(answered(), what).toBeGreaterThan(before);
    }
  });

  it("directory: \"leader-reads\" keeps the per-login leader reads for a test that wants them", async () => {
    const other = await startTestBus({ directory: "leader-reads" });
    try {
      expect(other.directories[0]).not.toBeInstanceOf(WatchedDirectory);
      await expect(other.addMember("carol")).resolves.toMatchObject({ principal: expect.stringMatching(/^U/) });
    } finally {
      await other.stop();
    }
  });
});
