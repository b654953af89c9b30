import { describe, expect, it } from "vitest";
import { ReconnectBackoff } from "./reconnect-backoff.js";

describe("ReconnectBackoff", () => {
  it("reconnects fast (base + jitter) while nothing was refused", () => {
    const lo = new ReconnectBackoff({}, () => 0);
    const hi = new ReconnectBackoff({}, () => 0.999999);
    expect(lo.delayMs()).toBe(100);
    expect(hi.delayMs()).toBe(350);
  });

  it("doubles after each refusal in a row, between half and all of the ceiling, up to 15 s", () => {
    const seen: [number, number][] = [];
    const lo = new ReconnectBackoff({}, () => 0);
    const hi = new ReconnectBackoff({}, () => 0.999999);
    for (let i = 0; i < 10; i++) {
      lo.refused();
      hi.refused();
      seen.push([lo.delayMs(), hi.delayMs()]);
    }
    expect(seen.slice(0, 4)).toEqual([
      [125, 249],
      [250, 499],
      [500, 999],
      [1000, 1999],
    ]);
    expect(seen[9]).toEqual([7500, 14999]);
  });

  it("a successful connect resets to fast reconnects", () => {
    const b = new ReconnectBackoff({}, () => 0);
    for (let i = 0; i < 5; i++) b.refused();
    b.connected();
    expect(b.refusals).toBe(0);
    expect(b.delayMs()).toBe(100);
  });

  it("the same refusal count always gives a delay in the same band (nats.js asks on every dial-loop pass)", () => {
    const b = new ReconnectBackoff();
    b.refused();
    b.refused();
    for (let i = 0; i < 100; i++) {
      const d = b.delayMs();
      expect(d).toBeGreaterThanOrEqual(250);
      expect(d).toBeLessThan(500);
    }
  });
});
