import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnibusError } from "@unibus/contracts";
import { eventually } from "@unibus/testing";
import { startTestBus } from "./bus.js";
import type { TestBus } from "./bus.js";

/** Resolves at the client's next disconnect. */
function nextDisconnect(bus: TestBus): Promise<void> {
  return new Promise((resolve) => {
    void (async () => {
      for await (const s of bus.admin.nc.status()) {
        if (s.type === "disconnect") return resolve();
      }
    })();
  });
}

describe("requests in flight when a kick drops the connection", () => {
  let bus: TestBus;
  beforeAll(async () => {
    bus = await startTestBus();
  });
  afterAll(async () => {
    await bus?.stop();
  });

  it("a read in flight is answered after the reconnect, well before the request timeout", async () => {
    // Creating a room changes the admin's own access: the membership service
    // kicks it 250 ms after replying. Reads keep flowing across that kick.
    const kicked = nextDisconnect(bus);
    await bus.admin.rooms.create("kick-read", { persist: false, encrypt: true });
    const started = performance.now();
    let reads = 0;
    let done = false;
    void kicked.then(() => (done = true));
    while (!done && performance.now() - started < 5_000) {
      await bus.admin.users.list();
      reads++;
    }
    expect(done).toBe(true);
    // The read that was in flight at the disconnect (if any) was resent, not lost.
    const t0 = performance.now();
    const after = await bus.admin.users.list();
    expect(after.users.length).toBeGreaterThan(0);
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(reads).toBeGreaterThan(0);
  });

  it("a mutation in flight at the kick is resent and answered once, never a silent 5 s hang", async () => {
    const kicked = nextDisconnect(bus);
    await bus.admin.rooms.create("kick-write", { persist: false, encrypt: true });
    // Fire mutations until one is in flight at the disconnect.
    const outcomes: Array<{ ms: number; reason?: string; id?: string }> = [];
    let done = false;
    void kicked.then(() => (done = true));
    const started = performance.now();
    while (!done && performance.now() - started < 5_000) {
      const t0 = performance.now();
      try {
        const created = await bus.admin.rooms.create(`w${outcomes.length}`, { persist: false, encrypt: true });
        outcomes.push({ ms: performance.now() - t0, id: created.room.id });
      } catch (err) {
        outcomes.push({ ms: performance.now() - t0, reason: err instanceof UnibusError ? err.reason : String(err) });
      }
    }
    expect(done).toBe(true);
    // The SDK resends the same signed request after the reconnect; the
    // service answers the repeat with the first outcome.
    expect(outcomes.filter((o) => o.reason !== undefined)).toEqual([]);
    for (const o of outcomes) expect(o.ms).toBeLessThan(2_000);
    const names: string[] = [];
    for await (const r of bus.admin.rooms.listAll()) if (/^w\d+$/.test(r.room.name)) names.push(r.room.name);
    expect(names.length).toBe(outcomes.length);
  });

  it("rapid changes to one principal's access never strand its client (no kick mid-handshake)", async () => {
    // Each create and leave changes the admin's own access and kicks it; the
    // kicks overlap its reconnects. Before the fix a reconnect kicked during
    // its handshake left nats.js waiting out its 20 s connect timeout.
    for (let round = 0; round < 4; round++) {
      const created = await Promise.all([0, 1].map((i) => bus.admin.rooms.create(`storm-${round}-${i}`, { persist: false, encrypt: true }).catch(() => undefined)));
      // 0–3 requests between create and leave (work, not a pause): each round's
      // leaves land at a different point of the creates' kicks and reconnects.
      for (let i = 0; i < round; i++) await bus.admin.users.list().catch(() => undefined);
      for (const c of created) if (c !== undefined) await bus.admin.rooms.leave(c.room.id).catch(() => undefined);
    }
    // Eight requests spread over about two seconds: a kick that lands after
    // the storm and strands a reconnect shows as one slow request.
    const took: number[] = [];
    await eventually(
      async () => {
        const t0 = performance.now();
        await bus.admin.users.list();
        took.push(performance.now() - t0);
        return took.length;
      },
      (n) => n >= 8,
      { timeoutMs: 60_000, intervalMs: 250, what: "eight timed requests" },
    );
    for (const ms of took) expect(ms).toBeLessThan(3_000);
  });
});
