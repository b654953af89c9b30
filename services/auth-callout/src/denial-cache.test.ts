import { describe, expect, it } from "vitest";
import { DenyReason } from "./handlers/authorize.js";
import { DenialCache } from "./denial-cache.js";

describe("DenialCache", () => {
  it("reuses a refusal until its TTL, then forgets it", () => {
    const c = new DenialCache({ ttlMs: 1_000 });
    c.remember("U1", DenyReason.revoked, c.generation, 0);
    expect(c.lookup("U1", 999)?.reason).toBe(DenyReason.revoked);
    expect(c.lookup("U1", 1_000)).toBeUndefined();
  });

  it("does not remember an answer read before an invalidation (an ADD that raced the directory read)", () => {
    const c = new DenialCache();
    const seen = c.generation;
    c.invalidate("U1");
    c.remember("U1", DenyReason.unknown, seen);
    expect(c.lookup("U1")).toBeUndefined();
  });

  it("reports a principal's cached refusals about once per interval, folding the rest into the count", () => {
    const c = new DenialCache({ ttlMs: 10_000, reportEveryMs: 1_000 });
    c.remember("U1", DenyReason.unknown, c.generation, 0);
    expect(c.lookup("U1", 100)?.report).toBeUndefined();
    expect(c.lookup("U1", 200)?.report).toBeUndefined();
    expect(c.lookup("U1", 1_000)?.report).toBe(2);
    expect(c.lookup("U1", 1_100)?.report).toBeUndefined();
  });

  it("limits an address only past its threshold within the window, and never a recently admitted principal", () => {
    const c = new DenialCache({ addressThreshold: 2, addressWindowMs: 1_000, admittedTtlMs: 5_000 });
    c.noteAdmitted("UOK", 0);
    c.noteRefusal("1.2.3.4", 0);
    expect(c.addressLimited("1.2.3.4", "UX", 10)).toBe(false);
    c.noteRefusal("1.2.3.4", 10);
    expect(c.addressLimited("1.2.3.4", "UX", 20)).toBe(true);
    expect(c.addressLimited("1.2.3.4", "UOK", 20)).toBe(false);
    expect(c.addressLimited("5.6.7.8", "UX", 20)).toBe(false);
    expect(c.addressLimited("1.2.3.4", "UX", 1_000)).toBe(false);
  });

  it("answers a first refusal at once, then holds each repeat longer: 50 ms doubling to the ceiling", () => {
    const c = new DenialCache({ delayInitialMs: 50, delayMaxMs: 1_000 });
    // As authorize does: the fully checked refusal strikes, then is remembered.
    expect(c.strike("U1")).toBe(0);
    c.remember("U1", DenyReason.revoked, c.generation);
    expect(Array.from({ length: 7 }, () => c.lookup("U1")?.delayMs)).toEqual([50, 100, 200, 400, 800, 1_000, 1_000]);
  });

  it("keeps the back-off past the cache entry's expiry, so a retry loop never restarts at full speed", () => {
    const c = new DenialCache({ ttlMs: 1_000, delayInitialMs: 50, delayMaxMs: 400, strikeMemoryMs: 60_000 });
    c.strike("U1", 0);
    c.remember("U1", DenyReason.revoked, c.generation, 0);
    for (let t = 1; t <= 4; t++) c.lookup("U1", t);
    expect(c.lookup("U1", 1_000)).toBeUndefined(); // entry expired: the next answer is fully checked...
    expect(c.strike("U1", 1_000)).toBe(400); // ...and still held at the ceiling
  });

  it("forgets a principal's back-off after a quiet spell and when it logs in", () => {
    const c = new DenialCache({ delayInitialMs: 50, strikeMemoryMs: 10_000 });
    c.strike("U1", 0);
    expect(c.strike("U1", 1)).toBe(50);
    expect(c.strike("U1", 10_001)).toBe(0);
    expect(c.strike("U1", 10_002)).toBe(50);
    c.noteAdmitted("U1", 10_003);
    expect(c.strike("U1", 10_004)).toBe(0);
  });

  it("stays bounded in principals whose back-off it remembers", () => {
    const c = new DenialCache({ maxEntries: 2 });
    for (const p of ["U1", "U2", "U3"]) c.strike(p);
    expect(c.strikesSize).toBe(2);
    expect(c.strike("U1")).toBe(0); // evicted: starts over
  });

  it("stays bounded in principals", () => {
    const c = new DenialCache({ maxEntries: 2 });
    for (const p of ["U1", "U2", "U3"]) c.remember(p, DenyReason.unknown, c.generation);
    expect(c.size).toBe(2);
    expect(c.lookup("U1")).toBeUndefined();
  });
});
