import { createServer } from "node:net";
import type { Server } from "node:net";
import { describe, expect, it } from "vitest";
import { assertPortFree, freePort, portFromEnv } from "./ports.js";

describe("ports for unibus up", () => {
  it("a busy port fails with a message naming the env var to change it", async () => {
    const server: Server = await new Promise((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => resolve(s));
    });
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    try {
      await expect(assertPortFree("127.0.0.1", port, "client", "UNIBUS_PORT")).rejects.toThrow(new RegExp(`client port ${port} .* not available[\\s\\S]*UNIBUS_PORT=<port>`));
    } finally {
      server.close();
    }
  });

  it("UNIBUS_PORT must be a port number", () => {
    expect(portFromEnv({}, "UNIBUS_PORT", 4222)).toBe(4222);
    expect(portFromEnv({ UNIBUS_PORT: "5000" }, "UNIBUS_PORT", 4222)).toBe(5000);
    expect(() => portFromEnv({ UNIBUS_PORT: "http" }, "UNIBUS_PORT", 4222)).toThrow(/UNIBUS_PORT must be a port number/);
  });

  it("the healthz port is never one of the server's ports, even when the kernel hands one out again", async () => {
    // The kernel may return a port another process picked and released a moment ago (seen in CI: healthz got the monitoring port).
    const handed = [38083, 38083, 4222, 40001];
    const pick = (): Promise<number> => Promise.resolve(handed.shift()!);
    await expect(freePort("127.0.0.1", [4222, 38083, 8080], pick)).resolves.toBe(40001);
    await expect(freePort("127.0.0.1", [4222], () => Promise.resolve(4222))).rejects.toThrow(/no free port on 127.0.0.1 outside 4222/);
    // The real kernel's choice is a port that is free now.
    const port = await freePort("127.0.0.1", [1]);
    await expect(assertPortFree("127.0.0.1", port, "healthz", "UNIBUS_HEALTHZ_PORT")).resolves.toBeUndefined();
  });
});
