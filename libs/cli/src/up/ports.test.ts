import { createServer } from "node:net";
import type { Server } from "node:net";
import { describe, expect, it } from "vitest";
import { assertPortFree, portFromEnv } from "./ports.js";

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
});
