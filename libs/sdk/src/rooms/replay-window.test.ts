import { describe, expect, it } from "vitest";
import { ReplayWindow } from "./replay-window.js";

/** The window's rule written out plainly: a set of seen counters and the highest one. */
class Reference {
  readonly seen = new Set<number>();
  highest = -1;
  constructor(readonly size: number) {}
  fresh(first: number, count: number): boolean {
    for (let c = first; c < first + count; c++) if (c <= this.highest - this.size || this.seen.has(c)) return false;
    return true;
  }
  record(first: number, count: number): void {
    for (let c = first; c < first + count; c++) this.seen.add(c);
    this.highest = Math.max(this.highest, first + count - 1);
  }
}

describe("ReplayWindow", () => {
  it("answers like a plain set of seen counters over random frames: jumps of every size, reorders, replays", () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const size = 128;
    const w = new ReplayWindow(size);
    const ref = new Reference(size);
    let next = 5;
    const mismatches: string[] = [];
    for (let i = 0; i < 3_000; i++) {
      const pick = rand(10);
      // Forward by 1..3 windows' worth of bits (word clears, ragged ends, a full reset), back within or beyond the window, or a replay.
      const first = pick < 6 ? next + rand(pick < 3 ? 40 : 3 * size) : pick < 9 ? Math.max(0, next - rand(2 * size)) : Math.max(0, next - 1);
      const count = 1 + rand(pick === 0 ? 70 : 5);
      const fresh = w.fresh(first, count);
      if (fresh !== ref.fresh(first, count)) mismatches.push(`step ${i}: fresh(${first}, ${count})`);
      if (fresh) {
        w.record(first, count);
        ref.record(first, count);
        next = Math.max(next, first + count);
      }
      // Every counter the window can still tell apart, and a few either side, answers like the reference.
      for (let c = Math.max(0, ref.highest - size - 2); c <= ref.highest + 2; c++) if (w.fresh(c, 1) !== ref.fresh(c, 1)) mismatches.push(`step ${i}: counter ${c}`);
    }
    expect(mismatches.slice(0, 5)).toEqual([]);
  });

  it("after a jump of about a thousand counters, only the new frame's counters are seen", () => {
    const w = new ReplayWindow(8192);
    w.record(1_000_000, 3);
    w.record(1_001_037, 1);
    for (let c = 1_000_003; c < 1_001_037; c++) expect(w.fresh(c, 1)).toBe(true);
    expect(w.fresh(1_000_000, 3)).toBe(false);
    expect(w.fresh(1_001_037, 1)).toBe(false);
  });
});
