import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Tarpit } from "./tarpit.js";

describe("Tarpit", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends an answer without a delay at once, and a delayed one only when its delay has passed", () => {
    const t = new Tarpit();
    const sent: string[] = [];
    expect(t.hold(0, () => sent.push("prompt"))).toBe(false);
    expect(sent).toEqual(["prompt"]);
    expect(t.hold(200, () => sent.push("held"))).toBe(true);
    vi.advanceTimersByTime(199);
    expect(sent).toEqual(["prompt"]);
    expect(t.held).toBe(1);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual(["prompt", "held"]);
    expect(t.held).toBe(0);
  });

  it("holds at most its bound; past it answers go out at once instead of piling up", () => {
    const t = new Tarpit(3);
    const sent: number[] = [];
    for (let i = 0; i < 5; i++) t.hold(1_000, () => sent.push(i));
    expect(t.held).toBe(3);
    expect(sent).toEqual([3, 4]);
    vi.advanceTimersByTime(1_000);
    expect(sent).toEqual([3, 4, 0, 1, 2]);
    expect(t.held).toBe(0);
  });

  it("flush sends every held answer now and leaves no timer behind", () => {
    const t = new Tarpit();
    const sent: number[] = [];
    for (let i = 0; i < 3; i++) t.hold(1_000, () => sent.push(i));
    t.flush();
    expect(sent).toEqual([0, 1, 2]);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(2_000);
    expect(sent).toEqual([0, 1, 2]);
  });
});
