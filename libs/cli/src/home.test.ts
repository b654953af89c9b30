import { describe, expect, it } from "vitest";
import { parseEnvFile, renderEnvFile, resolveHome } from "./home.js";

describe("state dir and env file", () => {
  it("the state dir is UNIBUS_HOME, else ./.unibus", () => {
    expect(resolveHome({}, "/work/x").root).toBe("/work/x/.unibus");
    expect(resolveHome({ UNIBUS_HOME: "state" }, "/work/x").root).toBe("/work/x/state");
    expect(resolveHome({ UNIBUS_HOME: "/abs" }, "/work/x").envFile).toBe("/abs/env");
  });

  it("the env file round-trips KEY=VALUE lines and skips comments", () => {
    const text = renderEnvFile({ UNIBUS_URL: "nats://127.0.0.1:4222", UNIBUS_IDENTITY: "/a/admin.id" });
    expect(text.startsWith("#")).toBe(true);
    expect(parseEnvFile(text)).toEqual({ UNIBUS_URL: "nats://127.0.0.1:4222", UNIBUS_IDENTITY: "/a/admin.id" });
    expect(parseEnvFile("\n# c\nA=b=c\nnoequals\n")).toEqual({ A: "b=c" });
  });
});
