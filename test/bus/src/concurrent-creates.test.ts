import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnibusError } from "@unibus/contracts";
import { startTestBus } from "./bus.js";
import type { TestBus } from "./bus.js";

describe("one owner creating rooms concurrently across its own kicks", () => {
  let bus: TestBus;
  beforeAll(async () => {
    bus = await startTestBus();
  });
  afterAll(async () => {
    await bus?.stop();
  });

  it("32 in flight, 320 in all: every create succeeds exactly once", async () => {
    // Each create changes the owner's own access and kicks its connection,
    // dropping the replies of the other creates in flight; the SDK resends
    // the same signed request and the service answers with the first outcome.
    const owner = await bus.addMember("churner");
    const rounds = 10;
    const inFlight = 32;
    const failures: string[] = [];
    const ids: string[] = [];
    for (let round = 0; round < rounds; round++) {
      const results = await Promise.allSettled(
        Array.from({ length: inFlight }, (_, i) => owner.client.rooms.create(`r${round}-${i}`, { persist: false, encrypt: true })),
      );
      for (const r of results) {
        if (r.status === "fulfilled") ids.push(r.value.room.id);
        else failures.push(r.reason instanceof UnibusError ? `${r.reason.code} ${r.reason.reason}: ${r.reason.message}` : String(r.reason));
      }
    }
    expect(failures).toEqual([]);
    expect(ids).toHaveLength(rounds * inFlight);
    // Exactly once: no resend created a second room.
    expect(new Set(ids).size).toBe(rounds * inFlight);
    const listed: string[] = [];
    for await (const r of owner.client.rooms.listAll()) listed.push(r.room.id);
    expect(listed.sort()).toEqual([...ids].sort());
  }, 120_000);
});
