import { describe, expect, it } from "vitest";
import { freeLoopbackPort } from "./ports.js";

describe("freeLoopbackPort", () => {
  it("never hands out the same port twice in one process, though each probe closes its port at once", async () => {
    const ports: number[] = [];
    for (let i = 0; i < 200; i++) ports.push(await freeLoopbackPort());
    expect(new Set(ports).size).toBe(ports.length);
    expect(ports.every((p) => p > 0 && p < 65_536)).toBe(true);
  });
});
