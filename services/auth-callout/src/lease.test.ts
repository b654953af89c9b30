import { describe, expect, it } from "vitest";
import type { FenceMark } from "@unibus/kit";
import { LeaseKeeper, leaseUsableMs } from "./store/lease.js";

/** A keeper on a fake clock whose write and fence each take `stepMs` and can be made to fail. */
function fixture(durationMs = 3_000) {
  let now = 1_000;
  const mark: FenceMark = { seqs: [7, 9], generations: [1, 1] };
  const state = { writeFails: false, fenceFails: false, holds: true, stepMs: 5, writes: 0, fences: 0, order: [] as string[], generation: 1, replaceDuringFence: false };
  const keeper = new LeaseKeeper({
    clock: () => now,
    durationMs,
    write: async () => {
      state.order.push("write");
      state.writes++;
      now += state.stepMs;
      if (state.writeFails) throw new Error("write refused");
    },
    fence: async () => {
      state.order.push("fence");
      state.fences++;
      now += state.stepMs;
      if (state.replaceDuringFence) state.generation++;
      if (state.fenceFails) throw new Error("fence refused");
      return mark;
    },
    holds: () => state.holds,
    generation: () => String(state.generation),
  });
  return {
    keeper,
    state,
    mark,
    advance: (ms: number) => {
      now += ms;
    },
    now: () => now,
  };
}

describe("the callout's login lease (fake clock)", () => {
  it("the usable part of a lease leaves 10%, at least 100 ms, for clock-rate drift", () => {
    expect(leaseUsableMs(3_000)).toBe(2_700);
    expect(leaseUsableMs(500)).toBe(400);
  });

  it("holds nothing before its first renewal; a renewal writes, then fences, then holds the fence's mark", async () => {
    const f = fixture();
    expect(f.keeper.current()).toBeUndefined();
    expect(await f.keeper.renew()).toBe(true);
    expect(f.state.order).toEqual(["write", "fence"]);
    expect(f.keeper.current()).toBe(f.mark);
  });

  it("runs out at (time before the write) + the usable duration, not counted from the fence's return", async () => {
    const f = fixture();
    const before = f.now();
    f.state.stepMs = 400;
    expect(await f.keeper.renew()).toBe(true);
    f.advance(before + leaseUsableMs(3_000) - f.now() - 1);
    expect(f.keeper.current()).toBe(f.mark);
    f.advance(1);
    expect(f.keeper.current()).toBeUndefined();
  });

  it("a renewal that takes longer than the lease holds nothing", async () => {
    const f = fixture();
    f.state.stepMs = 1_400;
    expect(await f.keeper.renew()).toBe(false);
    expect(f.keeper.current()).toBeUndefined();
  });

  it("a failed write drops a held lease at once, with no fence sent", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.state.writeFails = true;
    expect(await f.keeper.renew()).toBe(false);
    expect(f.state.fences).toBe(1);
    expect(f.keeper.current()).toBeUndefined();
    expect(f.keeper.stats).toEqual({ renewals: 1, failures: 1 });
  });

  it("a failed fence drops a held lease at once", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.state.fenceFails = true;
    expect(await f.keeper.renew()).toBe(false);
    expect(f.keeper.current()).toBeUndefined();
  });

  it("a copy that no longer holds the mark (watcher replaced, stopped or behind) drops the lease at the next look", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.state.holds = false;
    expect(f.keeper.current()).toBeUndefined();
    f.state.holds = true;
    // Dropped for good: only a new renewal (write, then fence) takes it again.
    expect(f.keeper.current()).toBeUndefined();
    expect(await f.keeper.renew()).toBe(true);
    expect(f.keeper.current()).toBe(f.mark);
  });

  it("a fence whose copy was replaced while it was out holds nothing", async () => {
    const f = fixture();
    f.state.holds = false;
    expect(await f.keeper.renew()).toBe(false);
    expect(f.keeper.current()).toBeUndefined();
  });

  it("a watcher replaced between the write and the fence's catch-up holds nothing, though the new copy caught up to the fence", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.state.replaceDuringFence = true;
    expect(await f.keeper.renew()).toBe(false);
    expect(f.keeper.current()).toBeUndefined();
  });

  it("a process paused past its lease answers nothing from memory when it resumes (the monotonic clock ran on)", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.advance(10_000);
    expect(f.keeper.current()).toBeUndefined();
  });

  it("each renewal extends the lease from its own write, and only once its fence returned", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.advance(2_000);
    const before = f.now();
    // The second renewal's fence fails after its write: the first lease
    // is dropped, not kept to its own end.
    f.state.fenceFails = true;
    await f.keeper.renew();
    expect(f.keeper.current()).toBeUndefined();
    f.state.fenceFails = false;
    await f.keeper.renew();
    // The third renewal wrote at before + 10 (the failed one took 10 ms).
    f.advance(before + 10 + leaseUsableMs(3_000) - 1 - f.now());
    expect(f.keeper.current()).toBe(f.mark);
  });

  it("drop() ends the lease at once", async () => {
    const f = fixture();
    await f.keeper.renew();
    f.keeper.drop();
    expect(f.keeper.current()).toBeUndefined();
  });
});
