import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import { writeIdentityFile } from "@unibus/crypto";
import { recordingIo } from "@unibus/cli/test-io";
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

  it("unibus users list prints every user across pages, each once", async () => {
    const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const users = bus.membership.store.buckets.users;
    const addedAt = new Date().toISOString();
    const seeded: string[] = [];
    // More than two default pages (500), seeded straight into the bucket.
    await Promise.all(
      Array.from({ length: 1_100 }, (_, i) => {
        const principal = `U${[...randomBytes(55)].map((b) => B32[b % 32]).join("")}`;
        seeded.push(principal);
        return users.put(principal, JSON.stringify({ principal, handle: `cli${i}`, role: "member", status: "active", addedAt, addedBy: bus.admin.principal }));
      }),
    );
    const dir = await mkdtemp(join(tmpdir(), "unibus-paging-"));
    try {
      const idPath = join(dir, "admin.id");
      await writeIdentityFile(idPath, bus.adminIdentity);
      const io = recordingIo({ env: { UNIBUS_URL: bus.url, UNIBUS_IDENTITY: idPath }, cwd: dir });
      expect(await runCli(["users", "list", "--json"], io), io.all()).toBe(ExitCode.ok);
      const listed = (JSON.parse(io.stdout.join("\n")) as Array<{ principal: string }>).map((u) => u.principal);
      expect(new Set(listed).size).toBe(listed.length);
      for (const p of seeded) expect(listed).toContain(p);
      const table = recordingIo({ env: { UNIBUS_URL: bus.url, UNIBUS_IDENTITY: idPath }, cwd: dir });
      expect(await runCli(["users", "list"], table), table.all()).toBe(ExitCode.ok);
      const lines = table.stdout.join("\n").split("\n");
      expect(lines.filter((l) => l.startsWith("PRINCIPAL"))).toHaveLength(1);
      expect(lines.length - 1).toBe(listed.length);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
