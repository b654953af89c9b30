import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestBus } from "./bus.js";
import type { TestBus } from "./bus.js";

describe("list paging under the production service permissions", () => {
  let bus: TestBus;
  beforeAll(async () => {
    bus = await startTestBus();
  });
  afterAll(async () => {
    await bus?.stop();
  });

  it("users and every room page to the end through the membership service's own grants", async () => {
    const members = await Promise.all(["p1", "p2", "p3"].map((h) => bus.addMember(h)));
    for (const m of members) await m.client.rooms.create(`room-${m.principal.slice(0, 6).toLowerCase()}`, { persist: false, encrypt: true });
    const users: string[] = [];
    for await (const u of bus.admin.users.listAll({ limit: 1 })) users.push(u.principal);
    expect(users.sort()).toEqual([bus.admin.principal, ...members.map((m) => m.principal)].sort());
    const first = await bus.admin.users.list({ limit: 1 });
    expect(first.users).toHaveLength(1);
    expect(first.next_cursor).toBeDefined();
    let rooms = 0;
    for await (const r of bus.admin.rooms.listAll({ all: true, limit: 1 })) {
      expect(r.room.id).toMatch(/^[a-z0-9]+$/);
      rooms++;
    }
    expect(rooms).toBe(3);
  });
});
