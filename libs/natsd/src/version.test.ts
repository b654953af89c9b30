import { describe, expect, it } from "vitest";
import { isAtLeast, parseNatsServerVersion } from "./version.js";

describe("parseNatsServerVersion", () => {
  it("reads the version from `nats-server --version` output", () => {
    expect(parseNatsServerVersion("nats-server: v2.10.27\n")).toBe("2.10.27");
  });
  it("reads a version without the v prefix or with a pre-release suffix", () => {
    expect(parseNatsServerVersion("nats-server 2.11.0-RC.1")).toBe("2.11.0");
  });
  it("returns undefined for output without a version", () => {
    expect(parseNatsServerVersion("command not found")).toBeUndefined();
  });
});

describe("isAtLeast", () => {
  it("compares minor versions numerically, so 2.9.10 is older than 2.10.0", () => {
    expect(isAtLeast("2.9.10", "2.10.0")).toBe(false);
    expect(isAtLeast("2.10.0", "2.10.0")).toBe(true);
    expect(isAtLeast("2.10.27", "2.10.0")).toBe(true);
    expect(isAtLeast("3.0.0", "2.10.0")).toBe(true);
    expect(isAtLeast("1.99.99", "2.10.0")).toBe(false);
  });
  it("treats missing components as zero", () => {
    expect(isAtLeast("2.10", "2.10.0")).toBe(true);
  });
  it("rejects a string that is not a version", () => {
    expect(() => isAtLeast("banana", "2.10.0")).toThrow(TypeError);
  });
});
