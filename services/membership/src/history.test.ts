// rooms.history's access checks, on fakes of the store and the stream reader
// (pure logic; the stream read itself runs on a real server in quota.test.ts
// and test/e2e/member-jetstream.test.ts).
import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import type { HandlerContext, SignedCaller } from "@unibus/kit";
import type { MembershipDeps } from "./deps.js";
import type { RoomHistoryPage, RoomHistoryStart } from "./store/room-history.js";
import { roomHandlers } from "./handlers/rooms.js";
import type { MembershipStore } from "./store/membership-store.js";
import { unavailable } from "./store/membership-store.js";

const principal = SigningKey.generate().principal;
const caller: SignedCaller = { anonymous: false, principal, publicKey: new Uint8Array(32), role: "member" };
const ctx: HandlerContext = { subject: "unibus.v1.membership.rooms.history", logger: pino({ level: "silent" }), now: Date.now, payload: new Uint8Array(0), body: new Uint8Array(0) };
const roomId = "aaaaaaaaaaaa";
const room = (persist: boolean) => ({ value: { id: roomId, name: "r", subject: `unibus.room.${roomId}`, policy: { persist, encrypt: true }, createdBy: principal, createdAt: new Date().toISOString() }, revision: 1 });

function setup(store: Partial<MembershipStore>): { run: (req: object) => Promise<unknown>; reads: [string, RoomHistoryStart, number][] } {
  const reads: [string, RoomHistoryStart, number][] = [];
  const page: RoomHistoryPage = { messages: [], lastSeq: 0 };
  const deps = {
    store: store as MembershipStore,
    history: {
      async page(id: string, start: RoomHistoryStart, limit: number) {
        reads.push([id, start, limit]);
        return page;
      },
    },
  } as unknown as MembershipDeps;
  const spec = roomHandlers(deps).history;
  return { run: (req) => spec.handler(req as Parameters<typeof spec.handler>[0], caller, ctx), reads };
}

async function code(p: Promise<unknown>): Promise<number | undefined> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  return err instanceof UnibusError ? err.code : undefined;
}

describe("rooms.history access", () => {
  it("a store error denies with 503 and reads nothing (fail closed)", async () => {
    const { run, reads } = setup({
      memberRole: async () => {
        throw unavailable(new Error("kv down"));
      },
      getRoom: async () => room(true),
    });
    expect(await code(run({ roomId }))).toBe(ErrorCode.Unavailable);
    expect(reads).toEqual([]);
  });

  it("a caller who is not a current member is 403 and reads nothing", async () => {
    const { run, reads } = setup({ memberRole: async () => null, getRoom: async () => room(true) });
    expect(await code(run({ roomId }))).toBe(ErrorCode.Forbidden);
    expect(reads).toEqual([]);
  });

  it("a live-only room is 404 room_not_persisted", async () => {
    const { run, reads } = setup({ memberRole: async () => "member", getRoom: async () => room(false) });
    await expect(run({ roomId })).rejects.toMatchObject({ code: ErrorCode.NotFound, reason: "room_not_persisted" });
    expect(reads).toEqual([]);
  });

  it("a member reads from the start, a sequence (which wins) or a time, with the default or its own limit", async () => {
    const { run, reads } = setup({ memberRole: async () => "member", getRoom: async () => room(true) });
    await run({ roomId });
    await run({ roomId, startSeq: 7, startTime: "2026-01-01T00:00:00Z", limit: 3 });
    await run({ roomId, startTime: "2026-01-01T00:00:00Z" });
    expect(reads).toEqual([
      [roomId, { seq: 1 }, 256],
      [roomId, { seq: 7 }, 3],
      [roomId, { start_time: "2026-01-01T00:00:00.000Z" }, 256],
    ]);
  });
});
