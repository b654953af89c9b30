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

  it("holds each repeat's answer longer: 50 ms doubling to the ceiling", () => {
    const c = new DenialCache({ delayInitialMs: 50, delayMaxMs: 1_000 });
    c.remember("U1", DenyReason.revoked, c.generation);
    expect(Array.from({ length: 7 }, () => c.lookup("U1")?.delayMs)).toEqual([50, 100, 200, 400, 800, 1_000, 1_000]);
  });

  it("stays bounded in principals", () => {
    const c = new DenialCache({ maxEntries: 2 });
    for (const p of ["U1", "U2", "U3"]) c.remember(p, DenyReason.unknown, c.generation);
    expect(c.size).toBe(2);
    expect(c.lookup("U1")).toBeUndefined();
  });
});
